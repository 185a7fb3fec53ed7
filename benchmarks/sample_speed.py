"""Sampling speed and quality side by side: images/s, network evaluations per image and classifier FID per setting.

`make bench-sample` (or `python -m benchmarks.sample_speed [ckpt] --n 2000 --only dpm_solver`). Every setting
makes the same class-balanced images (same seeds, same labels) from the same model, so the FIDs compare solvers,
not noise. Classifier FID/IS/accuracy as in `sample.py evaluate=true` (diffusion.evaluation.evaluate).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

import diffusion  # noqa: F401
from diffusion.checkpoint import load_module, shown
from diffusion.evaluation import evaluate
from diffusion.generate import balanced_labels, generate
from diffusion.runtime import config_option, data_root
from diffusion.sample import default_model

INTERVAL = [0.28, 5.42]  # the guidance interval in σ of Kynkäänniemi et al. (2024, Table 1, EDM2-S)


@dataclass
class Setting:
    """One row of the table: a conf/sampler option with overrides (sampled with the model's own ω)."""

    sampler: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.overrides.items() if k != "steps")
        return f"{self.sampler} {extra}".strip()


SETTINGS = [
    Setting("ddpm"),
    Setting("ddim", {"steps": 50}),
    *(Setting("dpm_solver", {"steps": n}) for n in (10, 15, 20)),
    *(Setting("dpm_solver", {"steps": n, "order": 3}) for n in (10, 15, 20)),
    *(Setting("dpm_solver", {"steps": n, "guidance_interval": INTERVAL}) for n in (15, 20)),
    Setting("dpm_solver", {"steps": 10, "order": 3, "guidance_interval": INTERVAL}),
]


class Counter:
    """Network evaluations per image: every row of every batch the U-Net sees (the ∅ half of CFG counts)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows = 0
        module.register_forward_pre_hook(self.hook)

    def hook(self, module: torch.nn.Module, args: tuple) -> None:
        self.rows += len(args[0])


def run(module: Any, setting: Setting, n: int, batch: int, counter: Counter) -> dict[str, Any]:
    """Make n images with one setting, timed end to end, then score them."""
    sampler = instantiate(config_option("sampler", setting.sampler), **setting.overrides)
    steps = setting.overrides.get("steps") or module.schedule.timesteps
    guidance = module.hparams.guidance
    labels = balanced_labels(n, range(len(module.hparams.class_names)))
    generate(module, labels[:8], range(8), 8, sampler, guidance)  # warm-up: kernels for this precision/layout
    counter.rows = 0
    start = time.perf_counter()
    images = generate(module, labels, range(n), batch, sampler, guidance, seed=0, desc=f"{setting.name} {steps}")
    seconds = time.perf_counter() - start
    m = evaluate(images, labels, module.data_spec, data_root())
    return {"setting": setting.name, "steps": steps, "guidance": guidance, "num_samples": n,
            "images_per_s": n / seconds, "nfe_per_image": counter.rows / n, "fid": m["fid"], "is": m["is"],
            "class_accuracy": m["class_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", nargs="?", help="default: the newest last.ckpt under outputs/, else the shipped MNIST model")
    parser.add_argument("--n", type=int, default=2000, help="images per setting (default 2000)")
    parser.add_argument("--batch", type=int, default=250, help="images per sampling batch")
    parser.add_argument("--only", nargs="*", default=None, help="settings whose name starts with one of these")
    parser.add_argument("--jsonl", type=Path, default=None, help="also append each row to this file")
    args = parser.parse_args()
    path = args.ckpt or default_model()[0]
    module = load_module(path)
    counter = Counter(module.net)
    chosen = [s for s in SETTINGS if not args.only or any(s.name.startswith(o) for o in args.only)]
    print(f"model {shown(path)} (T={module.schedule.timesteps}, ω={module.hparams.guidance}), {args.n} images per "
          f"setting, batch {args.batch}, {torch.get_num_threads()} threads", flush=True)
    print("| sampler | steps | NFE/image | images/s | 10k images (min) | classifier FID | IS | accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for setting in chosen:
        r = run(module, setting, args.n, args.batch, counter)
        print(f"| {r['setting']} | {r['steps']} | {r['nfe_per_image']:.0f} | {r['images_per_s']:.1f} | "
              f"{10000 / r['images_per_s'] / 60:.1f} | {r['fid']:.2f} | {r['is']:.2f} | {r['class_accuracy']:.2%} |",
              flush=True)
        if args.jsonl:
            with args.jsonl.open("a") as f:
                f.write(json.dumps({"model": shown(path), **r}) + "\n")


if __name__ == "__main__":
    main()
