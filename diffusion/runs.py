"""A run directory: where its files go, and its status.json (written, read, and what `resume=true` makes of it).

Every train.py and sample.py run records `status.json` in its directory: {"status": "ok" | "interrupted" |
"failed", "error", "overrides", "metrics", "machine" (diffusion.runtime.machine)}. ok: finished, with its final
metrics; interrupted: stopped short of its steps (trainer.max_time) and continued by the next `resume=true`;
failed: the one-line error. The report, resuming and the sweeps read it through `read_status` and `Resume` only.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusion.files import UnreadableFile, atomic_write, read_json_object

STATUS_FILE = "status.json"
OK, INTERRUPTED, FAILED = "ok", "interrupted", "failed"
CHECKPOINTS = "checkpoints"  # <run_dir>/checkpoints: the callback configs reach it as ${checkpoints:${run_dir}}
LAST, BEST, WEIGHTS = "last.ckpt", "best-*.ckpt", "model.safetensors"
METRICS, CONFIG = "metrics.json", "config.yaml"  # an evaluation's record; the run's resolved config
WANDB_IDENTITY = "wandb.json"  # the directory's W&B run: id, name, group, artifact, last step (diffusion.loggers)


def checkpoint_dir(run_dir: str | Path) -> Path:
    """The folder of a run's Lightning checkpoints."""
    return Path(run_dir) / CHECKPOINTS


def last_checkpoint(run_dir: str | Path) -> Path:
    """A run's newest training state, the one `resume=true` continues from."""
    return checkpoint_dir(run_dir) / LAST


def register_resolvers() -> None:
    """`${checkpoints:<run_dir>}`: the checkpoint folder, for the callback configs (this module names a run's files)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("checkpoints"):
        OmegaConf.register_new_resolver("checkpoints", lambda run_dir: str(checkpoint_dir(run_dir)))


def run_dir_of(model: str | Path) -> Path:
    """The run directory a model file of that run lies in (its checkpoints/*.ckpt or its model.safetensors)."""
    folder = Path(model).parent
    return folder.parent if folder.name == CHECKPOINTS else folder


def model_patterns() -> tuple[str, ...]:
    """Glob patterns of every run's model files under a folder of runs: last.ckpt, best-*.ckpt, model.safetensors."""
    return f"**/{CHECKPOINTS}/{LAST}", f"**/{CHECKPOINTS}/{BEST}", f"**/{WEIGHTS}"


class Interrupted(dict):
    """The metrics of a run that stopped short of its steps (trainer.max_time), with the reason: recorded as
    interrupted, so that the next `resume=true` continues it."""

    def __init__(self, metrics: dict[str, Any], reason: str) -> None:
        super().__init__(metrics)
        self.reason = reason


def started(run_dir: str | Path) -> bool:
    """Whether a run directory holds a status record or a checkpoint to continue (a run was started there)."""
    return (Path(run_dir) / STATUS_FILE).exists() or last_checkpoint(run_dir).exists()


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """A run directory's status.json, or None when it has none (never started, or killed); UnreadableFile (one line
    naming it) when the file is not a status record (a crash mid-write elsewhere, a full disk, a hand edit)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        status = read_json_object(path)
    except FileNotFoundError:
        return None
    if status.get("status") not in (OK, INTERRUPTED, FAILED) or not isinstance(status.get("metrics") or {}, dict):
        raise UnreadableFile(path, f"no status of {OK}, {INTERRUPTED} or {FAILED} with its metrics")
    return status


def write_status(run_dir: str | Path, status: str, error: str | None = None,
                 metrics: dict[str, Any] | None = None) -> None:
    """Record a run's status (module docstring). A run already recorded ok with the same metrics keeps its file
    untouched (a resumed sweep skipping it)."""
    from hydra.core.hydra_config import HydraConfig

    metrics = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
    if (Path(run_dir) / STATUS_FILE).is_dir():
        return  # nowhere to record it: resume=true has said so in its one line
    try:
        old = read_status(run_dir)
    except UnreadableFile:
        old = None  # replaced by this record
    if status == OK and old is not None and old.get("status") == OK and old.get("metrics") == metrics:
        return
    from diffusion.runtime import machine

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    record = json.dumps({"status": status, "error": error, "overrides": overrides, "metrics": metrics,
                         "machine": machine()}, indent=1)
    try:
        atomic_write(Path(run_dir) / STATUS_FILE, lambda f: f.write(record.encode()))
    except OSError as err:  # a full disk, a directory in its place: the run's other files stand, this line says why
        print(f"error: could not record the run's status ({status}) in {Path(run_dir) / STATUS_FILE}: "
              f"{err.strerror or err}", file=sys.stderr)


def record_failure(run_dir: str | Path, message: str) -> float:
    """A failed sweep job: one line, status.json failed, and NaN for the sweeper."""
    print(f"error: job failed ({message}); recorded in {Path(run_dir) / STATUS_FILE}", file=sys.stderr)
    write_status(run_dir, FAILED, message)
    return math.nan


@dataclass(frozen=True)
class Resume:
    """What `resume=true` finds in a run directory: finished (its metrics), a checkpoint to continue, or nothing."""

    finished: dict[str, Any] | None = None
    checkpoint: Path | None = None

    @classmethod
    def of(cls, run_dir: str | Path) -> Resume:
        """ok -> finished; else (interrupted, failed: retried, or killed) its last.ckpt if there is one. An unreadable
        status.json counts as unfinished, said in one line; one that is a directory stops the run in one line."""
        try:
            status = read_status(run_dir)
        except UnreadableFile as err:
            if err.path.is_dir():
                raise UnreadableFile(err.path, "a directory, not the run's status record; move it away and run "
                                               "again") from None
            print(f"resume: {err}; taken as unfinished, so the run continues from its last checkpoint")
            status = None
        if status is not None and status.get("status") == OK:
            return cls(finished=status.get("metrics") or {})
        last = last_checkpoint(run_dir)
        return cls(checkpoint=last if last.is_file() else None)


def parameter_table(model: Any, depth: int = 2) -> tuple[str, int]:
    """Markdown table of trainable parameters grouped by module path (`depth` components), and the exact total."""
    groups: dict[str, int] = defaultdict(int)
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[".".join(name.split(".")[:-1][:depth]) or name] += p.numel()
    total = sum(groups.values())
    rows = [f"| `{k}` | {v:,} |" for k, v in groups.items()]
    return "\n".join(["| module | parameters |", "|---|---:|", *rows, f"| **total** | **{total:,}** |", ""]), total


def write_run_files(cfg: Any, module: Any, run_dir: Path) -> int:
    """params.md and the resolved config in the run directory (rank 0 only); returns the trainable parameter count."""
    from omegaconf import OmegaConf

    from diffusion.distributed import is_rank_zero

    table, total = parameter_table(module.net)
    if not is_rank_zero():
        return total
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = getattr(module.net, "parameter_parts", dict)()
    by_part = "".join(f"| {k} | {v:,} |\n" for k, v in parts.items())
    by_part = f"## By part\n\n| part | parameters |\n|---|---:|\n{by_part}\n## By module\n\n" if parts else ""
    (run_dir / "params.md").write_text(f"# Trainable parameters: {total:,}\n\n{by_part}{table}")
    (run_dir / CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return total
