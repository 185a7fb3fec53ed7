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


# Each number we attribute to a seed, with its label: (our file, our text, seed, the seed's lines it rests on, what it
# means, the numbers in our text that are ours: derived, not the seed's). Every other number of our text must be in
# those lines, so a figure cannot drift to another setting's label; the label words are in our text beside it.
T1 = "Table 1: Mean and standard deviation of FID calculated 5 times on the same instance of the model"
T2 = "Table 2: Training Configurations"
ATTRIBUTIONS = [
    ("docs/results.md", "| seed paper, Table 2's best (linear, T = 1000) | 12.5 | DDPM, all T steps | 0.2 | 16.19 |  "
     "| 9.56 (the paper's own MNIST CNN) |", "003",
     [T2, "100K\t1000\tlinear\t0.2\t<b>16.19</b>\t<b>9.56</b>", "a custom CNN classifier pre-trained on MNIST images "
      "was used instead of Inception-V3"], "Table 2's best: linear, T = 1000, ω = 0.2, FID 16.19, IS of its own CNN",
     [12.5]),  # training units: 100k × 32 / 256k
    ("docs/results.md", "| seed paper, Table 1 (the same model, FID computed 5 times) | 12.5 | DDPM, all T steps | 0.2 "
     "| 16.04 ± 0.11 |", "003", [T1, "<b>16.04 <math>\\pm</math> 0.11</b>", "100K\t1000\tlinear\t0.2\t16.19"],
     "Table 1: one model's FID, 5 times", [12.5]),
    ("docs/seeds.md", "| 2 | linear, T = 1000, ω = 0.2 | **16.19** (its best) |", "003",
     [T2, "100K\t1000\tlinear\t0.2\t<b>16.19</b>", "best performance with 1000 timesteps, a guidance weight of 0.2 "
      "and using a linear scheduler"], "Table 2's best", []),
    ("docs/seeds.md", "| 2 | cosine, T = 1000, ω = 0.2 | 26.82 (its worst) |", "003",
     [T2, "100K\t1000\tcosine\t0.2\t26.82\t9.00", "100K\t4000\tlinear\t0.2\t20.91", "100K\t4000\tcosine\t0.2\t21.70"],
     "Table 2's worst FID of the four", []),
    ("docs/seeds.md", "| 1 | one model, FID over repeated sampling | 16.04 ± 0.11 (5 repeats) |", "003",
     [T1, "<b>16.04 <math>\\pm</math> 0.11</b>"], "Table 1", []),
    ("conf/experiment/seed003.yaml", "its IS comes from\n#               its own small MNIST CNN (two convolution and "
     "pooling layers, one linear), not from Inception-v3", "003",
     ["consisting of two pooling and convolution layers as well as one linear", "instead of Inception-V3"],
     "which network its IS comes from", []),
    ("conf/experiment/seed003.yaml", "L1 loss on ε, batches of 32 images, 100K iterations", "003",
     ["batches of 32 images", "100K\t1000\tlinear\t0.2"], "its training", []),
    ("conf/experiment/seed004.yaml", '"a photo of\n#               the digit 0", "a blurry image of the digit 0", '
     '"a clear handwritten 0"', "004", ['"a photo of the digit 0"', '"a blurry image of the digit 0" or "a clear '
                                       'handwritten 0"'], "the report's three CLIP prompts, with numerals", []),
    ("conf/experiment/seed004.yaml", "w ∈ {0, 1, 3, 5, 7}", "004", ["$w \\in \\{0, 1, 3, 5, 7\\}$"],
     "its guidance sweep, in its w = 1 + ω", []),
    ("conf/experiment/seed004.yaml", "w = 3 in ε_u + w(ε_c − ε_u)", "004", ["guidance scale w=3.0"],
     "its sampling guidance", []),
    ("conf/experiment/seed004.yaml", "T = 100 against 1000", "004", ["Sampling with T = 100 (vs 1000)"],
     "its step-count comparison", []),
    ("conf/experiment/seed004.yaml", "p_uncond = 0.1", "004", ["With probability p_uncond = 0.1"], "its label dropout",
     []),
    ("diffusion/clip_eval.py", '(the seed report\'s "70.6% photo vs 28.6% blurry")', "004",
     ['approximately 70.6% similarity to "photo-like" descriptions versus only 28.6% for "blurry"'],
     "digit 0's CLIP shares", []),
    ("tests/test_model.py", "time embedding ~132K (128 → 512 → 128: exactly ours), encoder ~290K,\n    # bottleneck "
     "~530K, total ~1.2M", "001", ["Total parameters: ~1.2M", "Time embedding: ~132K parameters",
                                  "Encoder: ~290K parameters", "Bottleneck: ~530K parameters", "[32, 64, 128]"],
     "the page's rounded parameter counts", [512]),  # our time MLP's hidden width
]


@pytest.mark.parametrize("ours,quote,seed,lines,meaning,derived", ATTRIBUTIONS,
                         ids=[f"{a[0]}:{a[4]}" for a in ATTRIBUTIONS])
def test_each_attributed_number_rests_on_the_seed_lines_that_give_it_that_meaning(ours, quote, seed, lines, meaning,
                                                                                  derived):
    mine, text = (ROOT / ours).read_text(), seed_text(seed)
    assert quote in mine, f"{ours} no longer says: {quote!r}"
    for line in lines:
        assert line in text, f"seed {seed} has no line {line!r}"
    figures = [v for v in numbers(IDENTIFIER.sub(" ", quote)) if v not in derived]
    assert missing(figures, "\n".join(lines)) == [], (meaning, figures)
