"""Sampling images/s of each sampler at its default steps, with and without guidance, on one checkpoint.

`make bench-sample` (or `python -m benchmarks.sample_speed [ckpt] --n 250`). The 10k-sample target is
measured end to end with `python sample.py mode=bulk num_samples=10000` (see README).
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import diffusion  # noqa: F401
from benchmarks.train_speed import CONF
from diffusion.checkpoint import load_module
from diffusion.runtime import config_options
from diffusion.sample import default_model


def rate(module, sampler, n: int, guidance: float) -> float:
    """images/s for n class-balanced images in one batch (after a short warm-up)."""
    labels = torch.arange(n) % len(module.hparams.class_names)
    module.sample(labels[:8], sampler, guidance=guidance)  # warm-up: kernels for this precision/layout
    start = time.perf_counter()
    module.sample(labels, sampler, guidance=guidance)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", nargs="?", help="default: the newest last.ckpt under outputs/, else the shipped MNIST model")
    parser.add_argument("--n", type=int, default=250, help="images per measurement (one batch)")
    args = parser.parse_args()
    path = args.ckpt or default_model()[0]
    module = load_module(path)
    print(f"checkpoint {path} (T={module.schedule.timesteps}), batch {args.n}, threads {torch.get_num_threads()}")
    for name in config_options("sampler"):
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose("sample", overrides=[f"sampler={name}", "out_dir=x"])
        steps = cfg.sampler.get("steps") or module.schedule.timesteps
        n = args.n if steps <= 100 else max(10, args.n // 10)  # DDPM runs all T steps: a smaller batch
        for w in (0.0, 0.2):
            r = rate(module, instantiate(cfg.sampler), n, w)
            print(f"{name:>10} {steps:>5} steps  ω={w:<4} {r:8.1f} images/s  (10k images: {10000 / r / 60:6.1f} min)")


if __name__ == "__main__":
    main()
