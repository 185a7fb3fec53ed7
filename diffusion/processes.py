"""Child commands that leave nothing behind: the one rule for a DDP sweep point's command (diffusion.sweeps) and a
GPU-queue piece (diffusion.queue). Hand-written because subprocess kills one process, not the ranks it starts."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence


def run_in_group(command: Sequence[str], grace_s: float, timeout: float | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None) -> int | None:
    """Run `command` in a process group of its own until it exits (its exit code) or `timeout` seconds pass (None).
    At the timeout, or on Ctrl-C or an error here, the group gets Ctrl-C and `grace_s` to save and exit (then the
    error goes on up); once the command has ended its whole group is killed, so none of its children outlives it."""
    proc = subprocess.Popen(list(command), env=env, cwd=cwd, preexec_fn=os.setpgrp)  # noqa: PLW1509 - own group
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        interrupt(proc, grace_s)
        return None
    except BaseException:
        interrupt(proc, grace_s)
        raise
    finally:
        signal_group(proc.pid, signal.SIGKILL)


def interrupt(proc: subprocess.Popen, grace_s: float) -> None:
    """Ctrl-C to the command's group, and up to `grace_s` for its leader to exit."""
    signal_group(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass


def signal_group(pgid: int, signum: int) -> None:
    """Send `signum` to a process group, if any of it is left."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group has exited
