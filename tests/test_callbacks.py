"""The fit's clock (diffusion.callbacks.FitClock) with Lightning's own loop and a clock the test advances."""

from types import SimpleNamespace

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from diffusion import callbacks
from diffusion.callbacks import FitClock

STEP, VALIDATION_BATCH, END_OF_FIT = 1.0, 100.0, 1000.0  # seconds each piece of work takes on the test's clock


class Work(L.Callback):
    """Charges known times to the fake clock: a training step, a validation batch, end-of-fit work (a final grid)."""

    def __init__(self, clock: SimpleNamespace) -> None:
        self.clock = clock

    def on_train_batch_start(self, *args) -> None:  # the step's work, done before any callback sees its end
        self.clock.t += STEP

    def on_validation_batch_end(self, *args) -> None:
        self.clock.t += VALIDATION_BATCH

    def on_train_end(self, *args) -> None:
        self.clock.t += END_OF_FIT


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(clock: SimpleNamespace, tmp_path, max_steps: int, ckpt_path=None, **trainer_options) -> FitClock:
    fit_clock = FitClock(warmup_steps=2)
    trainer = L.Trainer(max_steps=max_steps, callbacks=[fit_clock, Work(clock)], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=tmp_path, num_sanity_val_steps=0, **trainer_options)
    data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=8)  # 8 steps an epoch
    trainer.fit(Tiny(), train_dataloaders=data, val_dataloaders=data, ckpt_path=ckpt_path)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    return fit_clock


def test_the_clock_counts_training_steps_not_validation_or_end_of_fit_work_and_adds_up_over_resumes(
        tmp_path, monkeypatch):
    clock = SimpleNamespace(t=0.0)
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(perf_counter=lambda: clock.t))
    first = fit(clock, tmp_path, 6, val_check_interval=3, limit_val_batches=2)  # validation after steps 3 and 6
    assert first.metrics() == {"fit_seconds": 6 * STEP, "fit_images": 48, "fit_images_per_s": 8.0,
                               "validation_seconds": 2 * 2 * VALIDATION_BATCH,
                               "steady_images_per_s": 8.0}  # steps 3-6: 32 images in 4 s

    resumed = fit(clock, tmp_path, 9, ckpt_path=tmp_path / "last.ckpt", limit_val_batches=0)  # 3 more steps
    assert resumed.metrics()["fit_seconds"] == 9 * STEP and resumed.metrics()["fit_images"] == 72
    assert resumed.metrics()["validation_seconds"] == 400 and resumed.metrics()["fit_images_per_s"] == 8.0
    assert "steady_images_per_s" in resumed.metrics()  # this attempt's own, past its warm-up


def test_the_end_of_run_line_puts_the_other_work_beside_the_training_time():
    from diffusion.callbacks import time_line

    line = time_line({"fit_seconds": 1720.4, "fit_images_per_s": 93.0, "validation_seconds": 41.0,
                      "grid_seconds": 490.2, "eval_seconds": 0.0})
    assert line == (": 93 training images/s over 1720 s of training steps "
                    "(besides: validation 41 s, sample grids 490 s)")
    assert time_line({}) == ""
