"""Sample and score: the one path from a model to metrics.json.

`train.py`'s end-of-run evaluation, `sample.py … evaluate=true` and the benchmarks come through here, with the
settings of the `eval` config group (conf/eval/default.yaml). For each ω and each sample seed: every rank makes its
share of the images (image i on rank i mod world, seeded by (seed, i)), rank 0 gathers and scores them all, so the
numbers never depend on the world size; images stay in memory and reach disk only through `keep`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from diffusion.checks import PUBLISHED, ConfigError, check_inception, check_steps
from diffusion.clip_eval import PROMPTS
from diffusion.distributed import gather_shares
from diffusion.evaluation import evaluate, run_metadata
from diffusion.generate import balanced_labels, generate
from diffusion.published import paper_scores
from diffusion.records import format_table, logger_scalars, summarize_seeds, write_metrics
from diffusion.runs import METRICS
from diffusion.runtime import data_root, sampler_options
from diffusion.samplers import check_sampler


@dataclass(frozen=True)
class EvalSettings:
    """How samples are scored: the `eval` config group less what to sample (conf/eval/default.yaml)."""

    batch_size: int = 500
    inception: bool | str = False  # true | false | "published": only where the seed paper has a figure
    inception_weights: str | None = None
    clip: str | None = None
    clip_prompts: tuple[str, ...] = PROMPTS

    @classmethod
    def of(cls, eval_cfg: Any) -> EvalSettings:
        """From a composed `eval` config."""
        return cls(batch_size=int(eval_cfg.batch_size), inception=check_inception(eval_cfg.inception),
                   inception_weights=eval_cfg.inception_weights, clip=eval_cfg.get("clip"),
                   clip_prompts=tuple(eval_cfg.get("clip_prompts") or PROMPTS))

    def wants_inception(self, module: Any, guidance: float | None) -> bool:
        """Whether samples of `module` at ω get the standard FID: always, never, or ("published") where the seed paper
        reports one for the model's data, schedule and T at that ω."""
        if self.inception != PUBLISHED:
            return bool(self.inception)
        schedule = module.schedule
        return paper_scores(module.data_spec.name, schedule.kind, schedule.timesteps, guidance) is not None


def score_images(module: Any, images: Tensor, labels: Tensor, settings: EvalSettings = EvalSettings(),
                 device: torch.device | None = None, root: str | Path | None = None,
                 guidance: float | None = None) -> dict[str, Any]:
    """Metrics of uint8 images (N, C, H, W) made by `module` for `labels` at ω = `guidance`: the evaluator's FID / IS /
    class accuracy, the standard FID if asked (eval.inception) and CLIP's view if asked (eval.clip); data and
    evaluators under `root` (default: the data root)."""
    spec, device = module.data_spec, device or module.device
    m = evaluate(images, labels, spec, root or data_root(), settings.wants_inception(module, guidance),
                 settings.inception_weights, settings.batch_size, device=device)
    if settings.clip:  # opt-in: CLIP's view of the samples (the seed report's prompts by default)
        from diffusion.clip_eval import clip_evaluate, load_clip
        from diffusion.evaluation import crop_padding

        model, processor = load_clip(str(settings.clip), str(device))
        m["clip"] = clip = clip_evaluate(crop_padding(images, spec), labels, spec.classes, model, processor,
                                         list(settings.clip_prompts), settings.batch_size)
        print("CLIP: " + "; ".join(f"{p!r}: score {clip[p]['clip_score']:.2f}, {clip[p]['percent']:.1f}%, zero-shot "
                                   f"accuracy {clip[p]['zero_shot_accuracy']:.3f}" for p in clip["prompts"]))
    return m


