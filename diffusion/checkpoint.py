"""Model files: reading that never runs code, crash-safe writing, and the safetensors export.

Two formats, one loader (`load_module`):
- `.ckpt`, Lightning's training checkpoint (weights, optimizer, EMA, loop state), for resuming and sampling. It is a
  pickle, so it is read with `torch.load(weights_only=True)`: tensors and plain values only, never arbitrary objects.
- `.safetensors`, the EMA weights with the hyper-parameters as JSON metadata: the format to share and ship; it
  cannot hold code at all. `train.py` writes `model.safetensors` at the end of every run;
  `python -m diffusion.export ckpt_path=CKPT out=FILE` converts any `.ckpt`; the shipped models in
  `pretrained/<name>/model.safetensors` are such files.

Either way the hyper-parameters only name classes from an allow-list (the `_target_`s a checkpoint of this project
can hold), so a crafted file cannot make `hydra.utils.instantiate` call anything else.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from omegaconf import DictConfig, OmegaConf

from diffusion.files import atomic_write
from diffusion.runs import WEIGHTS, model_patterns
from diffusion.samplers import sampler_targets

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"  # the shipped models (.safetensors)
RUN_ROOTS = ("outputs", "multirun")  # where train.py's runs and sweeps write (relative to the working directory)
DEFAULT_PRETRAINED = "mnist"  # the shipped model used when no checkpoint is named, listed first
FORMAT = "diffusion-mnist"  # the safetensors metadata's "format" value
# Where each hyper-parameter's `_target_` may point (checked as text before anything is imported): a pattern, or for
# the samplers the registry (diffusion.samplers.SAMPLERS), read when a file is checked.
TARGETS: dict[str, re.Pattern | Callable[[str], bool]] = {
    "net": re.compile(r"diffusion\.unet\.UNet"),
    "schedule": re.compile(r"diffusion\.schedule\.NoiseSchedule"),
    "sampler": lambda target: target in sampler_targets(),
    "optimizer": re.compile(r"torch\.optim\.[A-Z]\w*"),
    "lr_scheduler.scheduler": re.compile(r"torch\.optim\.lr_scheduler\.[A-Z]\w*|diffusion\.module\.warmup_cosine"),
}
TARGETS["lr_scheduler"] = TARGETS["lr_scheduler.scheduler"]  # checkpoints written before the scheduler settings
# Hyper-parameters nest a few levels and hold a few hundred values: anything far beyond is refused before any reader
# walks it (a pickle may share one list many times over: 60 levels of lists holding the next one twice are 2^60
# values to a reader that walks them as a tree, as JSON, OmegaConf and the target check do)
MAX_DEPTH, MAX_VALUES = 32, 100_000
MAX_TIMESTEPS = 100_000  # a schedule's T: its buffers cost 8 bytes × T each, so a file cannot ask for gigabytes


class CheckpointError(ValueError):
    """A file that is not a checkpoint of this project (or not one that can be read safely)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path} is not a diffusion checkpoint ({reason})")


def _load_reason(err: Exception) -> str:
    """A short reason for a failed torch.load."""
    text = str(err)
    blocked = re.search(r"GLOBAL (\S+)", text)
    if blocked:
        return f"it asks to import {blocked.group(1)}, which could run code; refused"
    if "Unsupported" in text or "Weights only load failed" in text:
        return "it holds objects other than tensors and plain values; refused"
    if "central directory" in text or isinstance(err, EOFError):
        return "truncated or not a PyTorch file"
    return f"not a PyTorch checkpoint: {type(err).__name__}"


