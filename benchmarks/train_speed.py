"""Training images/s: the default configuration through Lightning vs hand-written loops, measured in one run.

`make bench` (or `python -m benchmarks.train_speed --steps 30 [--device cuda] [overrides]`). Prints images/s of
  plain:         fp32, contiguous layout, hand-written PyTorch loop (the baseline),
  hand-default:  the default precision/layout settings (bf16 autocast only on bf16 hardware) in a hand-written loop,
  lightning:     the default configuration through Lightning's Trainer,
  (--compile) hand-default with the U-Net under torch.compile (inductor), after its compilation,
each with the FLOP rate it reached (forward + backward FLOPs per training image, counted once by torch's
FlopCounterMode), and the ratios `speed-up` (lightning / plain) and `lightning overhead` (lightning / hand-default). On a GPU it also
prints the hand-written loop with bf16 and the other memory layout (the channels_last choice of runtime.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

import diffusion  # noqa: F401
from diffusion.runtime import autocast_dtype, configure_cuda, cpu_supports_bf16, resolve_device, use_channels_last

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def build(overrides: list[str]):
    """Compose the training config and build the data and Lightning modules from it."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=["run_dir=/tmp/bench", "logger=none", "callbacks=none", *overrides])
    cfg.data.root = str(Path(cfg.data.root).resolve())
    dm = instantiate(cfg.data)
    dm.setup()
    module = instantiate(cfg.module, class_names=dm.class_names)
    return cfg, dm, module


def batches(dm, n: int):
    """n training batches, cycling through the loader."""
    it = iter(dm.train_dataloader())
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            it = iter(dm.train_dataloader())
            yield next(it)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_flops_per_image(module, dm) -> float:
    """Forward + backward FLOPs of one training image (convolutions, matmuls and attention; elementwise ops uncounted)."""
    x, y = next(batches(dm, 1))
    with FlopCounterMode(display=False) as counter:
        module.diffusion_loss(x, y).backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


def hand_loop(module, dm, steps: int, warmup: int, bf16: bool, channels_last: bool,
              device: torch.device = torch.device("cpu"), compile: bool = False) -> float:
    """images/s of a minimal loop: loss, backward, clip, AdamW step (same network, batch and loss)."""
    module.to(device)
    module.channels_last = channels_last
    module.net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    eager = module.net
    if compile:  # compiled during the warm-up steps, which are not timed
        module.net = torch.compile(eager)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    n_img, start = 0, None
    for i, (x, y) in enumerate(batches(dm, warmup + steps)):
        if i == warmup:
            sync(device)
            start, n_img = time.perf_counter(), 0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.diffusion_loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        n_img += x.shape[0]
    sync(device)
    module.net = eager
    return n_img / (time.perf_counter() - start)


class Timer(L.Callback):
    """Wall time of the batches after `warmup`."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.images = warmup, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start, self.images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += batch[0].shape[0] if batch_idx >= self.warmup else 0

    def on_train_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.end = time.perf_counter()


def lightning_run(cfg, module, dm, steps: int, warmup: int) -> float:
    """images/s of the default configuration's Trainer (no logging or checkpoint callbacks)."""
    timer = Timer(warmup)
    trainer = instantiate(cfg.trainer, max_steps=warmup + steps, callbacks=[timer], logger=False,
                          enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                          enable_checkpointing=False)
    trainer.fit(module, datamodule=dm)
    return timer.images / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto (a GPU when present)")
    parser.add_argument("--compile", action="store_true", help="add the hand-default loop under torch.compile")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=small data.batch_size=64")
    args = parser.parse_args()
    device = resolve_device(args.device)
    overrides = ["trainer=gpu", *args.overrides] if device.type == "cuda" else args.overrides
    if device.type == "cuda":
        configure_cuda()
    cfg, dm, module = build(overrides)
    bf16, layout = autocast_dtype(device) == torch.bfloat16, use_channels_last(device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:  # the CPU rule decides the path: bf16 autocast with native bf16 unless forced (runtime.cpu_bf16)
        where = (f"CPU {torch.backends.cpu.get_cpu_capability()}, native bf16 {'yes' if cpu_supports_bf16() else 'no'}"
                 f", bf16 autocast {'yes' if bf16 else 'no'}, {torch.get_num_threads()} threads")
    print(f"model={cfg.model._target_} batch={cfg.data.batch_size} device={where} steps={args.steps}")
    print(f"default path: precision={cfg.trainer.precision}, "
          f"{'channels_last' if layout else 'contiguous'} layout")
    flops = training_flops_per_image(module, dm)
    print(f"training FLOPs per image (forward + backward): {flops / 1e9:.2f} GFLOP")
    results = {
        "plain": hand_loop(module, dm, args.steps, args.warmup, bf16=False, channels_last=False, device=device),
        "hand-default": hand_loop(module, dm, args.steps, args.warmup, bf16=bf16, channels_last=layout, device=device),
    }
    if device.type == "cuda":  # the layout choice of runtime.CHANNELS_LAST, measured
        results[f"hand-default-{'contiguous' if layout else 'channels_last'}"] = hand_loop(
            module, dm, args.steps, args.warmup, bf16=bf16, channels_last=not layout, device=device)
    if args.compile:
        results["hand-default+compile"] = hand_loop(module, dm, args.steps, max(args.warmup, 3), bf16=bf16,
                                                    channels_last=layout, device=device, compile=True)
    _, _, module = build(overrides)
    results["lightning"] = lightning_run(cfg, module, dm, args.steps, args.warmup)
    for k, v in results.items():
        print(f"{k:>20}: {v:8.1f} images/s  {v * flops / 1e9:7.1f} GFLOP/s")
    print(f"speed-up: {results['lightning'] / results['plain']:.2f}x (lightning default vs plain fp32 loop)")
    print(f"lightning overhead: {results['lightning'] / results['hand-default']:.2f}x of the hand-written loop "
          "with the same precision settings")


if __name__ == "__main__":
    main()
