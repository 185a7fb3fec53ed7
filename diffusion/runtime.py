"""Where things are (config folder, data root), hardware detection, and the Hydra resolvers the configs use."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
DATA_ENV = "DIFFUSION_DATA"  # the data root: this variable if set, else ./data


def data_root() -> str:
    """The data folder every entry point uses (configs read it as `${data_root:}`)."""
    return os.environ.get(DATA_ENV, "data")


def config_options(group: str) -> list[str]:
    """The options of a config group, e.g. config_options("sampler") -> ["ddim", "ddpm", "dpm_solver"]."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def config_option(group: str, name: str) -> DictConfig:
    """One option's YAML, e.g. config_option("sampler", "ddim"), as the CLIs would compose it."""
    if name not in config_options(group):
        raise ValueError(f"{group} must be one of {', '.join(config_options(group))}; got {name!r}")
    return OmegaConf.load(CONF_DIR / group / f"{name}.yaml")


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_precision() -> str:
    """Lightning precision for CPU training: bf16-mixed where the CPU supports it, else 32-true."""
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


def register_resolvers() -> None:
    """`${cpu_precision:}` for the trainer configs, `${data_root:}` for the data configs."""
    for name, fn in (("cpu_precision", cpu_precision), ("data_root", data_root)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
