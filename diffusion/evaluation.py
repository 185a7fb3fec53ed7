"""FID, IS and class accuracy of generated images with torchmetrics, against the official test set.

Feature spaces: the project's classifier (fast; penultimate 128-d features for FID, logits for IS and
accuracy) and, opt-in, Inception-v3 pool features (standard FID; torchmetrics' weights online, or a local
TorchScript file offline). Reference statistics of the test set are cached per data set and extractor.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore

from diffusion.classifier import ImageClassifier, evaluator_path, load_classifier
from diffusion.files import file_digest
from diffusion.data import channels_first, load_split
from diffusion.datasets import DataSpec
from diffusion.files import atomic_write
from diffusion.runtime import data_root

FID_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")
# Inception images per forward pass: on CPUs a few images keep each layer's activations in cache (measured side by
# side with `python -m benchmarks.fid_speed --batch …` on a 2-core AVX2 CPU); GPUs want large batches
BATCH_CPU, BATCH_GPU = 8, 500


class Precomputed(nn.Module):
    """Identity "extractor" for torchmetrics: features are computed once per batch and passed in directly."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features  # torchmetrics reads it instead of probing with a dummy image

    def forward(self, features: Tensor) -> Tensor:
        return features.double()


@torch.no_grad()
def classify(net: ImageClassifier, images: Tensor) -> tuple[Tensor, Tensor]:
    """uint8 (N, C, H, W) -> (128-d penultimate features, logits) in one forward pass."""
    features = net.features(images.float() / 127.5 - 1)
    return features, net.head(features)


class InceptionFeatures(nn.Module):
    """uint8 grey (N, 1, H, W) -> Inception-v3 2048-d pool features, grey repeated to RGB and resized to 299.

    A local TorchScript file (bilinear resize here, input scaled to [-1, 0.9921875]) or, without one,
    torchmetrics' FID Inception (downloads its weights once; resizes uint8 input itself, like pytorch-fid).
    `optimized` (CPU): the file's network rebuilt eagerly with folded batch norms and fed channels_last
    (`diffusion.inception`; checked against the file when built) or, for any other TorchScript or with
    `rebuilt=False`, its frozen graph: the same features to float32 round-off and faster
    (`python -m benchmarks.fid_speed`).
    """

    def __init__(self, torchscript: str | Path | None, device: str | torch.device = "cpu",
                 optimized: bool = True, rebuilt: bool = True) -> None:
        super().__init__()
        device = torch.device(device)
        self.channels_last = optimized and device.type == "cpu"
        self.local = torchscript is not None
        if not self.local:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.model = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"]).to(device)
            return
        model = torch.jit.load(str(torchscript), map_location=device).eval()
        if self.channels_last:
            from diffusion.inception import rebuild

            model = (rebuild(model) if rebuilt else None) or torch.jit.freeze(model)
        self.model = model

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if not self.local:
            return self.model(images.expand(-1, 3, -1, -1)).double()
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
        x = ((x - 128) / 128).expand(-1, 3, -1, -1)  # [0, 255] -> [-1, 0.9921875], the file's range; grey -> RGB
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).double()


def inception_extractor(weights: str | None, device: str | torch.device = "cpu", optimized: bool = True,
                        rebuilt: bool = True) -> InceptionFeatures:
    """The local TorchScript Inception if given (one clear error if missing), else torchmetrics' download."""
    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"Inception weights {weights} not found; run `make inception` to fetch them")
    return InceptionFeatures(weights, device, optimized, rebuilt)


def real_images(root: str | Path, data: str | DataSpec) -> tuple[Tensor, Tensor]:
    """The test set as uint8 (N, C, H, W) with the same background border as the model's images, and labels."""
    spec = DataSpec.of(data)
    images, labels = load_split(root, spec, train=False)
    return F.pad(channels_first(images), (spec.pad,) * 4), labels


