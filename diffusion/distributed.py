"""Running on several devices: which rank this is, whether Lightning re-launches the command for its ranks,
gathering images across ranks, one free GPU per parallel sweep job, and waiting for a run's ranks to exit."""

from __future__ import annotations

import fcntl
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics.utilities.distributed import gather_all_tensors

SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")  # start ranks without re-running the command line
RANK_GRACE_S = 60  # how long a finished run's other ranks may take to exit before they are killed


def is_rank_zero() -> bool:
    """True in the process that writes files: rank 0, as Lightning reads it from the environment (LOCAL_RANK, …)."""
    return rank_zero_only.rank == 0


def in_slurm_job() -> bool:
    """Whether this process is a task of a SLURM job (Lightning's rule), without Lightning's hint to use srun: a
    sweep submitted from a login node, where srun exists, is exactly the case where it is not used."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The `srun` command is available")
        return SLURMEnvironment.detect()


def process_count(trainer_cfg: Any) -> int | None:
    """Processes a trainer config starts on this node × nodes (None when `devices` is "auto"/-1: unknown here)."""
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1) or 1
    if isinstance(devices, int) and devices > 0:
        return devices * nodes
    if isinstance(devices, str) and devices.isdigit():
        return int(devices) * nodes
    if not isinstance(devices, (int, str)) and devices is not None:  # a list of device indices
        return len(list(devices)) * nodes
    return None


def relaunches_command(trainer_cfg: Any) -> bool:
    """Whether Lightning would start the other ranks by re-running this command line (DDP with > 1 process,
    not under SLURM, which starts every rank itself)."""
    strategy = str(trainer_cfg.get("strategy", "auto"))
    if not strategy.startswith("ddp") or strategy in SPAWNING or in_slurm_job():
        return False
    count = process_count(trainer_cfg)
    return count is None or count > 1


def gather_shares(share: torch.Tensor, n: int, world: int, device: torch.device) -> torch.Tensor:
    """All n images in index order, on every rank, from each rank's share (image i made on rank i mod world).

    The shares travel as tensors on `device` (the trainer's root device), so NCCL can carry them; torchmetrics'
    gather pads the uneven shares and trims them again. Returned on the CPU.
    """
    if world == 1:
        return share
    shares = gather_all_tensors(share.to(device))
    full = torch.empty((n, *share.shape[1:]), dtype=share.dtype)
    for r, part in enumerate(shares):
        full[r::world] = part.cpu()
    return full


@contextmanager
def claim_device(lock_dir: Path, count: int, preferred: int = 0) -> Iterator[int]:
    """Hold one of `count` devices for the with-block: the first free one (an exclusive file lock in `lock_dir`),
    or, when all are busy, wait for `preferred` (mod count). Parallel sweep jobs thus spread over the GPUs."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    order = [(preferred + k) % count for k in range(count)]
    for k in [*order, None]:
        index = order[0] if k is None else k
        handle = open(lock_dir / f"device{index}.lock", "a")  # noqa: SIM115 - held for the whole block
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if k is None else fcntl.LOCK_NB))  # blocking once all are busy
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield index
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return



def wait_for_ranks(trainer: Any, timeout_s: float = RANK_GRACE_S) -> None:
    """Rank 0 returns only once the ranks Lightning started for it have exited (killed after `timeout_s`), so a
    finished run leaves no process behind. (On an exception Lightning kills them itself.)"""
    for proc in getattr(trainer.strategy.launcher, "procs", []):
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"rank process {proc.pid} still running {timeout_s:.0f} s after the run finished; killed")
            proc.kill()
