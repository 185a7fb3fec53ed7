"""Every number the seed presets' comments and diffusion.report attribute to a seed occurs in that seed's text
(`../shared/seeds/`, or $DIFFUSION_SEEDS; skipped where the texts are not at hand)."""

import math
import os
import re
from pathlib import Path

import pytest

from conftest import ROOT

SEEDS_DIR = Path(os.environ.get("DIFFUSION_SEEDS", ROOT.parent / "shared" / "seeds"))
NUMBER = re.compile(r"(\d+(?:,\d{3})*(?:\.\d+)?)(?:\s*(?:\\times|×)\s*10\^\{?([-−]?\d+)\}?|e([-−]?\d+)|(K)\b)?")
IDENTIFIER = re.compile(r"\b[A-Za-z_][\w.=/+-]*\d[\w./+-]*")  # seed000, model=seed004, Inception-v3: not figures


def numbers(text: str) -> list[float]:
    """The figures in a text: 2,447,681 → 2447681, 5\\times10^{-5} → 5e-5, 1e-4, 100K → 100000; "10.000" (the
    paper's thousands) also as 10000."""
    found = [float(m.replace(".", "")) for m in re.findall(r"(?<![\d.])\d{1,3}\.\d{3}(?![\d.])", text)]
    for digits, power, exponent, thousand in NUMBER.findall(text):
        value = float(digits.replace(",", ""))
        shift = power or exponent
        found.append(value * 10 ** int(shift.replace("−", "-")) if shift else value * (1000 if thousand else 1))
    return found


def seed_text(seed: str) -> str:
    """The write-up of `seed` ('000' … '004')."""
    if not SEEDS_DIR.is_dir():
        pytest.skip(f"the seed texts are not here ({SEEDS_DIR}; set DIFFUSION_SEEDS to their folder)")
    (path,) = SEEDS_DIR.glob(f"{seed}_*.txt")
    return path.read_text()


def attributed(yaml_text: str) -> str:
    """The comment lines of a preset that state what the seed's text says: all but the paragraphs that open with
    "Left open", "Not stated" or "Derived" (our choices and what follows from the text, up to a "Published"
    paragraph) and the command lines."""
    keep, stated = [], True
    for line in yaml_text.splitlines():
        if not line.startswith("#") or line.startswith("# @package"):
            continue
        body = line.lstrip("# ")
        if body.startswith(("Left open", "Not stated", "Derived")):
            stated = False
        elif body.startswith("Published"):
            stated = True
        if stated and not body.startswith("python "):
            keep.append(re.sub(r"\(python [^)]*\)", " ", body))
    return "\n".join(keep)


def claimed(yaml_text: str) -> list[float]:
    """The figures a preset attributes to its seed (identifiers such as seed000 or Inception-v3 are not figures)."""
    return numbers(IDENTIFIER.sub(" ", attributed(yaml_text)))


def missing(claimed: list[float], text: str) -> list[float]:
    """The claimed figures that the text does not contain."""
    have = numbers(text)
    return [v for v in claimed if not any(math.isclose(v, h, rel_tol=1e-9) for h in have)]


@pytest.mark.parametrize("seed", ["000", "001", "002", "003", "004"])
@pytest.mark.parametrize("group", ["experiment", "model"])
def test_each_figure_a_seed_preset_attributes_to_its_seed_is_in_the_seeds_text(seed, group):
    text, preset = seed_text(seed), (ROOT / "conf" / group / f"seed{seed}.yaml").read_text()
    assert claimed(preset), attributed(preset)  # the preset does state figures
    assert missing(claimed(preset), text) == [], attributed(preset)


def test_the_papers_figures_in_the_report_are_in_the_paper():
    from diffusion.published import PAPER_BATCH, PAPER_ITERATIONS, PAPER_REPEATS, PAPER_TABLES

    text = seed_text("003")
    figures = [v for fid_is in PAPER_TABLES.values() for v in fid_is] + list(PAPER_REPEATS)
    settings = [v for key in PAPER_TABLES for v in key[1:]]
    assert missing([*figures, *settings, PAPER_BATCH, PAPER_ITERATIONS], text) == []


def test_the_number_reader_reads_the_texts_notations():
    assert numbers("lr 5\\times10^{-5}, 2,447,681 params, 1e-4, 100K iterations, 16.04 ± 0.11") == [
        5e-5, 2447681, 1e-4, 100_000, 16.04, 0.11]
    assert claimed("# model=seed000 on Inception-v3\n# Left open: 7 and 8\n# Published: 16.19") == [16.19]
    assert numbers("generating 50.000 images") == [50_000, 50.0]
    assert missing([6141313, 7], "Model parameters: 6,141,313") == [7]
