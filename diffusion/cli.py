"""Shared entry-point plumbing: expected failures end in one clear line, never a traceback wall.

Every run records its status in its directory (diffusion.runs); in a sweep a failed job returns NaN instead of
raising, so one bad run never costs the sweep the others' results.
"""

from __future__ import annotations

import math
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from diffusion.data import DataMissingError
from diffusion.fetch import DataError
from diffusion.module import NonFiniteLossError
from diffusion.runs import FAILED, INTERRUPTED, OK, Interrupted, record_failure, write_status
from diffusion.sweeps import PointFailed, in_sweep, sweep_launch_error

EXPECTED = (ValueError, FileNotFoundError, DataError, DataMissingError, NonFiniteLossError, FloatingPointError)


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
        error = sweep_launch_error(config.trainer, config.hydra.launcher)
        if error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(1)


def restore_sigint() -> None:
    """Ctrl-C raises KeyboardInterrupt even where SIGINT was inherited as ignored (`cmd &` in a script, some CI)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_cli(fn: Callable[..., Any], cfg: Any, run_dir: str | Path | None) -> Any:
    """Call fn(cfg); expected errors print `error: <message>` and exit 1; in a multirun, record and go on. A run
    directory gets fn's status (diffusion.runs); None: a command that is not a run records none."""
    from diffusion.distributed import is_rank_zero

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
        if run_dir is not None:
            write_status(run_dir, FAILED, _one_line(err))
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as err:  # noqa: BLE001 - a crash in one sweep job must not lose the other jobs
        if in_sweep() and is_rank_zero():
            traceback.print_exc()
            return record_failure(run_dir, _one_line(err))
        raise
    if is_rank_zero() and run_dir is not None:
        if isinstance(result, Interrupted):
            write_status(run_dir, INTERRUPTED, result.reason, metrics=result)
        else:
            write_status(run_dir, OK, metrics=result if isinstance(result, dict) else None)
    return result


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception of a `raise … from` chain (Hydra wraps a target's error once per nesting level)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]
