"""The analyses' arithmetic on hand-made inputs, then `sample.py mode=recognition` on a session checkpoint."""

import csv
import math

import pytest
import torch

from diffusion.analysis import chance_t, last_t_above, noise_classes, recognised_at, reverse_recognition


def test_recognised_at_is_the_first_step_from_which_the_class_is_kept():
    labels = torch.tensor([3, 3, 5, 5])
    predictions = torch.tensor([  # (steps, paths)
        [1, 3, 5, 2],
        [3, 3, 2, 5],
        [3, 2, 5, 5],
        [3, 3, 5, 4],  # the last image of path 3 is not a five: never recognised
    ])
    assert recognised_at(predictions, labels).tolist() == [1, 3, 2, -1]


def test_reverse_recognition_curves_and_medians():
    labels = torch.tensor([0, 0, 1])
    predictions = torch.tensor([[1, 1, 1], [0, 1, 1], [0, 0, 1]])
    out = reverse_recognition(predictions, labels, times=[900, 500, 0], k=2)
    assert out["curve"][:, 0].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])  # overall, per step
    assert out["curve"][:, 1].tolist() == pytest.approx([0, 0.5, 1])  # class 0
    assert out["per_class"][0] == {"recognised": 1.0, "median_t": 500.0, "median_step": 1.0}  # lower median of 500, 0
    assert out["per_class"][1]["median_t"] == 900.0
    unmeasured = reverse_recognition(predictions, labels, [900, 500, 0], 2, unmeasurable=[1])["per_class"][1]
    assert all(math.isnan(v) for v in unmeasured.values())


def test_chance_noise_class_and_last_t_above_half():
    ts, acc = [0, 100, 200, 300], [0.99, 0.5, 0.12, 0.1]
    assert chance_t(ts, acc, k=10) == 200 and chance_t(ts, [0.9] * 4, k=10) is None
    assert last_t_above(ts, acc) == 100 and last_t_above(ts, [0.1] * 4) is None
    forward = torch.tensor([[0.9, 1.0, 1.0, 0.7], [0.1, 0.0, 1.0, 0.0]])  # (t, overall + 3 classes)
    assert noise_classes(forward) == [1]  # pure noise is labelled class 1


@pytest.mark.slow
def test_recognition_mode_writes_csvs_and_plot(tiny_ckpt, tmp_path):
    from conftest import run_main
    from PIL import Image

    r = run_main("sample.py", f"ckpt_path={tiny_ckpt}", "mode=recognition", "num_samples=50", "n_per_class=2",
                 "sampler.steps=5", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "recognition.csv").read_text().splitlines()))
    forward = [row for row in rows if row["process"] == "forward"]
    assert len(forward) == 41 and int(forward[0]["t"]) == 0 and int(forward[-1]["t"]) == 99  # T = 100
    assert float(forward[0]["accuracy"]) > 0.9  # clean test images: the evaluator's own accuracy
    assert len([row for row in rows if row["process"] == "reverse"]) == 5  # one row per sampler step
    classes = list(csv.DictReader((tmp_path / "recognition_classes.csv").read_text().splitlines()))
    assert [c["class"] for c in classes] == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                             "nine"]
    assert Image.open(tmp_path / "recognition.png").width > 600
    assert "forward: accuracy" in r.stdout
