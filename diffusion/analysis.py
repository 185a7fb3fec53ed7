"""Analyses of a trained model that the seed write-ups show: when noise hides a class, and when sampling reveals it.

`python sample.py mode=recognition` runs both halves and writes recognition.csv, recognition_classes.csv and
recognition.png (diffusion.modes.mode_recognition); the functions here only compute.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffusion.classifier import ImageClassifier
from diffusion.datasets import DataSpec
from diffusion.evaluation import classify, evaluator_view
from diffusion.images import to_uint8
from diffusion.samplers import per_sample_randn, sample_generators


def predict(net: ImageClassifier, x: Tensor, spec: DataSpec) -> Tensor:
    """Evaluator's class for images in [-1, 1] with the model's border (any device): (N,) int64 on the CPU."""
    pixels = evaluator_view(to_uint8(x).cpu(), spec, net.image_size)
    return classify(net, pixels)[1].argmax(1)


def forward_recognition(schedule: Any, net: ImageClassifier, x0: Tensor, labels: Tensor, spec: DataSpec,
                        ts: Sequence[int], seed: int = 0) -> Tensor:
    """Evaluator accuracy on q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I) (Ho et al. 2020, eq. 4) for each t in ts:
    (len(ts), k + 1), overall accuracy then one column per class. Image i's noise is seeded by (seed, i)."""
    k = len(spec.classes)
    noise = per_sample_randn(sample_generators(seed, range(len(x0))), tuple(x0.shape[1:]), x0.device)
    rows = []
    for t in ts:
        xt = schedule.q_sample(x0, torch.full((len(x0),), int(t), dtype=torch.long, device=x0.device), noise)
        hit = (predict(net, xt, spec) == labels).float()
        rows.append([hit.mean().item(), *[hit[labels == c].mean().item() for c in range(k)]])
    return torch.tensor(rows)


def recognised_at(predictions: Tensor, labels: Tensor) -> Tensor:
    """(steps, N) classes along each reverse path -> (N,) first step from which the class is the requested one and
    stays so to the end; -1 where the final image is not of the requested class."""
    correct = predictions == labels[None]
    # Suffix "all correct": cumulative product from the last step backwards.
    kept = correct.flip(0).long().cumprod(0).flip(0).bool()
    first = torch.where(kept.any(0), kept.long().argmax(0), torch.full_like(labels, -1))
    return first


def noise_classes(forward: Tensor) -> list[int]:
    """Classes the evaluator gives to pure noise: those still "recognised" in ≥ half of their images at the largest t
    (their recognition step cannot be measured: noise already carries their label)."""
    return [c for c, a in enumerate(forward[-1, 1:].tolist()) if a >= 0.5]


def reverse_recognition(predictions: Tensor, labels: Tensor, times: Sequence[int], k: int,
                        unmeasurable: Sequence[int] = ()) -> dict[str, Any]:
    """Per-step fraction of paths classified as requested ((steps, k + 1): overall, then per class), and per class the
    median t at which paths become and stay recognisable, and the fraction that ever do (NaN for `unmeasurable`
    classes, see noise_classes)."""
    correct = (predictions == labels[None]).float()
    curve = torch.stack([correct.mean(1), *[correct[:, labels == c].mean(1) for c in range(k)]], dim=1)
    first = recognised_at(predictions, labels)
    t_of = torch.tensor([float(t) for t in times])
    per_class = []
    for c in range(k):
        f = first[labels == c]
        ok = f[f >= 0]
        if c in unmeasurable:
            per_class.append({"recognised": math.nan, "median_t": math.nan, "median_step": math.nan})
            continue
        step = int(ok.median()) if ok.numel() else None  # the lower median for an even count
        per_class.append({"recognised": ok.numel() / max(f.numel(), 1),
                          "median_t": t_of[step].item() if step is not None else math.nan,
                          "median_step": float(step) if step is not None else math.nan})
    return {"curve": curve, "per_class": per_class}


def chance_t(ts: Sequence[int], accuracy: Sequence[float], k: int, margin: float = 0.05) -> int | None:
    """The smallest t from which forward-noised accuracy stays within `margin` of chance (1/k); None if never."""
    for i, t in enumerate(ts):
        if all(a <= 1 / k + margin for a in accuracy[i:]):
            return int(t)
    return None


def write_csvs(out: Path, names: Sequence[str], ts: Sequence[int], forward: Tensor, times: Sequence[int],
               reverse: dict[str, Any], forward_per_class_t: Sequence[int | None]) -> list[Path]:
    """recognition.csv (both curves: process, step, t, accuracy, one column per class) and recognition_classes.csv."""
    curves, classes = out / "recognition.csv", out / "recognition_classes.csv"
    with open(curves, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["process", "step", "t", "accuracy", *names])
        for i, (t, row) in enumerate(zip(ts, forward.tolist())):
            w.writerow(["forward", i, int(t), *(round(v, 4) for v in row)])
        for i, (t, row) in enumerate(zip(times, reverse["curve"].tolist())):
            w.writerow(["reverse", i, int(t), *(round(v, 4) for v in row)])
    with open(classes, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "forward_last_t_above_half", "reverse_recognised_fraction", "reverse_median_t",
                    "reverse_median_step"])
        for name, fwd, rev in zip(names, forward_per_class_t, reverse["per_class"]):
            w.writerow([name, "" if fwd is None else fwd, round(rev["recognised"], 4), rev["median_t"],
                        rev["median_step"]])
    return [curves, classes]


def last_t_above(ts: Sequence[int], accuracy: Sequence[float], level: float = 0.5) -> int | None:
    """The largest t at which the accuracy is still ≥ level (None if never)."""
    above = [int(t) for t, a in zip(ts, accuracy) if a >= level]
    return max(above) if above else None


def plot(path: Path, names: Sequence[str], ts: Sequence[int], forward: Tensor, times: Sequence[int],
         reverse: dict[str, Any], T: int, sampler: str) -> Path:
    """Two panels: accuracy against t for both processes; per class, the median t at which sampling reveals it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(list(ts), forward[:, 0].tolist(), "o-", label="forward: noised test images")
    a.plot(list(times), reverse["curve"][:, 0].tolist(), "s-", label=f"reverse: samples on the way ({sampler})")
    a.axhline(1 / k, color="grey", ls="--", lw=1, label="chance")
    a.set(xlabel="t (noise level; sampling runs right to left)", ylabel="classified as the true / requested class",
          xlim=(-0.02 * T, T * 1.02), ylim=(0, 1.02))
    a.legend(fontsize=8)
    medians = [r["median_t"] for r in reverse["per_class"]]
    top = max([m for m in medians if not math.isnan(m)], default=T)
    b.bar(range(k), [0 if math.isnan(m) else m for m in medians], color="tab:orange")
    for c, r in enumerate(reverse["per_class"]):
        if math.isnan(r["recognised"]):
            b.text(c, 0.02 * top, "noise is classified as this", ha="center", va="bottom", fontsize=6, rotation=90)
    b.set_xticks(range(k), [n[:8] for n in names], rotation=45, ha="right", fontsize=8)
    b.set(ylabel="median t of recognition", title="reverse: t from which the class is kept", ylim=(0, 1.3 * top))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
