"""Hardware detection and the Hydra resolvers the configs use."""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import OmegaConf


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
    """`${cpu_precision:}` for the trainer configs."""
    if not OmegaConf.has_resolver("cpu_precision"):
        OmegaConf.register_new_resolver("cpu_precision", cpu_precision)
