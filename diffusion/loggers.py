"""Logger factories: Weights & Biases that never prompts or hangs without an account."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """WANDB_MODE if set, else online when logged in and offline otherwise."""
    return os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")


def sweep_identity() -> dict[str, Any]:
    """In a sweep: group = the sweep directory, name = the job's overrides, tags = each override."""
    from hydra.core.hydra_config import HydraConfig

    from diffusion.sweeps import sweep_dir

    if (sweep := sweep_dir()) is None:
        return {}
    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if not o.startswith(("hydra", "logger", "resume"))]
    return {"group": Path(sweep).name, "name": ",".join(overrides) or hc.job.name, "tags": overrides}


def wandb_logger(**kwargs: Any) -> WandbLogger:
    """WandbLogger in `wandb_mode()`; offline runs are synced later with `wandb sync <dir>`."""
    for key, value in sweep_identity().items():
        if not kwargs.get(key):  # explicit settings win
            kwargs[key] = value
    mode = wandb_mode()
    os.environ["WANDB_MODE"] = mode  # also governs runs started by child processes (DDP ranks)
    os.makedirs(kwargs.get("save_dir", "."), exist_ok=True)
    return WandbLogger(offline=mode == "offline", **kwargs)