def _read_safetensors(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """A `.safetensors` export as the same dict a `.ckpt` gives (state_dict, hyper_parameters, global_step)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except (SafetensorError, OSError) as err:
        raise CheckpointError(path, f"unreadable safetensors file: {str(err).splitlines()[0][:80]}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(path, f"safetensors metadata has no format={FORMAT!r}")
    try:
        hparams, step = json.loads(meta["hyper_parameters"]), int(meta.get("global_step", -1))
    except (KeyError, ValueError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
        raise CheckpointError(path, "safetensors metadata lacks readable hyper-parameters") from None
    return {"state_dict": state, "hyper_parameters": hparams, "global_step": step}


def allowed(rule: re.Pattern | Callable[[str], bool], target: str) -> bool:
    """Whether `target` passes an allow-list entry (a whole-string pattern or a predicate)."""
    return bool(rule.fullmatch(target)) if isinstance(rule, re.Pattern) else rule(target)


def _check_size(path: Path, hparams: Any) -> None:
    """Hyper-parameters of bounded depth and number of values, counted as the tree every later reader walks (the
    count stops at the limit, so a shared or self-containing structure costs no more than MAX_VALUES steps)."""
    stack, count = [(hparams, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES or depth > MAX_DEPTH:
            raise CheckpointError(path, f"its hyper-parameters nest deeper than {MAX_DEPTH} levels or hold more than "
                                        f"{MAX_VALUES:,} values")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for kv in node.items() for v in kv)
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)
    schedule = hparams.get("schedule") if isinstance(hparams, dict) else None
    T = schedule.get("timesteps") if isinstance(schedule, dict) else None
    if T is not None and (not isinstance(T, int) or isinstance(T, bool) or not 1 <= T <= MAX_TIMESTEPS):
        raise CheckpointError(path, f"its schedule asks for {str(T)[:20]} timesteps (at most {MAX_TIMESTEPS:,})")


def _check_targets(path: Path, hparams: dict[str, Any]) -> None:
    """Every `_target_` in the hyper-parameters is one this project writes, at the place it writes it."""

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and (where not in TARGETS or not isinstance(target, str)
                                       or not allowed(TARGETS[where], target)):
                raise CheckpointError(path, f"hyper-parameter {where}._target_={str(target)[:60]!r} is not allowed")
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(hparams, "")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A `.ckpt` or `.safetensors` file of this project as a dict, read without running code; CheckpointError (one
    line) for anything else, FileNotFoundError if it does not exist."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(path, "it is a directory; give the .ckpt or .safetensors file in it")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "empty file")
    if path.suffix == ".safetensors":
        ckpt = _read_safetensors(path, map_location)
    else:
        try:
            with warnings.catch_warnings():  # e.g. "pickle protocol 4": the one-line error below says what matters
                warnings.simplefilter("ignore")
                ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for foreign files; each becomes one line
            raise CheckpointError(path, _load_reason(err)) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(path, "no model weights (state_dict) in it")
    hparams = ckpt.get("hyper_parameters")
    _check_size(path, hparams)
    if not isinstance(hparams, dict) or not isinstance(hparams.get("net"), dict):
        raise CheckpointError(path, "no model hyper-parameters in it; it was not written by train.py")
    if not all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values()):
        raise CheckpointError(path, "its state_dict holds values that are not tensors")
    _check_targets(path, hparams)
    return ckpt


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic writes on every filesystem, reads through `read_checkpoint` (no code runs)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote or special storage: Lightning's own path
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> Any:
        return read_checkpoint(path, map_location if map_location is not None else "cpu")


def load_module(path: str | Path, weights: str = "ema", device: str | torch.device = "cpu") -> Any:
    """Rebuild the model from a checkpoint alone: the `ema` weights (a checkpoint's state_dict) or the `raw` ones."""
    from diffusion.module import DiffusionModule

    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    ckpt = read_checkpoint(path)
    state = ckpt["state_dict"]
    if weights == "raw":
        if Path(path).suffix == ".safetensors":
            raise ValueError(f"{path} holds only the EMA weights; weights=raw needs the run's .ckpt")
        state = ckpt.get("current_model_state", state)
    try:
        module = DiffusionModule(**ckpt["hyper_parameters"])
        module.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - hyper-parameters or weights that do not build this project's model
        raise CheckpointError(path, f"its hyper-parameters or weights do not build a model: {type(err).__name__}") \
            from None
    module.checkpoint_step = ckpt.get("global_step")
    module.to(device).apply_layout()  # the memory layout for that device (channels_last rule)
    return module.eval()


def use_best_weights(module: Any, trainer: Any) -> bool:
    """eval.weights=best: the weights of the best validation loss's checkpoint into the module (every rank), for the
    export and the evaluation; False, said in a line, when no validation made one (the final weights stay)."""
    best = best_checkpoint(trainer)
    path = best.best_model_path if best is not None else ""
    if not path:
        if trainer.is_global_zero:
            print("eval.weights=best: no validation loss was recorded, so there is no best checkpoint; "
                  "the final weights are used")
        return False
    ckpt = read_checkpoint(path)
    module.load_state_dict(ckpt["state_dict"])  # the EMA weights when EMA is on (a checkpoint's state_dict)
    module.checkpoint_step = ckpt["global_step"]
    if trainer.is_global_zero:
        print(f"eval.weights=best: the weights of step {ckpt['global_step']}, the best validation loss "
              f"({float(best.best_model_score):.5g}; {path})")
    return True


def best_checkpoint(trainer: Any) -> Any:
    """The checkpoint callback that keeps the best monitored value (callbacks.best_checkpoint), as Lightning exposes
    it: trainer.checkpoint_callback, the first configured; None when that one monitors nothing (last.ckpt's)."""
    callback = trainer.checkpoint_callback
    return callback if callback is not None and callback.monitor else None


def final_is_best(trainer: Any) -> bool:
    """Whether the run's last validation loss is its best checkpoint's (the exported weights are then the best)."""
    best = best_checkpoint(trainer)
    if best is None or best.best_model_score is None:
        return False
    last = trainer.callback_metrics.get(best.monitor)
    return last is not None and float(last) <= float(best.best_model_score)


def export_safetensors(module: Any, path: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """The module's weights as safetensors (floating tensors stored as `dtype`; loading casts them back), its
    hyper-parameters and step as metadata (written atomically)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().to(dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in module.state_dict().items()}
    meta = {"format": FORMAT, "hyper_parameters": json.dumps(dict(module.hparams)),
            "global_step": str(getattr(module, "checkpoint_step", None) or module.global_step)}
    return atomic_write(path, lambda f: f.write(save(state, metadata=meta)))


def shipped_models() -> dict[str, Path]:
    """The pretrained models in the repository: name -> pretrained/<name>/model.safetensors, the default first."""
    found = sorted(PRETRAINED_DIR.glob(f"*/{WEIGHTS}"),
                   key=lambda p: (p.parent.name != DEFAULT_PRETRAINED, p.parent.name))
    return {p.parent.name: p for p in found}


def run_models(roots: tuple[str, ...] = RUN_ROOTS) -> list[Path]:
    """Every run's model files under `roots` (last.ckpt, best-*.ckpt, model.safetensors), newest first: the one
    discovery rule of sample.py, the benchmarks and the demo, which fall back on the shipped models after them."""
    found = {p for root in roots for pattern in model_patterns() for p in Path(root).glob(pattern) if p.is_file()}
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def shown(path: str | Path) -> str:
    """A path as a user would type it: relative to the working directory when inside it, else absolute."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def own_sampler(module: Any) -> DictConfig:
    """How a model is sampled unless a sampler is named: the sampler in its hyper-parameters, that of the run that
    trained it or the one written at export (a shipped model's: the one its headline figure was measured with)."""
    return OmegaConf.create(dict(module.hparams.sampler))


def pretrained_path(name: str) -> Path:
    """The shipped model `name`; one clear line naming the others if there is no such model."""
    models = shipped_models()
    if name not in models:
        raise FileNotFoundError(f"no pretrained model {name!r}; the shipped ones are: {', '.join(models) or 'none'}")
    return models[name]