def folder(out: Path, guidance: float | None = None, seed: int | None = None, evaluation: str | None = None) -> Path:
    """Where one evaluation's metrics.json goes: eval/guidance=<ω>/ when ω is swept, eval/<evaluation>/guidance=<ω>/
    for a named evaluation (eval.samplers), seed=<s>/ when seeds are."""
    if evaluation is not None:
        out = out / "eval" / evaluation / f"guidance={guidance}"
    elif guidance is not None:
        out = out / "eval" / f"guidance={guidance}"
    return out if seed is None else out / f"seed={seed}"


def sample_and_score(module: Any, sampler_cfg: Any, num_samples: int, guidances: Sequence[float],
                     seeds: Sequence[int], settings: EvalSettings, out: Path, *, batch_size: int, rank: int = 0,
                     world: int = 1, device: torch.device | None = None, sweep: bool = False,
                     step: int | None = None, classes: Sequence[int] | None = None,
                     keep: Callable[[Path, Tensor, Tensor], Any] | None = None, callback: Any = None,
                     root: str | Path | None = None, evaluation: str | None = None,
                     **extra: Any) -> dict[float, dict[str, Any]]:
    """`num_samples` class-balanced samples per (ω, seed), scored; metrics.json per (ω, seed) and, over several
    seeds, their mean ± std per ω. `sweep` puts each ω in its own folder, `evaluation` (a name of eval.samplers) each
    ω in that evaluation's folder (`folder`); `classes` restricts the labels (default: all, balanced);
    `keep(folder, images, labels)` may write the images; `callback` sees every sampler step; `root` is the data
    root; `extra` goes into every metrics.json. Returns {ω: metrics} on rank 0, {} on the others."""
    device = device or module.device
    sweep = sweep or evaluation is not None
    if evaluation is not None:
        extra["evaluation"] = evaluation
    sampler = instantiate(sampler_cfg)
    labels = balanced_labels(num_samples, list(classes or range(len(module.hparams.class_names))))
    mine = list(range(rank, num_samples, world))
    step = module.checkpoint_step if step is None else step
    results: dict[float, dict[str, Any]] = {}
    for w in guidances:
        runs = []
        for seed in seeds:
            desc = f"samples (ω={w}, seed {seed})" if rank == 0 else None
            share = generate(module, labels[mine], mine, batch_size, sampler, w, seed, desc=desc, callback=callback)
            images = gather_shares(share, num_samples, world, device)
            if rank != 0:
                continue
            where = folder(out, w if sweep else None, seed if len(seeds) > 1 else None, evaluation)
            where.mkdir(parents=True, exist_ok=True)
            if keep is not None:
                keep(where, images, labels)
            runs.append(score_and_record(module, images, labels, settings, where, sampler_cfg=sampler_cfg, step=step,
                                         guidance=w, seed=seed, device=device, root=root, **extra))
        if runs:
            results[w] = runs[0] if len(runs) == 1 else summarize_seeds(runs)
            if len(runs) > 1:
                print(results[w]["summary"])
                where = folder(out, w if sweep else None, evaluation=evaluation)
                print(write_metrics(results[w], where / METRICS))
    return results


def score_and_record(module: Any, images: Tensor, labels: Tensor, settings: EvalSettings, where: Path, *,
                     sampler_cfg: Any, step: int | None, guidance: float, seed: int,
                     device: torch.device | None = None, root: str | Path | None = None,
                     **extra: Any) -> dict[str, Any]:
    """Score one set of samples and record it: metrics.json in `where` (what made them included), a printed table."""
    m = score_images(module, images, labels, settings, device, root, guidance)
    m.update(run_metadata(module.schedule, sampler_cfg, step, guidance), seed=seed, **extra)
    print(f"ω = {guidance}, sample seed {seed}: " + format_table(m, list(module.hparams.class_names)))
    print(write_metrics(m, where / METRICS))
    return m


# The end-of-run evaluation of train.py: what it samples with (named evaluations), checked before training

