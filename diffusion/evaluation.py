"""FID, IS and class accuracy of generated images with torchmetrics, against the official test set.

Feature spaces: the project's classifier (fast; penultimate 128-d features for FID, logits for IS and
accuracy) and, opt-in, Inception-v3 pool features (standard FID; torchmetrics' weights online, or a local
TorchScript file offline). Reference statistics of the test set are cached per data set and extractor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore

from diffusion.classifier import DigitClassifier, file_digest, evaluator_path, load_classifier
from diffusion.data import CLASS_NAMES, load_split

FID_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


class ClassifierFeatures(nn.Module):
    """uint8 (N, 1, 32, 32) -> the classifier's penultimate features (or its logits)."""

    def __init__(self, net: DigitClassifier, logits: bool = False) -> None:
        super().__init__()
        self.net, self.logits = net, logits
        self.num_features = net.head[-1].out_features if logits else net.fc[0].out_features  # torchmetrics reads it

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 127.5 - 1
        return (self.net(x) if self.logits else self.net.features(x)).double()


class InceptionFeatures(nn.Module):
    """uint8 grey (N, 1, H, W) -> Inception-v3 2048-d pool features: repeated to RGB, bilinear to 299 (as pytorch-fid)."""

    def __init__(self, torchscript: str | Path) -> None:
        super().__init__()
        self.model = torch.jit.load(str(torchscript), map_location="cpu").eval()
        self.num_features = 2048

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = images.float().expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.model((x - 128) / 128).double()  # [0, 255] -> [-1, 0.9921875], the file's input range


def inception_fid(weights: str | None) -> FrechetInceptionDistance:
    """Standard FID: a local TorchScript Inception if given, else torchmetrics' own (downloads once, online)."""
    if weights:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"Inception weights {weights} not found; run `make inception` to fetch them")
        return FrechetInceptionDistance(feature=InceptionFeatures(weights), reset_real_features=False)
    return FrechetInceptionDistance(feature=2048, reset_real_features=False)


def real_images(root: str | Path, data: str) -> tuple[Tensor, Tensor]:
    """The official test set as uint8 (10000, 1, 32, 32) with the same 2-pixel background border, and labels."""
    images, labels = load_split(root, data, train=False)
    return F.pad(images, (2, 2, 2, 2)).unsqueeze(1), labels


def with_reference(fid: FrechetInceptionDistance, cache: Path, source: str, real: Tensor, batch: int) -> None:
    """Fill the FID's real-image statistics from cache, or compute them from `real` and cache them."""
    if cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("source") == source:
            for name in FID_STATES:
                setattr(fid, name, saved[name])
            return
    for chunk in real.split(batch):
        fid.update(chunk, real=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"source": source, **{name: getattr(fid, name) for name in FID_STATES}}, cache)


def evaluate(images: Tensor, labels: Tensor, data: str, root: str | Path | None = None, inception: bool = False,
             inception_weights: str | None = None, batch_size: int = 500, rank: int = 0) -> dict[str, Any]:
    """FID/IS/accuracy of uint8 images (N, 1, 32, 32) generated for `labels`, against the test set of `data`.

    Under torch.distributed every rank passes its share; torchmetrics sums the statistics across ranks, so
    only rank 0 holds the reference (real-image) statistics.
    """
    root = Path(root or os.environ.get("DIFFUSION_DATA", "data"))
    net, meta = load_classifier(root, data)
    source = file_digest(evaluator_path(root, data))
    real, _ = real_images(root, data)
    fid = FrechetInceptionDistance(feature=ClassifierFeatures(net), reset_real_features=False)
    if rank == 0:
        with_reference(fid, root / "evaluators" / f"fid_ref_{data}_classifier.pt", source, real, batch_size)
    score = InceptionScore(feature=ClassifierFeatures(net, logits=True), splits=10)
    acc, per_class = MulticlassAccuracy(10, average="micro"), MulticlassAccuracy(10, average=None)
    confusion = MulticlassConfusionMatrix(10)
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        fid.update(x, real=False)
        score.update(x)
        pred = ClassifierFeatures(net, logits=True)(x).argmax(1)
        for m in (acc, per_class, confusion):
            m.update(pred, y)
    is_mean, is_std = score.compute()
    out = {"data": data, "num_samples": int(confusion.compute().sum().item()), "fid": fid.compute().item(), "is": is_mean.item(),
           "is_std": is_std.item(), "class_accuracy": acc.compute().item(),
           "per_class_accuracy": per_class.compute().tolist(), "confusion": confusion.compute().tolist(),
           "evaluator_test_accuracy": meta["test_accuracy"]}
    if inception:
        inception_weights = inception_weights or default_inception_weights(root)  # `make inception`'s file, if any
        ifid = inception_fid(inception_weights)
        if rank == 0:
            key = file_digest(Path(inception_weights)) if inception_weights else "torchmetrics"
            with_reference(ifid, root / "evaluators" / f"fid_ref_{data}_inception.pt", key, real, 50)
        for x in images.split(50):
            ifid.update(x, real=False)
        out["fid_inception"] = ifid.compute().item()
    return out


def balanced_labels(n: int, classes: list[int]) -> Tensor:
    """Label i is classes[i mod len(classes)]: balanced, and the same for every batch size."""
    return torch.tensor([classes[i % len(classes)] for i in range(n)])


def generate_for_eval(module: Any, n: int, sampler: Any, guidance: float, seed: int = 0, batch_size: int = 500,
                      rank: int = 0, world: int = 1) -> tuple[Tensor, Tensor]:
    """This rank's share (images i ≡ rank mod world) of n class-balanced samples: uint8 (m, 1, 32, 32), labels."""
    from tqdm import tqdm

    from diffusion.images import to_uint8

    mine = list(range(rank, n, world))
    labels, out = balanced_labels(n, list(range(len(module.hparams.class_names))))[mine], []
    for start in tqdm(range(0, len(mine), batch_size), desc=f"eval samples (ω={guidance})", unit="batch",
                      leave=False, disable=rank > 0):
        idx = mine[start : start + batch_size]
        out.append(to_uint8(module.sample(labels[start : start + len(idx)], sampler, seed=seed, indices=idx,
                                          guidance=guidance)).cpu())
    return torch.cat(out), labels


def default_inception_weights(root: str | Path) -> str | None:
    """The offline TorchScript Inception written by `make inception`, if present."""
    path = Path(root) / "evaluators" / "inception_default_1.pt"
    return str(path) if path.is_file() else None


def format_table(m: dict[str, Any]) -> str:
    """A short printable summary: headline numbers, then accuracy and the commonest confusion per class."""
    names = CLASS_NAMES[m["data"]]
    lines = [f"{m['num_samples']} samples of {m['data']}: FID {m['fid']:.3f} (classifier features)"
             + (f", FID {m['fid_inception']:.2f} (Inception)" if "fid_inception" in m else "")
             + f", IS {m['is']:.3f} ± {m['is_std']:.3f}, class accuracy {m['class_accuracy']:.4f}",
             f"{'class':<12} {'accuracy':>8}  most often mistaken for"]
    for c, name in enumerate(names):
        row = list(m["confusion"][c])
        row[c] = -1
        other = max(range(len(row)), key=row.__getitem__)
        mistaken = f"{names[other]} ({row[other]})" if row[other] > 0 else "-"
        lines.append(f"{name:<12} {m['per_class_accuracy'][c]:>8.3f}  {mistaken}")
    return "\n".join(lines)


def write_metrics(metrics: dict[str, Any], path: Path) -> Path:
    """metrics.json (indented, stable key order)."""
    path.write_text(json.dumps(metrics, indent=2))
    return path
