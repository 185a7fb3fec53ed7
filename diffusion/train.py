"""The training recipe: validate → seed → data → model → callbacks → loggers → trainer → fit."""

from __future__ import annotations

import math
import re
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ThroughputMonitor, Timer
from omegaconf import DictConfig, OmegaConf

from diffusion.callbacks import FitClock, RunTimeLimit, SampleGrid, time_line
from diffusion.checkpoint import SafeCheckpointIO, export_safetensors, final_is_best, read_checkpoint, use_best_weights
from diffusion.checks import (ConfigError, check_choice, check_guidance, check_inception, check_positive, check_seed,
                              check_steps)
from diffusion.distributed import is_rank_zero, wait_for_ranks
from diffusion.loggers import finish_wandb, record_to_wandb
from diffusion.runs import CHECKPOINTS, LAST, WEIGHTS, Interrupted, Resume, started, write_run_files
from diffusion.runtime import configure_cuda, device_line, sampler_options, uses_cuda
from diffusion.samplers import check_sampler
from diffusion.scoring import check_evaluation, evaluate_run, named_evaluations
from diffusion.sweeps import (earlier_attempt, in_multirun, job_device, run_point, runs_as_own_command,
                             sweep_launch_error, sweep_launcher)


def check_config(cfg: DictConfig) -> None:
    """Reject invalid values with one clear line before anything heavy starts."""
    T = cfg.timesteps
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ConfigError(f"timesteps must be a positive integer, got {T!r}")
    check_guidance(cfg.guidance, "guidance", minimum=0)
    if not cfg.sampler.get("_target_"):
        raise ConfigError("sampler=own is sample.py's (a model's own sampler); a run names the one it samples with: "
                          f"sampler={', '.join(sampler_options())}")
    check_sampler(cfg.sampler)
    if cfg.sampler.get("steps") is not None:
        check_steps(cfg.sampler.steps, T, of="timesteps")
    for name, sampler in named_evaluations(cfg).items():
        check_evaluation(name, sampler, T)
    if cfg.eval.get("max_sampler_steps") is not None:
        check_steps(cfg.eval.max_sampler_steps, T, key="eval.max_sampler_steps", of="timesteps")
    check_seed(cfg.seed, "train")
    if "lr" in cfg.optim:
        check_positive(cfg.optim.lr, "optim.lr")
    max_steps, max_epochs = cfg.trainer.get("max_steps", -1), cfg.trainer.get("max_epochs", -1)
    if not isinstance(max_steps, int) or not (max_steps >= 1 or (max_steps == -1 and (max_epochs or 0) >= 1)):
        raise ConfigError(f"trainer.max_steps must be an integer ≥ 1 (or -1 with trainer.max_epochs ≥ 1), "
                          f"got {max_steps!r}")
    max_time = cfg.trainer.get("max_time")
    if max_time is not None and not valid_duration(str(max_time)):
        raise ConfigError(f"trainer.max_time must be DD:HH:MM:SS of at most {MAX_DAYS:,} days, e.g. 00:03:50:00, "
                          f"got {max_time!r}")
    if not isinstance(cfg.resume, bool):
        raise ConfigError(f"resume must be true or false, got {cfg.resume!r}")
    if cfg.resume and cfg.ckpt_path is not None:
        raise ConfigError(f"resume=true finds the run directory's own {CHECKPOINTS}/{LAST}; drop ckpt_path=...")
    if cfg.ckpt_path is not None:
        if not Path(cfg.ckpt_path).exists():
            raise ConfigError(f"ckpt_path {cfg.ckpt_path} does not exist")
        read_checkpoint(cfg.ckpt_path)  # one line for a file that is not a checkpoint of this project
    check_choice(cfg.eval.get("weights", "last"), ("last", "best"), "eval.weights")
    if cfg.eval.get("weights") == "best" and not (cfg.callbacks or {}).get("best_checkpoint"):
        raise ConfigError("eval.weights=best needs callbacks.best_checkpoint (the best validation loss's checkpoint)")
    if not isinstance(cfg.eval.num_samples, int) or cfg.eval.num_samples < 0:
        raise ConfigError(f"eval.num_samples must be an integer ≥ 0, got {cfg.eval.num_samples!r}")
    check_inception(cfg.eval.inception)
    for w in [] if cfg.eval.guidance is None else cfg.eval.guidance:
        check_guidance(w, "eval.guidance", minimum=-1)
    accelerator = cfg.trainer.get("accelerator", "cpu")
    if uses_cuda(accelerator) and not torch.cuda.is_available():  # "auto" falls back to the CPU instead
        raise ConfigError(f"trainer.accelerator={accelerator} needs a CUDA GPU and none is visible here; "
                          "use trainer=cpu")
    launcher = sweep_launcher()
    if launcher is not None and (error := sweep_launch_error(cfg.trainer, launcher)):
        raise ConfigError(error)


MAX_DAYS = 99_999  # a time box far beyond any run, and far inside what a timedelta holds


def valid_duration(text: str) -> bool:
    """DD:HH:MM:SS with hours < 24, minutes and seconds < 60, at most MAX_DAYS days (Lightning's Timer format)."""
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", text)
    return bool(match) and int(match[1]) <= MAX_DAYS and int(match[2]) < 24 and int(match[3]) < 60 \
        and int(match[4]) < 60


