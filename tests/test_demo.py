"""The web demo driven in a real headless Chromium (Debian's package), through Playwright's Python API."""

import shutil

import pytest

from conftest import demo_server

pytestmark = pytest.mark.slow  # end-to-end through the real entry points: `make test`, not `make test-fast`

pytest.importorskip("gradio", reason="demo extra not installed (pip install '.[demo]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install '.[demo]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no Chromium on this machine (`apt-get install chromium`; make test does this as root)",
                allow_module_level=True)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def app_url(tiny_ckpt, tmp_path_factory):
    with demo_server(tiny_ckpt, tmp_path_factory.mktemp("demo")) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app_url)
        page.wait_for_selector("#generate", timeout=60_000)
        yield page
        browser.close()


STATUS = "#status [data-testid='markdown']"
DONE = """([sel, old]) => { const e = document.querySelector(sel);
    const busy = document.querySelector("#status [data-testid='status-tracker']:not(.hide)");
    return e && !busy && e.innerText.trim() && e.innerText !== old; }"""


def request(page, prompt: str, steps: int = 5, n: int = 2) -> str:
    """Fill the form, press Generate, return the status message once the request has finished."""
    before = page.inner_text(STATUS) if page.query_selector(STATUS) else ""
    page.fill("#prompt textarea", prompt)
    page.fill("#steps input", str(steps))
    page.fill("#n input", str(n))
    page.click("#generate")
    page.wait_for_function(DONE, arg=[STATUS, before], timeout=60_000)
    return page.inner_text(STATUS)


def test_page_names_the_checkpoint(page, tiny_ckpt):
    assert "Loaded" in page.inner_text("#ckpt-info") and "mnist" in page.inner_text("#ckpt-info")


def test_requesting_a_class_returns_images_of_the_right_size(page):
    status = request(page, "seven", n=3)
    assert "Generated 3 × seven" in status
    page.wait_for_function("n => { const imgs = [...document.querySelectorAll('#gallery img')];"
                           " return imgs.length >= n && imgs.every(e => e.complete && e.naturalWidth > 0); }",
                           arg=3, timeout=30_000)  # decoded, not merely inserted
    sizes = page.eval_on_selector_all("#gallery img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert len(sizes) >= 3 and all(s == [128, 128] for s in sizes)
    page.wait_for_selector("#progression img", timeout=30_000)


def test_bad_input_shows_a_message_and_the_server_keeps_serving(page):
    assert "unknown prompt 'banana'" in request(page, "banana")
    assert "steps must be an integer between 1 and the model's timesteps (100)" in request(page, "3", steps=5000)
    assert "number of images must be between 1 and 16" in request(page, "3", n=500)
    assert "Generated 1 × three" in request(page, "three", n=1)
