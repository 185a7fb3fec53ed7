"""Where things are (config folder, data root), hardware rules (device, precision, layout), and the Hydra resolvers."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
DATA_ENV = "DIFFUSION_DATA"  # the data root: this variable if set, else ./data


def data_root() -> str:
    """The data folder every entry point uses (configs read it as `${data_root:}`)."""
    return os.environ.get(DATA_ENV, "data")


def config_options(group: str) -> list[str]:
    """The options of a config group, e.g. config_options("sampler") -> ["ddim", "ddpm", "dpm_solver"]."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def sampler_options() -> list[str]:
    """The samplers of conf/sampler/ (not `own`, sample.py's stand-in for a model's own sampler)."""
    return [name for name in config_options("sampler") if config_option("sampler", name).get("_target_")]


def config_option(group: str, name: str) -> DictConfig:
    """One option's YAML, e.g. config_option("sampler", "ddim"), as the CLIs would compose it."""
    if name not in config_options(group):
        raise ValueError(f"{group} must be one of {', '.join(config_options(group))}; got {name!r}")
    return OmegaConf.load(CONF_DIR / group / f"{name}.yaml")


CPU_BF16_ENV = "DIFFUSION_CPU_BF16"  # 1 / 0 forces the CPU rule either way (e.g. the tests, on every CPU kind)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    return cpu_kind() != "fp32-only"


@functools.cache
def cpu_kind() -> str:
    """The CPU kind that sets training's speed here: "AMX", "AVX512-BF16" (native bf16 without AMX) or "fp32-only"."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "fp32-only"
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "fp32-only"


def machine() -> dict[str, Any]:
    """What a run ran on, for its records: the CPU's model, cores and kind, and the visible CUDA GPUs."""
    import torch

    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "cpu_kind": cpu_kind(), "gpus": gpus}


def machine_label(m: dict[str, Any]) -> str:
    """A machine record as the docs name it: "2-core Intel Xeon … (AVX512-BF16)", or its GPUs."""
    if m.get("gpus"):
        return ", ".join(m["gpus"])
    return f"{m['cores']}-core {m['cpu']} ({m['cpu_kind']})"


def device_line(device: "torch.device", count: int, precision: str) -> str:
    """What a run trains on, as its one line says: the device, how many, the precision."""
    if device.type == "cuda":
        import torch

        return f"{count} × {torch.cuda.get_device_name(device)} (CUDA), precision {precision}"
    processes = f", {count} processes" if count > 1 else ""
    return f"CPU ({len(os.sched_getaffinity(0))} cores, {cpu_kind()}){processes}, precision {precision}"


def cpu_bf16() -> bool:
    """The CPU rule: bf16 autocast where the CPU has native bf16, unless DIFFUSION_CPU_BF16=1/0 forces it (bf16
    autocast also runs, slowly, on CPUs without it)."""
    forced = os.environ.get(CPU_BF16_ENV, "")
    if forced not in ("", "0", "1"):
        raise ValueError(f"{CPU_BF16_ENV} must be 1 (bf16 autocast on CPUs) or 0 (fp32); got {forced!r}")
    return cpu_supports_bf16() if forced == "" else forced == "1"


def cpu_precision() -> str:
    """Lightning precision for CPU training: bf16-mixed under the CPU rule's bf16, else 32-true."""
    return "bf16-mixed" if cpu_bf16() else "32-true"


def uses_cuda(accelerator: str) -> bool:
    """Whether a Lightning `accelerator` setting ends up on CUDA GPUs ("auto" does when one is visible)."""
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def cuda_amp_dtype() -> "torch.dtype":
    """bf16 on GPUs that have it (Ampere and later), else fp16."""
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def precision(accelerator: str = "cpu") -> str:
    """The one precision rule: bf16-mixed on GPUs with bf16, 16-mixed on older GPUs, `cpu_precision()` on CPUs."""
    if uses_cuda(accelerator):
        import torch

        return "bf16-mixed" if cuda_amp_dtype() == torch.bfloat16 else "16-mixed"
    return cpu_precision()


def autocast_dtype(device: "torch.device") -> "torch.dtype | None":
    """Sampling's autocast dtype on `device`, the same rule as training's precision; None: stay in fp32."""
    import torch

    if device.type == "cuda":
        return cuda_amp_dtype()
    return torch.bfloat16 if device.type == "cpu" and cpu_bf16() else None


# channels_last per device type, from `make bench` (docs/results.md, "Training speed"): on CPUs it is part of the bf16
# speed-up; on CUDA see the H100 table in docs/sweeps.md (bf16 + channels_last was slower there).
CHANNELS_LAST = {"cpu": True, "cuda": False}


def use_channels_last(device: "torch.device") -> bool:
    """Whether the U-Net runs in channels_last memory layout on this device type."""
    return CHANNELS_LAST.get(device.type, False)


def configure_cuda() -> None:
    """Kernel choices for a CUDA run: cuDNN autotuning for the fixed image shape, TF32 for fp32 matmuls."""
    import torch

    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")


def resolve_device(name: str) -> "torch.device":
    """`device=cpu|cuda|cuda:N|auto` -> a torch.device; asking for CUDA where none is visible is a ValueError."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got {name!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={name} but no CUDA GPU is visible here; use device=cpu or device=auto")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device={name} but only {count} CUDA GPU(s) are visible (cuda:0 to cuda:{count - 1})")
    elif device.type != "cpu":
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got {name!r}")
    return device


def steps_unless_epochs(steps: int, max_epochs: int | None) -> int:
    """The trainer's default max_steps, or -1 (no step limit) where trainer.max_epochs asks for a number of epochs
    and no max_steps was given: `trainer.max_epochs=20` then trains 20 epochs."""
    return steps if max_epochs in (None, -1) else -1


def register_resolvers() -> None:
    """`${precision:<accelerator>}` and `${steps_unless_epochs:<steps>,<max_epochs>}` for the trainer configs,
    `${data_root:}` for the data configs (diffusion.runs registers `${checkpoints:<run_dir>}`)."""
    for name, fn in (("precision", precision), ("steps_unless_epochs", steps_unless_epochs),
                     ("data_root", data_root)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
