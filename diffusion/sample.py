"""What `sample.py` does: pick and load the model, check the options, then write the mode's files
(diffusion.modes) or sample and score them (diffusion.scoring)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from torch import Tensor

from diffusion.checkpoint import (DEFAULT_PRETRAINED, RUN_ROOTS, load_module, own_sampler, pretrained_path,
                                 run_models, shipped_models, shown)
from diffusion.checks import check_guidance, check_inception, check_seed, check_steps
from diffusion.files import file_digest
from diffusion.module import DiffusionModule
from diffusion.modes import (MODES, Sampling, from_pixels, interactive, merged_shards, pixels,
                            save_npz, save_pngs)
from diffusion.prompts import parse_prompt
from diffusion.runs import METRICS
from diffusion.runtime import data_root, resolve_device
from diffusion.samplers import check_sampler, describe_sampler, sampler_name


def default_model(roots: tuple[str, ...] = RUN_ROOTS, raw: bool = False) -> tuple[Path, str]:
    """The model to use when none is named: the newest model file of a run (checkpoint.run_models; a .ckpt for the
    `raw` weights, which only a checkpoint holds), else the shipped MNIST model; with the line that says which."""
    runs = [p for p in run_models(roots) if not raw or p.suffix == ".ckpt"]
    if runs:
        return runs[0], f"using the newest checkpoint: {runs[0]}"
    where = " or ".join(f"{root}/" for root in roots)
    if DEFAULT_PRETRAINED not in shipped_models():
        raise FileNotFoundError(f"no checkpoint under {where}; train one with `make train` (or `python train.py`) "
                                "or pass ckpt_path=...")
    path = pretrained_path(DEFAULT_PRETRAINED)
    return path, f"no checkpoint under {where}: using the shipped pretrained model {shown(path)} (train your own " \
                 "with `make train`)"


def model_path(cfg: DictConfig) -> Path:
    """The checkpoint `sample.py` loads: `ckpt_path`, the shipped model `pretrained`, or the default one."""
    if cfg.ckpt_path and cfg.pretrained:
        raise ValueError("give ckpt_path or pretrained, not both")
    if cfg.pretrained:
        return pretrained_path(str(cfg.pretrained))
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path)
    path, message = default_model(raw=cfg.weights == "raw")
    print(message)
    return path


def pick_sampler(cfg: DictConfig, module: DiffusionModule) -> str:
    """Set cfg.sampler to what this call samples with and return the line that says which: a named one
    (`sampler=NAME`), or `sampler=own` (the default): the model's own (checkpoint.own_sampler) with the keys set on
    the command line (sampler.steps=20, …) on top."""
    if cfg.sampler.get("_target_"):
        return f"sampler: {describe_sampler(cfg.sampler)}"
    own = own_sampler(module)
    for key, value in cfg.sampler.items():
        if key == "_target_" or value is None:
            continue
        if key not in own:
            raise ValueError(f"sampler.{key} is not an option of this model's own sampler "
                             f"({sampler_name(own._target_)}); name one: sampler=NAME sampler.{key}={value}")
        own[key] = value
    cfg.sampler = own
    return f"sampler: {describe_sampler(own)} (the model's own; sampler=NAME for another)"


def check_options(cfg: DictConfig, module: DiffusionModule) -> None:
    """One clear line for each invalid option, before any sampling."""
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {cfg.mode!r}")
    if cfg.guidance is not None:
        check_guidance(cfg.guidance, "guidance", minimum=-1)
    check_seed(cfg.seed, "sample")
    check_sampler(cfg.sampler)
    check_inception(cfg.eval.inception)
    if cfg.sampler.get("steps") is not None:
        check_steps(cfg.sampler.steps, module.schedule.timesteps)
    if cfg.repeats != 1 and not cfg.evaluate:
        raise ValueError("repeats needs mode=bulk evaluate=true (it repeats the evaluation with other seeds)")
    for key in ("num_samples", "batch_size", "n_per_class", "n_progression", "repeats"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{key} must be a positive integer, got {cfg[key]!r}")
    if cfg.prompt is not None:
        parse_prompt(cfg.prompt, module.hparams.class_names)
    check_shards(cfg)
    if cfg.evaluate:
        from diffusion.classifier import load_classifier

        if cfg.mode not in ("bulk", "merge"):
            raise ValueError("evaluate=true needs mode=bulk or mode=merge (it scores the bulk samples)")
        load_classifier(data_root(), module.data_spec.name)
        if cfg.eval.clip:
            from diffusion.clip_eval import load_clip

            load_clip(str(cfg.eval.clip), str(module.device))  # fails here, before any sampling
    elif cfg.eval.clip:
        raise ValueError("eval.clip needs mode=bulk evaluate=true (it scores the bulk samples)")
    loggers = [k for k, v in (cfg.get("logger") or {}).items() if v is not None]
    if loggers and (loggers != ["wandb"] or not cfg.evaluate):
        raise ValueError("sample.py logs its evaluation to W&B: logger=wandb with mode=bulk evaluate=true "
                         f"(got logger={','.join(loggers)}{'' if cfg.evaluate else ' without evaluate=true'})")


def check_shards(cfg: DictConfig) -> None:
    """shard=[start, stop) within num_samples for mode=bulk, not evaluated alone; shards=[...] for mode=merge."""
    if cfg.shard is not None:
        shard = list(cfg.shard)
        if cfg.mode != "bulk" or len(shard) != 2 or not all(isinstance(v, int) for v in shard) \
                or not 0 <= shard[0] < shard[1] <= cfg.num_samples:
            raise ValueError(f"shard must be [start, stop) with 0 ≤ start < stop ≤ num_samples ({cfg.num_samples}) "
                             f"and mode=bulk; got {shard}")
        if cfg.evaluate or cfg.repeats != 1:
            raise ValueError("a shard is scored once merged: mode=merge shards=[...] evaluate=true")
    if (cfg.mode == "merge") != bool(cfg.shards):
        raise ValueError("mode=merge needs shards=[folder, ...] (the shards of one bulk run), and only it takes them")


def evaluate_merged(s: Sampling, path: Path, out: Path) -> list[Path]:
    """mode=merge evaluate=true: the merged shards scored exactly as one bulk run's samples (diffusion.scoring)."""
    import torch

    from diffusion.scoring import EvalSettings, score_and_record

    images, labels = merged_shards(s)
    save_npz(out / "samples.npz", images, labels, None, s.made_by())
    score_and_record(s.module, from_pixels(images), torch.from_numpy(labels), EvalSettings.of(s.cfg.eval), out,
                     sampler_cfg=s.cfg.sampler, step=s.module.checkpoint_step, guidance=s.guidance, seed=s.cfg.seed,
                     checkpoint=str(path), shards=len(s.cfg.shards))
    return [out / METRICS]


