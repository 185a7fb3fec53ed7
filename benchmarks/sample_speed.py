"""Sampling speed and quality side by side: images/s, network evaluations per image and classifier FID per setting.

`make bench-sample` (or `python -m benchmarks.sample_speed [ckpt] --n 2000 --only dpm_solver`; quality against the
number of steps: `--only ddim "dpm_solver order=3" --steps 5 10 20 50 --plot steps.png`; guidance: `--guidance 0.5 1`). Every setting
makes the same class-balanced images (same seeds, same labels) from the same model, so the FIDs compare solvers,
not noise. Classifier FID/IS/accuracy as in `sample.py evaluate=true` (diffusion.scoring.score_images).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

import diffusion  # noqa: F401
from diffusion.checkpoint import load_module, shown
from diffusion.generate import balanced_labels, generate
from diffusion.runtime import config_option, sampler_options
from diffusion.sample import default_model
from diffusion.scoring import score_images

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


STUDIED = [  # the settings the sampling tables of docs/results.md compare
    Setting("ddpm"),
    Setting("ddim", {"steps": 50}),
    *(Setting("dpm_solver", {"steps": n, "order": 2}) for n in (10, 15, 20)),
    *(Setting("dpm_solver", {"steps": n, "order": 3}) for n in (10, 15, 20)),
    *(Setting("dpm_solver", {"steps": n, "order": 2, "guidance_interval": INTERVAL}) for n in (15, 20)),
    Setting("dpm_solver", {"steps": 10, "order": 3, "guidance_interval": INTERVAL}),
]
# and every other sampler of conf/sampler/ at its configured options
SETTINGS = [*STUDIED, *(Setting(name) for name in sampler_options()
                         if name not in {s.sampler for s in STUDIED})]


def matches(name: str, wanted: str) -> bool:
    """`--only` selection: the setting of that exact name if there is one, else every name starting with it."""
    exact = any(s.name == wanted for s in SETTINGS)
    return name == wanted if exact else name.startswith(wanted)


def with_steps(settings: list[Setting], steps: list[int]) -> list[Setting]:
    """Each distinct setting (by name) once per step count: a quality-against-steps sweep."""
    distinct = {s.name: s for s in settings}
    return [Setting(s.sampler, {**s.overrides, "steps": n}) for s in distinct.values() for n in steps]


def plot_steps(rows: list[dict[str, Any]], path: Path) -> Path:
    """Classifier FID, IS and class accuracy against the number of sampler steps, one line per setting (and ω)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    several = len({r["guidance"] for r in rows}) > 1
    for name, w in dict.fromkeys((r["setting"], r["guidance"]) for r in rows):
        mine = sorted((r for r in rows if (r["setting"], r["guidance"]) == (name, w)), key=lambda r: r["steps"])
        for ax, key in zip(axes, ("fid", "is", "class_accuracy")):
            ax.plot([r["steps"] for r in mine], [r[key] for r in mine], "o-", label=f"{name} ω={w:g}" if several else name)
    steps = sorted({r["steps"] for r in rows})
    for ax, title in zip(axes, ("classifier FID (lower is better)", "IS", "class accuracy")):
        ax.set(xscale="log", xlabel="sampler steps", title=title)
        ax.set_xticks(steps, [str(n) for n in steps])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[0].yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class Counter:
    """Network evaluations per image: every row of every batch the U-Net sees (the ∅ half of CFG counts)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows = 0
        module.register_forward_pre_hook(self.hook)

    def hook(self, module: torch.nn.Module, args: tuple) -> None:
        self.rows += len(args[0])


def run(module: Any, setting: Setting, n: int, batch: int, counter: Counter,
        guidance: float | None = None) -> dict[str, Any]:
    """Make n images with one setting (and ω, default the model's), timed end to end, then score them."""
    option = config_option("sampler", setting.sampler)
    sampler = instantiate(option, **setting.overrides)
    steps = setting.overrides.get("steps", option.get("steps")) or module.schedule.timesteps  # null: all T
    guidance = module.hparams.guidance if guidance is None else guidance
    labels = balanced_labels(n, range(len(module.hparams.class_names)))
    generate(module, labels[:8], range(8), 8, sampler, guidance)  # warm-up: kernels for this precision/layout
    counter.rows = 0
    start = time.perf_counter()
    images = generate(module, labels, range(n), batch, sampler, guidance, seed=0, desc=f"{setting.name} {steps}")
    seconds = time.perf_counter() - start
    m = score_images(module, images, labels)
    return {"setting": setting.name, "steps": steps, "guidance": guidance, "num_samples": n,
            "images_per_s": n / seconds, "nfe_per_image": counter.rows / n, "fid": m["fid"], "is": m["is"],
            "class_accuracy": m["class_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", nargs="?", help="default: the newest model file of a run under outputs/ or "
                        "multirun/, else the shipped MNIST model")
    parser.add_argument("--n", type=int, default=2000, help="images per setting (default 2000)")
    parser.add_argument("--batch", type=int, default=250, help="images per sampling batch")
    parser.add_argument("--only", nargs="*", default=None,
                        help="settings with one of these names, or whose name starts with one (when none has it)")
    parser.add_argument("--jsonl", type=Path, default=None, help="also append each row to this file")
    parser.add_argument("--steps", type=int, nargs="*", default=None,
                        help="run each chosen setting at each of these step counts (quality against steps)")
    parser.add_argument("--guidance", type=float, nargs="*", default=None,
                        help="run each chosen setting at each of these ω (default: the model's own)")
    parser.add_argument("--plot", type=Path, default=None, help="FID, IS and accuracy against steps, as this PNG")
    args = parser.parse_args()
    path = args.ckpt or default_model()[0]
    module = load_module(path)
    counter = Counter(module.net)
    chosen = [s for s in SETTINGS if not args.only or any(matches(s.name, o) for o in args.only)]
    chosen = with_steps(chosen, args.steps) if args.steps else chosen
    print(f"model {shown(path)} (T={module.schedule.timesteps}, ω={module.hparams.guidance}), {args.n} images per "
          f"setting, batch {args.batch}, {torch.get_num_threads()} threads", flush=True)
    print("| sampler | steps | ω | NFE/image | images/s | 10k images (min) | classifier FID | IS | accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    rows = []
    for setting, guidance in itertools.product(chosen, args.guidance or [None]):
        r = run(module, setting, args.n, args.batch, counter, guidance)
        rows.append(r)
        print(f"| {r['setting']} | {r['steps']} | {r['guidance']:g} | {r['nfe_per_image']:.0f} | {r['images_per_s']:.1f} | "
              f"{10000 / r['images_per_s'] / 60:.1f} | {r['fid']:.2f} | {r['is']:.2f} | {r['class_accuracy']:.2%} |",
              flush=True)
        if args.jsonl:
            with args.jsonl.open("a") as f:
                f.write(json.dumps({"model": shown(path), **r}) + "\n")
    if args.plot:
        print(plot_steps(rows, args.plot))


if __name__ == "__main__":
    main()
