"""Callbacks Lightning does not ship: class-grid samples and loss curves during training, a crash checkpoint that
skips NaNs, the fit's wall time and images/s."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from diffusion.images import grid_image, save_grid
from diffusion.module import DiffusionModule, NonFiniteLossError


def batch_size(batch: Any) -> int:
    """Images in a (x, y) batch, for ThroughputMonitor."""
    return int(batch[0].shape[0])


def rate(images_per_s: float) -> str:
    """An images/s figure as printed: "15,800", "758", "0.287"."""
    return f"{images_per_s:,.0f}" if images_per_s >= 100 else f"{images_per_s:.3g}"


class FitClock(L.Callback):
    """A run's training time and images/s, all ranks: the time of its optimizer steps, from each fit's start to its
    end less the validation loops (which hold the sample grids), summed over the run's attempts (the total travels in
    its checkpoints, so time-boxed slots add up), and, `steady`, this attempt's after its first `warmup_steps`
    (compilation and CUDA-graph capture happen there). The validation time is reported beside it. First in the
    callback list, so that no other callback's end-of-fit work (the final sample grid) counts. `metrics()` after fit."""

    def __init__(self, warmup_steps: int = 20) -> None:
        self.warmup_steps, self.images, self.steps = warmup_steps, 0, 0
        self.start: float | None = None  # this attempt's start (None: not started)
        self.end: float | None = None  # this attempt's end (None: still running)
        self.validation, self.validation_start = 0.0, None
        self.steady_start, self.steady_images, self.steady_validation = None, 0, 0.0
        self.earlier = {"seconds": 0.0, "images": 0, "validation": 0.0}  # the run's attempts before this one

    @staticmethod
    def now(pl_module: L.LightningModule) -> float:
        """The time once the device's queued work is done (a GPU runs ahead of Python)."""
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.images, self.steps, self.steady_start, self.validation = time.perf_counter(), 0, 0, None, 0.0
        self.end = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        images = batch_size(batch) * trainer.world_size
        self.images, self.steps = self.images + images, self.steps + 1
        if self.steady_start is not None:
            self.steady_images += images
        elif self.steps == self.warmup_steps:  # once: the warm-up's device work is not the steady state's
            self.steady_start, self.steady_images, self.steady_validation = self.now(pl_module), 0, self.validation

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.validation_start = self.now(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self.validation_start is not None:
            self.validation += self.now(pl_module) - self.validation_start
            self.validation_start = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = self.now(pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        try:
            self.on_train_end(trainer, pl_module)
        except RuntimeError:  # a device that failed cannot be synchronised: nothing to report
            return
        if trainer.is_global_zero and (m := self.metrics()):  # what the stopped fit reached (e.g. after Ctrl-C)
            steady = f", {rate(m['steady_images_per_s'])} after the warm-up" if "steady_images_per_s" in m else ""
            print(f"stopped at step {trainer.global_step} after {m['fit_seconds']:.0f} s of training steps: "
                  f"{rate(m['fit_images_per_s'])} training images/s{steady}", flush=True)

    def totals(self) -> dict[str, float]:
        """The run's training seconds, images and validation seconds so far, earlier attempts included."""
        end = self.end if self.end is not None else time.perf_counter()
        seconds = 0.0 if self.start is None else end - self.start - self.validation
        return {"seconds": self.earlier["seconds"] + seconds,
                "images": self.earlier["images"] + self.images,
                "validation": self.earlier["validation"] + self.validation}

    def state_dict(self) -> dict[str, float]:
        return self.totals()

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.earlier = {k: state_dict.get(k, 0) for k in self.earlier}

    def metrics(self) -> dict[str, float]:
        """fit_seconds (the optimizer steps' time), fit_images, fit_images_per_s and validation_seconds over the run's
        attempts and, past this attempt's warm-up, its steady_images_per_s; empty if no step ran."""
        total = self.totals()
        if not self.images or self.end is None or total["seconds"] <= 0:
            return {}
        found = {"fit_seconds": round(total["seconds"], 2), "fit_images": total["images"],
                 "fit_images_per_s": round(total["images"] / total["seconds"], 1),
                 "validation_seconds": round(total["validation"], 2)}
        if self.steady_start is not None and self.steady_images and \
                (steady := self.end - self.steady_start - (self.validation - self.steady_validation)) > 0:
            found["steady_images_per_s"] = round(self.steady_images / steady, 1)
        return found


def time_line(metrics: dict[str, Any]) -> str:
    """Where a run's time went, as printed at its end: the training steps' images/s and seconds, then the rest."""
    if "fit_seconds" not in metrics:
        return ""
    besides = [f"{label} {metrics[key]:.0f} s" for key, label in TIME_SPENT if metrics.get(key)]
    return (f": {rate(metrics['fit_images_per_s'])} training images/s over {metrics['fit_seconds']:.0f} s of training "
            "steps" + (f" (besides: {', '.join(besides)})" if besides else ""))


TIME_SPENT = (("validation_seconds", "validation"), ("grid_seconds", "sample grids"), ("eval_seconds", "evaluation"))


class RunTimeLimit(L.Callback):
    """`trainer.max_time` as the limit of this run, not of the runs it resumes: Lightning's Timer would restore the
    time already spent from the checkpoint and stop a resumed run at once, so a time-boxed slot (`trainer.max_time=…
    resume=true`, again and again) could never finish; the restored time is dropped instead."""

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint.get("callbacks", {}).pop(Timer.__qualname__, None)  # Timer's state_key


class InterruptCheckpoint(L.Callback):
    """`interrupted.ckpt` when training dies of an exception (Ctrl-C, OOM, …), but not after a non-finite loss.

    Lightning's OnExceptionCheckpoint saves the same file, but its presence also turns `fit(ckpt_path=None)`
    into an implicit resume from "last", which would surprise sweeps and re-runs in one directory.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Rank 0 writes the file alone: `trainer.save_checkpoint` ends in a barrier, which would deadlock when the
        exception happened on one rank only (the others are then in a collective, or gone)."""
        if isinstance(exception, NonFiniteLossError) or not trainer.is_global_zero:
            return
        try:
            checkpoint = trainer._checkpoint_connector.dump_checkpoint()  # what save_checkpoint writes, sans barrier
        except NonFiniteLossError:
            return  # this rank's weights diverged: keep the last good checkpoint
        trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, self.path)


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt` every N optimizer steps, at the final step and where trainer.max_time stops the fit (Lightning
    alone skips both).

    Lightning writes checkpoints atomically (fsspec transaction), so a crash mid-write leaves the old file intact.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 100) -> None:
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_last=True, save_top_k=0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        step = trainer.global_step  # the final step, or a stop Timer (trainer.max_time) asked for at this one
        if (step == trainer.max_steps or trainer.should_stop) and step != self._last_global_step_saved \
                and not trainer.sanity_checking:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.max_epochs and trainer.current_epoch + 1 >= trainer.max_epochs > 0:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class SampleGrid(L.Callback):
    """Every N epochs and at the end of training: one row per class, fixed noise, saved as PNG and logged.

    Runs in `on_validation_epoch_start`, after the weight-averaging callback (listed before it) has swapped the
    EMA weights in, so grids show the EMA model.
    """

    def __init__(self, every_n_epochs: int = 1, n_per_class: int = 8, seed: int = 0,
                 sampler: Callable | None = None, dirname: str = "samples") -> None:
        self.every_n_epochs, self.n_per_class, self.seed = every_n_epochs, n_per_class, seed
        self.sampler, self.dirname = sampler, dirname
        self.seconds = 0.0  # spent drawing grids in this fit, reported beside the training time

    def make_grid(self, trainer: L.Trainer, module: DiffusionModule, name: str) -> Path:
        start = time.perf_counter()
        try:
            return self._make_grid(trainer, module, name)
        finally:
            self.seconds += time.perf_counter() - start

    def _make_grid(self, trainer: L.Trainer, module: DiffusionModule, name: str) -> Path:
        classes = len(module.hparams.class_names)
        labels = torch.arange(classes).repeat_interleave(self.n_per_class)
        images = module.sample(labels, self.sampler, seed=self.seed)  # same seed: same noise every time
        path = save_grid(images, Path(trainer.default_root_dir) / self.dirname / f"{name}.png", self.n_per_class)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):  # one captioned row per class
                names = list(module.hparams.class_names)
                rows = [np.asarray(grid_image(images[c * self.n_per_class:(c + 1) * self.n_per_class],
                                              self.n_per_class)) for c in range(classes)]
                logger.log_image("samples", rows, step=trainer.global_step, caption=names)
            elif isinstance(logger, TensorBoardLogger):
                pic = torch.from_numpy(np.asarray(grid_image(images, self.n_per_class))).permute(2, 0, 1)
                logger.experiment.add_image("samples", pic, trainer.global_step)
        return path

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != "fit":
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.make_grid(trainer, pl_module, f"epoch{trainer.current_epoch:03d}_step{trainer.global_step:06d}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            path = self.make_grid(trainer, pl_module, "final")
            print(f"sample grid: {path}")


class LossCurves(L.Callback):
    """train/loss (every `log_every_n_steps`, when the loggers read it anyway) and val/loss against the optimizer step,
    as a PNG in the run directory after each validation and at the end; the points live in checkpoints, so a
    resumed run draws its whole curve."""

    def __init__(self, filename: str = "loss_curves.png") -> None:
        self.filename = filename
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        loss = trainer.callback_metrics.get("train/loss_step")
        if loss is not None and trainer.global_step % trainer.log_every_n_steps == 0:
            self.train.append((trainer.global_step, float(loss)))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or loss is None or trainer.state.fn != "fit":
            return
        self.val.append((trainer.global_step, float(loss)))
        self.draw(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer)

    def draw(self, trainer: L.Trainer) -> Path | None:
        """Write the PNG (rank 0, once there is a point)."""
        if not trainer.is_global_zero or not (self.train or self.val):
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for points, label, style in ((self.train, "train/loss", "-"), (self.val, "val/loss", "o-")):
            if points:
                ax.plot(*zip(*points), style, label=label)
        ax.set(xlabel="optimizer step", ylabel="loss", yscale="log")
        ax.legend()
        fig.tight_layout()
        path = Path(trainer.default_root_dir) / self.filename
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train, self.val = [tuple(p) for p in state_dict["train"]], [tuple(p) for p in state_dict["val"]]