def named_evaluations(cfg: DictConfig) -> dict[str, DictConfig]:
    """eval.samplers: {name: sampler config}, each an evaluation of its own (eval.samplers.<name>=null drops one);
    empty: the run's own sampler."""
    samplers = cfg.eval.get("samplers")
    if samplers is None:
        return {}
    if not OmegaConf.is_dict(samplers):
        raise ConfigError(f"eval.samplers must map names to samplers, e.g. +sampler@eval.samplers.fast=dpm_solver; "
                          f"got {samplers!r}")
    return {name: sampler for name, sampler in samplers.items() if sampler is not None}  # null: dropped


def evaluation_samplers(cfg: DictConfig) -> dict[str | None, DictConfig]:
    """What the end-of-run evaluation samples with: each named evaluation, else the run's sampler (name None), with
    at most eval.max_sampler_steps steps."""
    samplers = named_evaluations(cfg) or {None: cfg.sampler}
    cap = cfg.eval.get("max_sampler_steps")
    if cap is None:
        return samplers
    capped = {}
    for name, sampler in samplers.items():
        capped[name] = sampler.copy()
        if sampler.get("steps") is None or sampler.steps > cap:
            capped[name].steps = cap
    return capped


def check_evaluation(name: str, sampler: Any, timesteps: int) -> None:
    """One named evaluation: a folder-safe name and a sampler of conf/sampler/ with valid steps."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", str(name)):  # a folder under eval/: never "." or ".."
        raise ConfigError(f"eval.samplers: {name!r} is not a usable name (letters, digits, '_', '-', '.', not "
                          "starting with '.' or '-')")
    if not OmegaConf.is_dict(sampler) or not sampler.get("_target_"):
        raise ConfigError(f"eval.samplers.{name} names no sampler; add one with +sampler@eval.samplers.{name}=NAME "
                          f"({', '.join(sampler_options())})")
    check_sampler(sampler, key=f"eval.samplers.{name}")
    if sampler.get("steps") is not None:
        check_steps(sampler.steps, timesteps, key=f"eval.samplers.{name}.steps", of="timesteps")


def evaluate_run(cfg: DictConfig, module: Any, trainer: Any, run_dir: Path) -> dict[str, Any]:
    """Score eval.num_samples samples per evaluated ω (diffusion.scoring), with the run's sampler or with each named
    one of eval.samplers -> metrics.json, loggers, a printed table.

    Runs on the trainer's root device (Lightning has moved the module back to the CPU after fit), every rank making
    its share of the images.
    """
    from diffusion.loggers import WandbRunLogger

    device = trainer.strategy.root_device
    module.to(device)
    sweep = cfg.eval.guidance is not None
    guidances = list(cfg.eval.guidance) if sweep else [cfg.guidance]
    scalars, by_name = {}, {}
    for name, sampler in evaluation_samplers(cfg).items():
        if name is not None and trainer.is_global_zero:
            print(f"evaluation {name!r}: {', '.join(f'{k}={v}' for k, v in sampler.items() if k != '_partial_')}")
        results = sample_and_score(module, sampler, cfg.eval.num_samples, guidances, [cfg.seed],
                                   EvalSettings.of(cfg.eval), run_dir, batch_size=cfg.eval.batch_size,
                                   rank=trainer.global_rank, world=trainer.world_size, device=device, sweep=sweep,
                                   step=getattr(module, "checkpoint_step", None) or trainer.global_step,
                                   root=cfg.data.root, evaluation=name)
        scalars.update({k: v for w, m in results.items()
                        for k, v in logger_scalars(m, name, w if sweep or name else None).items()})
        by_name[name] = results
    for logger in trainer.loggers:
        if isinstance(logger, WandbRunLogger):  # the scalars, and the results as tables and plots (diffusion.loggers)
            logger.log_metrics(scalars, step=logger.final_step(trainer.global_step))
            if trainer.is_global_zero:
                logger.log_evaluation(by_name, module.hparams.class_names, cfg.guidance, trainer.global_step)
        else:
            logger.log_metrics(scalars, step=trainer.global_step)
        logger.save()
    return scalars
