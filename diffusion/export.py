"""`python -m diffusion.export ckpt_path=… out=…`: any run's weights as a shareable `.safetensors` file."""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from diffusion.checks import check_choice, check_guidance, check_steps

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def export(cfg: DictConfig) -> Path:
    """Load `ckpt_path` without running code, optionally set its default ω and sampler, write the safetensors file."""
    from diffusion.checkpoint import export_safetensors, load_module
    from diffusion.samplers import describe_sampler

    if not cfg.ckpt_path:
        raise ValueError("ckpt_path is required, e.g. python -m diffusion.export "
                         "ckpt_path=outputs/<run>/checkpoints/last.ckpt out=model.safetensors")
    check_choice(cfg.dtype, DTYPES, "dtype")
    if cfg.guidance is not None:
        check_guidance(cfg.guidance, "guidance", minimum=-1)
    module = load_module(cfg.ckpt_path, cfg.weights)
    if cfg.guidance is not None:
        module.hparams.guidance = float(cfg.guidance)
    if cfg.get("sampler") is not None:  # the model's own sampler from now on
        if cfg.sampler.get("steps") is not None:
            check_steps(cfg.sampler.steps, module.schedule.timesteps, key="sampler.steps", of="the model's T")
        module.hparams.sampler = OmegaConf.to_container(cfg.sampler, resolve=True)
    out = Path(cfg.out or Path(cfg.ckpt_path).with_suffix(".safetensors"))
    if out.resolve() == Path(cfg.ckpt_path).resolve():
        raise ValueError(f"out={out} is the checkpoint itself; give another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    path = export_safetensors(module, out, DTYPES[cfg.dtype])
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB, step {module.checkpoint_step}, ω = {module.hparams.guidance}, "
          f"sampler {describe_sampler(module.hparams.sampler)})")
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    from diffusion.cli import run_cli

    run_cli(export, cfg, None)  # not a run: no status.json


if __name__ == "__main__":
    main()
