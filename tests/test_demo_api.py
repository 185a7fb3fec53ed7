"""The demo's HTTP API as a hostile visitor uses it: uploads and unlisted paths never reach the loader, a planted file
runs nothing, requests leave no files, and the server keeps serving. No browser needed."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, demo_server
from test_safety import hostile_files

pytestmark = pytest.mark.slow  # end-to-end through the real entry points: `make test`, not `make test-fast`

pytest.importorskip("gradio", reason="demo extra not installed (pip install '.[demo]')")
gradio_client = pytest.importorskip("gradio_client")


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def server(tiny_ckpt, tmp_path_factory):
    """The demo started in a folder whose outputs/ holds a planted malicious last.ckpt; its temp dirs are private."""
    work = tmp_path_factory.mktemp("demo_api")
    evil_dir = work / "evil"
    evil_dir.mkdir()
    evil = hostile_files(evil_dir, tiny_ckpt)["torch_pickle.ckpt"][0]
    planted = work / "outputs" / "planted" / "checkpoints" / "last.ckpt"
    planted.parent.mkdir(parents=True)
    shutil.copy(evil, planted)
    tmp, cache = work / "tmp", work / "gradio"
    tmp.mkdir()
    cache.mkdir()
    env = {"TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(cache)}
    with demo_server(tiny_ckpt, work, cwd=work, env=env) as url:
        yield {"url": url, "client": gradio_client.Client(url, verbose=False), "work": work,
               "marker": evil_dir / "PWNED", "tmp": tmp, "cache": cache,
               "planted": "outputs/planted/checkpoints/last.ckpt", "pinned": str(tiny_ckpt)}


def generate(server, path: str, prompt: str = "seven", n: int = 2) -> tuple[str, str, str]:
    return server["client"].predict(path, "zero", prompt, 0.0, "ddim", 5, 0, n, api_name="/generate")


def test_a_listed_model_generates_and_leaves_no_files(server):
    before = files_under(server["tmp"]) | files_under(server["cache"])
    gallery, progression, status = generate(server, server["pinned"])
    assert "Generated 2 × **seven**" in status
    assert gallery.count("<img src=\"data:image/png;base64,") == 2 and "data:image/gif;base64," in progression
    assert files_under(server["tmp"]) | files_under(server["cache"]) == before


def test_the_listing_is_the_pinned_model_then_the_runs_found_then_the_shipped_ones(server, tmp_path):
    from diffusion.demo import list_models, shipped_entries

    found = list_models(server["pinned"], roots=(str(server["work"] / "outputs"),))
    shipped = shipped_entries()  # listed last: the runs come first
    assert found[0] == server["pinned"] and found[len(found) - len(shipped):] == shipped
    assert found[len(found) - len(shipped) - 1] == str(server["work"] / server["planted"])
    new = server["work"] / "outputs" / "new-run" / "checkpoints" / "last.ckpt"
    new.parent.mkdir(parents=True)
    shutil.copy(server["pinned"], new)
    with pytest.raises(Exception, match="not in the list of choices"):
        generate(server, "outputs/new-run/checkpoints/last.ckpt")  # not listed until Refresh
    server["client"].predict(server["pinned"], api_name="/refresh")
    assert "Generated 1 × **three**" in generate(server, "outputs/new-run/checkpoints/last.ckpt", "three", 1)[2]


def test_a_planted_malicious_file_gets_one_line_and_runs_nothing(server):
    _, _, status = generate(server, server["planted"])
    assert status == (f"**Error:** {server['planted']} is not a diffusion checkpoint "
                      "(it asks to import posix.system, which could run code; refused)")
    assert not server["marker"].exists()


def test_an_uploaded_file_never_reaches_the_loader(server):
    import httpx

    evil = server["work"] / "evil" / "pickle.ckpt"
    with open(evil, "rb") as f:
        r = httpx.post(server["url"] + "gradio_api/upload", files={"files": ("x.ckpt", f)}, timeout=30)
    assert r.status_code == 200
    uploaded = r.json()[0]
    assert Path(uploaded).is_file()  # Gradio stored it and told us where ...
    with pytest.raises(Exception, match="not in the list of choices"):
        generate(server, uploaded)  # ... but the loader only takes what the page lists
    for path in ("/etc/passwd", str(evil), "../" + server["planted"]):
        with pytest.raises(Exception, match="not in the list of choices"):
            generate(server, path)
    assert not server["marker"].exists()
    assert "Generated 1 × **three**" in generate(server, server["pinned"], "three", 1)[2]  # still serving


def test_bad_values_are_status_messages(server):
    def status(steps: int, seed: int) -> str:
        return server["client"].predict(server["pinned"], "zero", "3", 0.0, "ddim", steps, seed, 1,
                                        api_name="/generate")[2]

    assert "steps must be an integer between 1 and the model's timesteps (100), got 5000" in status(5000, 0)
    assert "seed must be an integer in [0, 2^64 - 1], got -1" in status(5, -1)


def test_binding_beyond_loopback_needs_allow_remote(tmp_path):
    r = subprocess.run([sys.executable, "-m", "diffusion.demo", "host=0.0.0.0", f"hydra.run.dir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "error: host=0.0.0.0 would expose the demo beyond this machine, without a login; "
        "add allow_remote=true to do that on purpose"]


def test_the_model_s_own_sampler_is_preselected_and_an_empty_steps_box_keeps_its_steps(server):
    """The pinned run trained with DDIM, 5 steps (debug=fast): "model's own" samples with exactly that."""
    out = server["client"].predict(server["pinned"], "zero", "", 0.0, "model's own", None, 0, 1, api_name="/generate")
    assert "(ddim (the model's own), 5 steps, ω=0" in out[2], out[2]
