"""GPU figures beside `make bench`'s training column: 10k guided samples and a 10k-image Inception FID, end to end.

`python -m benchmarks.gpu_speed CKPT [--n 10000]` on a CUDA machine. Prints the wall time of
  sampling:  n class-balanced images with sample.py's default sampler at ω = the model's guidance (the one
             generation loop, uint8 images back on the host), at a few batch sizes;
  inception: standard FID of those images (Inception-v3 TorchScript, fp32) on the GPU, and, with --cpu-check, the
             same FID computed on the CPU for comparison (the reference statistics are cached first, not timed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

import diffusion  # noqa: F401
from benchmarks.train_speed import sync
from diffusion.checkpoint import load_module
from diffusion.evaluation import default_inception_weights, inception_fid
from diffusion.generate import balanced_labels, generate
from diffusion.runtime import config_option, configure_cuda, data_root, resolve_device


def timed(fn, device: torch.device):
    """(result, seconds) of fn(), GPU work included."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1000, 2500, 5000])
    parser.add_argument("--sampler", default="dpm_solver", help="a conf/sampler option (sample.py's default)")
    parser.add_argument("--cpu-check", action="store_true", help="also compute the Inception FID on the CPU")
    args = parser.parse_args()
    device = resolve_device("cuda")
    configure_cuda()
    module = load_module(args.ckpt, device=device)
    sampler = instantiate(config_option("sampler", args.sampler))
    labels = balanced_labels(args.n, range(len(module.hparams.class_names)))
    w = module.hparams.guidance
    print(f"{torch.cuda.get_device_name(device)}; {args.ckpt}; sampler {args.sampler} "
          f"({sampler.keywords.get('steps')} steps), ω={w}")
    generate(module, labels[:500], range(500), 500, sampler)  # warm-up: kernels, autotuning
    images = None
    for batch in args.batch:
        images, s = timed(lambda: generate(module, labels, range(args.n), batch, sampler), device)
        print(f"sampling: {args.n} guided images in {s:.2f} s at batch {batch} ({args.n / s:,.0f} images/s)")
    root = Path(data_root())
    weights = default_inception_weights(root)
    if weights is None:
        print(f"inception: skipped, no {root}/evaluators/inception_default_1.pt (`make inception`)")
        return
    spec = module.data_spec
    inception_fid(images[:500], spec, root, weights, device=device)  # caches the test set's statistics; warm-up
    fid, s = timed(lambda: inception_fid(images, spec, root, weights, device=device), device)
    print(f"inception: FID {fid:.4f} of {args.n} images in {s:.2f} s on the GPU")
    if args.cpu_check:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        fid_cpu, s_cpu = timed(lambda: inception_fid(images, spec, root, weights, device="cpu"), device)
        print(f"inception: FID {fid_cpu:.4f} on the CPU (fp32, {s_cpu:.0f} s); GPU/CPU = {fid / fid_cpu:.5f}")


if __name__ == "__main__":
    main()