def batches(x: Tensor, size: int, desc: str) -> Iterator[Tensor]:
    """x in chunks of `size`, with a progress bar when there is more than one chunk."""
    from tqdm import tqdm

    chunks = x.split(size)
    return iter(tqdm(chunks, desc=desc, unit="batch", leave=False, disable=len(chunks) < 2))


def with_reference(fid: FrechetInceptionDistance, cache: Path, source: str,
                   features: Callable[[], Iterator[Tensor]]) -> None:
    """Fill the FID's real-image statistics from cache (onto the metric's device), or from `features()` (computed
    once) and cache them."""
    try:
        saved = torch.load(cache, map_location="cpu", weights_only=True) if cache.is_file() else {}
    except Exception:  # noqa: BLE001 - an unreadable cache is only a cache: recompute it
        saved = {}
    if isinstance(saved, dict) and saved.get("source") == source and all(n in saved for n in FID_STATES):
        for name in FID_STATES:
            setattr(fid, name, saved[name].to(fid.device))
        return
    for chunk in features():
        fid.update(chunk, real=True)
    states = {n: getattr(fid, n).cpu() for n in FID_STATES}
    atomic_write(cache, lambda f: torch.save({"source": source, **states}, f))


def evaluate(images: Tensor, labels: Tensor, data: str | DataSpec, root: str | Path | None = None,
             inception: bool = False, inception_weights: str | None = None, batch_size: int = 500,
             device: str | torch.device = "cpu") -> dict[str, Any]:
    """FID/IS/accuracy of uint8 images (N, C, H, W) generated for `labels`, against the test set of `data`.

    Networks, features and metric states live on `device`. Purely local: no metric syncs across processes (a
    caller that splits generation across ranks gathers the images first, so the numbers never depend on the
    world size). The test set is read only if the cached reference statistics miss.
    """
    root, spec, device = Path(root or data_root()), DataSpec.of(data), torch.device(device)
    data, k = spec.name, len(spec.classes)
    net, meta = load_classifier(root, data)
    net, side = net.to(device), net.image_size
    images = evaluator_view(images, spec, side)  # e.g. a data.pad=0 model's 28×28 samples in the 32×32 frame
    local = {"sync_on_compute": False}
    fid = FrechetInceptionDistance(feature=Precomputed(net.fc[0].out_features), reset_real_features=False, **local)
    with warnings.catch_warnings():  # its memory warning: 10 logits per image here, a few MB at most
        warnings.filterwarnings("ignore", "Metric `InceptionScore` will save all extracted features")
        score = InceptionScore(feature=Precomputed(net.head[-1].out_features), splits=10, **local)
    acc, per_class = MulticlassAccuracy(k, average="micro", **local), MulticlassAccuracy(k, average=None, **local)
    confusion = MulticlassConfusionMatrix(k, **local)
    for metric in (fid, score, acc, per_class, confusion):
        metric.to(device)
    cache, key = root / "evaluators" / f"fid_ref_{data}_classifier.pt", file_digest(evaluator_path(root, data))
    with_reference(fid, cache, key,
                   lambda: (classify(net, evaluator_view(x, spec, side).to(device))[0]
                            for x in real_images(root, spec)[0].split(batch_size)))
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        features, logits = classify(net, x)
        fid.update(features, real=False)
        score.update(logits)
        for m in (acc, per_class, confusion):
            m.update(logits.argmax(1), y)
    with torch.random.fork_rng(devices=[]):  # IS shuffles (a CPU randperm) before splitting: fix it, reproducibly
        torch.manual_seed(0)
        is_mean, is_std = score.compute()
    table = confusion.compute()
    out = {"data": data, "num_samples": int(table.sum().item()), "fid": fid.compute().item(), "is": is_mean.item(),
           "is_std": is_std.item(), "class_accuracy": acc.compute().item(),
           "per_class_accuracy": per_class.compute().tolist(), "confusion": table.tolist(),
           "evaluator_test_accuracy": meta["test_accuracy"]}
    if inception:
        out["fid_inception"] = inception_fid(images, spec, root, inception_weights, device=device)
        out["fid_inception_protocol"] = inception_protocol(spec, len(images),
                                                           inception_weights or default_inception_weights(root))
    return out


