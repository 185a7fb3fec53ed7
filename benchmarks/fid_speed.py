"""Standard-FID speed: Inception-v3 feature extraction per path, images/s and the FID each path gives, side by side.

`python -m benchmarks.fid_speed [--n 1000] [--npz samples.npz] [--batch 8 20] [--rounds 3]`. The images are a sample run's
`samples.npz`, or by default the first N training images (an FID against the test set like any other). Paths: the
TorchScript as loaded (fp32, NCHW); its frozen graph fed channels_last (the CPU default before the rebuild); the
network rebuilt eagerly with folded batch norms, channels_last (`diffusion.inception`, `sample.py`'s CPU path), at
each `--batch` size; and, where the hardware has bf16 (AMX/AVX512-BF16 CPU or a GPU), the rebuild under bf16
autocast. Each FID uses the same test-set statistics
(`make inception` weights) of the first N test images; the last column is the relative difference from the
plain fp32 path.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

import diffusion  # noqa: F401
from diffusion.data import channels_first, load_split
from diffusion.datasets import DataSpec
from diffusion.evaluation import (BATCH_CPU, FID_STATES, Precomputed, crop_padding, default_inception_weights,
                                  inception_extractor)
from diffusion.runtime import autocast_dtype, data_root, resolve_device


def images_for(npz: Path | None, n: int, spec: DataSpec, root: Path) -> torch.Tensor:
    """N uint8 (N, 1, size, size) images at the data set's own size: a samples.npz (cropped) or training images."""
    if npz is None:
        return channels_first(load_split(root, spec, train=True)[0][:n])
    with np.load(npz, allow_pickle=False) as f:
        images = torch.from_numpy(f["images"][:n])
    return crop_padding(channels_first(images), spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per path")
    parser.add_argument("--npz", type=Path, default=None, help="a sample run's samples.npz (default: training images)")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--batch", type=int, nargs="+", default=[BATCH_CPU],
                        help=f"images per forward pass, one or more (sample.py's CPU default: {BATCH_CPU})")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per path, interleaved (median shown)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    args = parser.parse_args()
    root, spec, device = Path(data_root()), DataSpec.of(args.data), resolve_device(args.device)
    weights = default_inception_weights(root)
    if weights is None:
        raise SystemExit("no Inception weights: run `make inception` first")
    images = images_for(args.npz, args.n, spec, root)
    # reference: the first N test images through the plain fp32 path (the cached 10k statistics take ~25 min on a
    # 2-core fp32 CPU; for comparing paths on the same images any fixed reference does)
    test = channels_first(load_split(root, spec, train=False)[0][: args.n])
    bf16 = autocast_dtype(device) == torch.bfloat16  # only where the hardware has bf16 arithmetic
    # name: (optimized, rebuilt, autocast, batch)
    paths = {f"fp32, as loaded, batch {args.batch[0]}": (False, False, False, args.batch[0])}
    for b in args.batch:
        paths[f"fp32, frozen graph, channels_last, batch {b}"] = (True, False, False, b)
        paths[f"fp32, rebuilt, channels_last, batch {b}"] = (True, True, False, b)
        if bf16:
            paths[f"bf16 autocast, rebuilt, batch {b}"] = (True, True, True, b)
    # one network per (optimized, rebuilt): the batch sizes and autocast rows share it
    networks = {(o, r): inception_extractor(weights, device, o, r) for o, r, _, _ in paths.values()}
    reference = FrechetInceptionDistance(feature=Precomputed(2048), sync_on_compute=False).to(device)
    for chunk in test.split(args.batch[0]):
        reference.update(networks[False, False](chunk.to(device)), real=True)
    cpu = f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
    print(f"{len(images)} images of {spec.name} ({'training set' if args.npz is None else args.npz}), "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu}", flush=True)
    print("| path | images/s | 10k images (min) | FID | vs fp32 as loaded |\n|---|---:|---:|---:|---:|", flush=True)

    def run(name: str, fid: FrechetInceptionDistance | None = None) -> float:
        """One pass of the images through a path (features into `fid` if given); its images/s."""
        optimized, rebuilt, autocast, batch = paths[name]
        extract = networks[optimized, rebuilt]
        with torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext():
            extract(images[:batch].to(device))  # warm-up (the frozen graph optimizes on its first calls)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for chunk in images.split(batch):
                features = extract(chunk.to(device))
                if fid is not None:
                    fid.update(features.float().double(), real=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return len(images) / (time.perf_counter() - start)

    # rounds interleave the paths so a machine slowing down or speeding up meets them all; median rate per path
    rates: dict[str, list[float]] = {name: [] for name in paths}
    values: dict[str, float] = {}
    for round_ in range(args.rounds):
        for name in paths:
            fid = None
            if round_ == 0:
                fid = FrechetInceptionDistance(feature=Precomputed(2048), reset_real_features=False,
                                               sync_on_compute=False).to(device)
                for key in FID_STATES:
                    setattr(fid, key, getattr(reference, key))
            rates[name].append(run(name, fid))
            if fid is not None:
                values[name] = fid.compute().item()
    base = next(iter(values.values()))
    for name, value in values.items():
        rate = statistics.median(rates[name])
        print(f"| {name} | {rate:.1f} | {10000 / rate / 60:.1f} | {value:.4f} | {(value - base) / base:+.3%} |",
              flush=True)


if __name__ == "__main__":
    main()