def stopped_short(trainer: L.Trainer) -> str | None:
    """Why a fit ended before its steps (or epochs) because trainer.max_time ran out, even before its first step;
    else None (finished)."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is None or remaining > 0:
        return None
    if trainer.max_steps > 0 and trainer.global_step < trainer.max_steps:
        return f"stopped by trainer.max_time at step {trainer.global_step} of {trainer.max_steps}"
    if trainer.max_steps <= 0 and trainer.current_epoch < trainer.max_epochs:
        return f"stopped by trainer.max_time in epoch {trainer.current_epoch} of {trainer.max_epochs}"
    return None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one model as configured; returns the final logged metrics."""
    from hydra.core.hydra_config import HydraConfig

    check_config(cfg)
    if cfg.resume and in_multirun() and not started(cfg.run_dir) \
            and (other := earlier_attempt(HydraConfig.get())) is not None:
        print(f"resume: {cfg.run_dir} starts from step 0 beside {other}, an unfinished run of the same settings in a "
              f"directory named otherwise (by an earlier version); to continue that one, move it to {cfg.run_dir} "
              "and run this again")
    if runs_as_own_command(cfg.trainer, in_multirun()):
        return run_point(HydraConfig.get())
    if cfg.resume:
        found = Resume.of(cfg.run_dir)
        if found.finished is not None:
            print(f"resume: {cfg.run_dir} finished earlier (status.json ok); skipped")
            return found.finished
        if found.checkpoint is not None:
            cfg.ckpt_path = str(found.checkpoint)
            print(f"resume: continuing {cfg.run_dir} from {found.checkpoint}")
    with ExitStack() as stack:
        return _train(cfg, job_device(cfg, stack))


def _train(cfg: DictConfig, trainer_overrides: dict[str, Any]) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    # the module checks its own options (loss, prediction, p_uncond, …): one line before any data work
    module = instantiate(cfg.module, class_names=datamodule.class_names, data_name=datamodule.name,
                         data=datamodule.spec.as_dict())
    datamodule.prepare_data()
    if cfg.eval.num_samples:
        from diffusion.classifier import load_classifier

        load_classifier(cfg.data.root, datamodule.name)  # fail now, not after training
        if cfg.eval.get("clip"):
            from diffusion.clip_eval import load_clip

            load_clip(str(cfg.eval.clip))  # the same: missing transformers or weights get their line before training
    run_dir = Path(cfg.run_dir)
    total = write_run_files(cfg, module, run_dir)
    if is_rank_zero():
        print(f"model: {total:,} trainable parameters (table in {run_dir / 'params.md'})")
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None] if cfg.logger else []
    clock = FitClock()
    callbacks = [clock, *[instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None], RunTimeLimit()]
    if not loggers:  # these only feed loggers, and LearningRateMonitor refuses to run without one
        callbacks = [c for c in callbacks if not isinstance(c, (LearningRateMonitor, ThroughputMonitor))]
    plugins = [*(cfg.trainer.get("plugins") or []), SafeCheckpointIO()]  # atomic writes, reads that run no code
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins,
                                     **trainer_overrides)
    if trainer.is_global_zero:
        print(f"device: {device_line(trainer.strategy.root_device, trainer.world_size, str(trainer.precision))}")
    if trainer.strategy.root_device.type == "cuda":
        configure_cuda()
    try:
        for logger in loggers:  # the run's whole config (W&B: nested, as its Hydra integration shows it)
            getattr(logger, "log_config", logger.log_hyperparams)(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        metrics["global_step"], metrics["world_size"] = trainer.global_step, trainer.world_size
        metrics.update(clock.metrics())
        grids = [c for c in callbacks if isinstance(c, SampleGrid)]
        if grids:
            metrics["grid_seconds"] = round(sum(g.seconds for g in grids), 2)
        if reason := stopped_short(trainer):  # a time-boxed slot: the next resume=true continues from last.ckpt
            if trainer.is_global_zero:
                print(f"{reason}; recorded as interrupted: the same command with resume=true continues it")
            wait_for_ranks(trainer)
            return Interrupted(metrics, reason)
        best = cfg.eval.get("weights") == "best" and use_best_weights(module, trainer)
        if trainer.is_global_zero:  # the EMA weights (swapped in after fit) as a file anyone can load safely
            print(f"weights: {export_safetensors(module, run_dir / WEIGHTS)}")
        if cfg.eval.num_samples:
            start = time.perf_counter()
            metrics.update(evaluate_run(cfg, module, trainer, run_dir))
            metrics["eval_seconds"] = round(time.perf_counter() - start, 2)
        if trainer.is_global_zero:
            record_to_wandb(trainer, run_dir, metrics, best or final_is_best(trainer))
        wait_for_ranks(trainer)
    finally:
        finish_wandb(loggers)
    if trainer.is_global_zero:
        print(f"finished at step {trainer.global_step}{time_line(metrics)}; run directory: {run_dir}")
    return metrics


def objective(metrics: dict[str, Any], key: str = "val/loss") -> float:
    """The number a Hydra sweeper minimises (NaN when missing)."""
    return float(metrics.get(key, math.nan))