def inception_fid(images: Tensor, spec: DataSpec, root: Path, weights: str | None, batch: int | None = None,
                  device: str | torch.device = "cpu") -> float:
    """Standard FID with the seed paper's protocol: uint8 images cropped back to the data set's own size (the
    padding removed) against its test set at that size, Inception-v3 pool features in fp32; reference cached."""
    device = torch.device(device)
    batch = batch or (BATCH_GPU if device.type == "cuda" else BATCH_CPU)
    weights = weights or default_inception_weights(root)  # `make inception`'s file, if any
    extract = inception_extractor(weights, device)
    fid = FrechetInceptionDistance(feature=Precomputed(2048), reset_real_features=False, sync_on_compute=False)
    fid.to(device)
    key = file_digest(Path(weights)) if weights else "torchmetrics"
    on_device = lambda chunks: (extract(x.to(device, non_blocking=True)) for x in chunks)  # noqa: E731
    test_set = lambda: channels_first(load_split(root, spec, train=False)[0])  # noqa: E731  unpadded
    with_reference(fid, root / "evaluators" / f"fid_ref_{spec.name}_inception{spec.size}.pt", key,
                   lambda: on_device(batches(test_set(), batch, "Inception features (test set)")))
    for features in on_device(batches(crop_padding(images, spec), batch, "Inception features (samples)")):
        fid.update(features, real=False)
    return fid.compute().item()


def crop_padding(images: Tensor, spec: DataSpec) -> Tensor:
    """(N, C, H, W) images of the model's size back to the data set's own (N, C, size, size): the border removed."""
    p = spec.pad
    return images[..., p : images.shape[-2] - p, p : images.shape[-1] - p] if p else images


def evaluator_view(images: Tensor, spec: DataSpec, side: int) -> Tensor:
    """(N, C, H, W) uint8 images with the model's border -> the evaluator's side × side frame (background 0)."""
    border = side - spec.size
    if border < 0 or border % 2:
        raise ValueError(f"the {spec.name} evaluator takes {side}×{side} images; {spec.size}×{spec.size} images cannot"
                         " be framed to that size")
    return F.pad(crop_padding(images, spec), (border // 2,) * 4)


def inception_protocol(spec: DataSpec, num_samples: int, weights: str | None) -> dict[str, Any]:
    """How `fid_inception` was measured, for metrics.json (the seed paper's protocol)."""
    return {"resolution": spec.size, "num_samples": num_samples, "reference": f"{spec.name} test set, all images, "
            f"{spec.size}x{spec.size}",
            "features": "Inception-v3 pool (2048-d), grey repeated to RGB, bilinear resize to 299 (pytorch-fid)",
            "weights": Path(weights).name if weights else "torchmetrics inception-v3-compat"}


def run_metadata(schedule: Any, sampler_cfg: Any, step: int | None, guidance: float) -> dict[str, Any]:
    """What made a set of samples, for metrics.json: step, ω, sampler, its steps and its other options (order,
    η, clip, guidance interval), schedule and T."""
    from omegaconf import OmegaConf

    from diffusion.samplers import sampler_name

    options = {k: v for k, v in OmegaConf.to_container(sampler_cfg, resolve=True).items()
               if k not in ("_target_", "_partial_", "steps")}
    return dict(step=step, guidance=guidance, sampler=sampler_name(sampler_cfg._target_),
                sampler_steps=sampler_cfg.get("steps"), sampler_options=options, schedule=schedule.kind,
                timesteps=schedule.timesteps)


def default_inception_weights(root: str | Path) -> str | None:
    """The offline TorchScript Inception written by `make inception`, if present."""
    path = Path(root) / "evaluators" / "inception_default_1.pt"
    return str(path) if path.is_file() else None