def evaluate_bulk(s: Sampling, path: Path, out: Path) -> list[Path]:
    """mode=bulk evaluate=true: num_samples images per sample seed (seed … seed+repeats−1; several into seed=<s>/),
    each set kept as samples.npz (and PNGs with png_dir) and scored through diffusion.scoring; with several seeds,
    metrics.json holds their mean ± std (the seed paper repeats its FID 5 times: Table 1)."""
    from diffusion.scoring import EvalSettings, sample_and_score

    def keep(folder: Path, images: Tensor, labels: Tensor) -> None:
        save_npz(folder / "samples.npz", pixels(images), labels.numpy())
        if s.cfg.png_dir:
            save_pngs(folder / "png", pixels(images), labels, list(range(len(images))))

    cfg = s.cfg
    sample_and_score(s.module, cfg.sampler, cfg.num_samples, [s.guidance], range(cfg.seed, cfg.seed + cfg.repeats),
                     EvalSettings.of(cfg.eval), out, batch_size=cfg.batch_size, classes=s.classes(), keep=keep,
                     callback=s.hook(), checkpoint=str(path))
    return [out / METRICS]


def run(cfg: DictConfig) -> list[Path]:
    """The whole of sample.py: pick and load the checkpoint, check options, write the mode's files."""
    device = resolve_device(cfg.device)
    path = model_path(cfg)
    module = load_module(path, cfg.weights, device)
    print(pick_sampler(cfg, module))
    check_options(cfg, module)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = Sampling(module, cfg, model_id=file_digest(path))
    if cfg.interactive:
        interactive(s, out)
        written = []
    elif cfg.evaluate:
        written = (evaluate_merged if cfg.mode == "merge" else evaluate_bulk)(s, path, out)
    else:
        written = MODES[cfg.mode](s, out)
        for p in written:
            print(p)
    if cfg.evaluate and (cfg.get("logger") or {}).get("wandb") is not None:
        log_evaluation_run(cfg, path, module, out)
    if s.tracer and s.tracer.rows:
        print(s.tracer.write(out / "trace.csv"))
    return written


def log_evaluation_run(cfg: DictConfig, path: Path, module: DiffusionModule, out: Path) -> None:
    """logger=wandb: the evaluation as a job_type=eval W&B run in the group of the run the model came from (a
    shipped model: pretrained/<name>), its metrics in the summary, linked to that run's model artifact (online; the
    artifact's name is in the config either way)."""
    import wandb
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from diffusion.loggers import WandbIdentity, hydra_choices, wandb_config
    from diffusion.records import read_metrics
    from diffusion.runs import run_dir_of

    source = WandbIdentity.read_only(run_dir_of(path))
    made_by = f"pretrained/{cfg.pretrained}" if cfg.pretrained else run_dir_of(path).name
    logger = instantiate(cfg.logger.wandb, save_dir=str(out), job_type="eval", default_name=f"eval {made_by}",
                         group=cfg.logger.wandb.get("group") or source.get("group") or source.get("name") or made_by)
    m = read_metrics(out / METRICS)
    artifact = f"{source.get('artifact')}:latest" if source.get("artifact") else None
    params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
              for k, v in cfg.items() if k != "logger"}
    made = {k: m.get(k) for k in ("data", "schedule", "timesteps", "guidance", "sampler", "sampler_steps", "step")}
    logger.experiment.config.update({**wandb_config(params, hydra_choices()),
                                     "model": {**made, "file": str(path), "artifact": artifact}},
                                    allow_val_change=True)
    try:
        if artifact and not logger.experiment.offline:
            logger.experiment.use_artifact(artifact)
        logger.log_evaluation({None: {m["guidance"]: m}}, module.hparams.class_names, m["guidance"],
                              int(m.get("step") or 0))
    finally:
        wandb.finish()
