"""Shared entry-point plumbing: expected failures end in one clear line, never a traceback wall.

Every run records `status.json` (ok with its final metrics, or failed with the error) in its directory; in a
sweep a failed job returns NaN instead of raising, so one bad run never costs the sweep the others' results.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from diffusion.data import DataMissingError
from diffusion.fetch import DataError
from diffusion.files import atomic_write
from diffusion.module import NonFiniteLossError

EXPECTED = (ValueError, FileNotFoundError, DataError, DataMissingError, NonFiniteLossError, FloatingPointError)


def in_multirun() -> bool:
    """True inside a job launched by `-m`/`--multirun`."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def in_sweep() -> bool:
    """True in a multirun job, or in the command a DDP sweep point runs as (diffusion.sweeps)."""
    from diffusion.sweeps import SWEEP_POINT_ENV

    return in_multirun() or bool(os.environ.get(SWEEP_POINT_ENV))


def sweep_dir() -> str | None:
    """The sweep directory of this job (or of the sweep point this command runs), else None."""
    from diffusion.sweeps import SWEEP_POINT_ENV

    if in_multirun():
        return str(HydraConfig.get().sweep.dir)
    return os.environ.get(SWEEP_POINT_ENV) or None


def write_status(run_dir: str | Path, status: str, error: str | None = None,
                 metrics: dict[str, Any] | None = None) -> None:
    """status.json for the report and for resuming: {"status": "ok" | "failed", "error", "overrides", "metrics"}.

    A run already recorded ok with the same metrics keeps its file untouched (a resumed sweep skipping it)."""
    from diffusion.sweeps import STATUS_FILE, read_status

    metrics = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
    old = read_status(run_dir)
    if status == "ok" and old is not None and old.get("status") == "ok" and old.get("metrics") == metrics:
        return
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    record = json.dumps({"status": status, "error": error, "overrides": overrides, "metrics": metrics}, indent=1)
    atomic_write(Path(run_dir) / STATUS_FILE, lambda f: f.write(record.encode()))


class OutputDirCheck(Callback):
    """Hydra callback: an output directory that cannot be created or written gets one line, before any work."""

    @staticmethod
    def _check(directory: str, key: str) -> None:
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as err:
            print(f"error: cannot write the output directory {directory} ({err.strerror or err}); "
                  f"choose another with {key}=...", file=sys.stderr)
            raise SystemExit(1) from None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")


class SweepLaunchCheck(Callback):
    """Hydra callback: a launcher that cannot run this trainer (joblib + DDP, SLURM tasks ≠ devices) gets one
    line before the sweep starts (diffusion.sweeps.sweep_launch_error)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from diffusion.sweeps import sweep_launch_error

        error = sweep_launch_error(config.trainer, config.hydra.launcher)
        if error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(1)


def restore_sigint() -> None:
    """Ctrl-C raises KeyboardInterrupt even where SIGINT was inherited as ignored (`cmd &` in a script, some CI)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_cli(fn: Callable[..., Any], cfg: Any, run_dir: str | Path) -> Any:
    """Call fn(cfg); expected errors print `error: <message>` and exit 1; in a multirun, record and go on."""
    from diffusion.distributed import is_rank_zero

    from diffusion.sweeps import PointFailed

    restore_sigint()
    try:
        try:
            result = fn(cfg)
        except InstantiationException as err:  # a constructor's own check (e.g. the U-Net's image size): its message
            cause = root_cause(err)
            raise cause if isinstance(cause, EXPECTED) else err
    except PointFailed:  # a DDP sweep point's own command has printed its line and recorded its status
        return math.nan
    except EXPECTED as err:
        if not is_rank_zero():  # a DDP rank > 0: rank 0 reports what every rank raised together (a NaN loss)
            if isinstance(err, NonFiniteLossError):
                raise SystemExit(0) from None
            print(f"error: (rank {rank_zero_only.rank}) {err}", file=sys.stderr)
            raise SystemExit(1) from None
        if in_sweep():
            return record_failure(run_dir, _one_line(err))
        write_status(run_dir, "failed", _one_line(err))
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as err:  # noqa: BLE001 - a crash in one sweep job must not lose the other jobs
        if in_sweep() and is_rank_zero():
            traceback.print_exc()
            return record_failure(run_dir, _one_line(err))
        raise
    if is_rank_zero():
        write_status(run_dir, "ok", metrics=result if isinstance(result, dict) else None)
    return result


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception of a `raise … from` chain (Hydra wraps a target's error once per nesting level)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]


def record_failure(run_dir: str | Path, message: str) -> float:
    """A failed sweep job: one line, status.json failed, and NaN for the sweeper."""
    print(f"error: job failed ({message}); recorded in {Path(run_dir) / 'status.json'}", file=sys.stderr)
    write_status(run_dir, "failed", message)
    return math.nan
