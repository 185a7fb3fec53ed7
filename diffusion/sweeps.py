"""Sweeps: whether this process is a sweep job, which launcher/strategy pairs work, and a DDP point run as its own
command (resuming a point: diffusion.runs.Resume).

Lightning starts the extra DDP ranks by re-running `sys.argv`; inside `-m` that is the whole sweep (Lightning
#11300, Hydra #2070). So a multirun job whose trainer would re-launch its command runs the point as a plain
`python train.py <its overrides> hydra.run.dir=<its directory>` in a child process group: that command's
ranks re-run the point only, and none of them outlives it. (Hand-written: subprocess stops one process, not the
ranks it starts.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from diffusion.distributed import RANK_GRACE_S, claim_device, in_slurm_job, relaunches_command
from diffusion.files import UnreadableFile
from diffusion.runs import FAILED, INTERRUPTED, OK, Interrupted, last_checkpoint, read_status, record_failure
from diffusion.runtime import CONF_DIR, uses_cuda

SWEEP_POINT_ENV = "DIFFUSION_SWEEP_POINT"  # set to the sweep directory for the command a DDP sweep point runs
PARALLEL_LAUNCHERS = ("joblib",)  # launchers that run several points at once in one node's processes


class PointFailed(RuntimeError):
    """A sweep point's own command failed; it has printed its line and recorded its status.json."""


def in_multirun() -> bool:
    """True inside a job launched by `-m`/`--multirun`."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def in_sweep() -> bool:
    """True in a multirun job, or in the command a DDP sweep point runs as."""
    return in_multirun() or bool(os.environ.get(SWEEP_POINT_ENV))


def sweep_dir() -> str | None:
    """The sweep directory of this job (or of the sweep point this command runs), else None."""
    if in_multirun():
        return str(HydraConfig.get().sweep.dir)
    return os.environ.get(SWEEP_POINT_ENV) or None


def sweep_launcher() -> Any:
    """The Hydra launcher's config inside a multirun job, else None."""
    return HydraConfig.get().launcher if in_multirun() else None


def sweep_launch_error(trainer_cfg: Any, launcher_cfg: Any) -> str | None:
    """One line for a launcher/trainer pair that cannot work, before the sweep starts (None when it can)."""
    target = str(launcher_cfg.get("_target_", ""))
    if any(name in target.lower() for name in PARALLEL_LAUNCHERS) and relaunches_command(trainer_cfg):
        return (f"hydra/launcher=joblib runs sweep points side by side with one device each and cannot give each "
                f"point {trainer_cfg.get('devices')} DDP ranks; drop hydra/launcher=joblib to run the DDP points one "
                "after another, or use trainer=gpu for one GPU per point (docs/sweeps.md, \"GPUs and clusters\")")
    submitting = "SlurmLauncher" in target and not in_slurm_job()  # not yet inside a SLURM job
    if submitting and not (shutil.which("sbatch") and shutil.which("srun")):
        return ("hydra/launcher=submitit_slurm submits to SLURM and finds no sbatch/srun here: run the sweep on the "
                "cluster's login node, or use hydra/launcher=submitit_local to run the same jobs on this machine")
    if "SlurmLauncher" in target and str(trainer_cfg.get("strategy", "auto")).startswith("ddp"):
        tasks, nodes = launcher_cfg.get("tasks_per_node"), launcher_cfg.get("nodes")
        devices, num_nodes = trainer_cfg.get("devices"), trainer_cfg.get("num_nodes", 1)
        if tasks != devices or nodes != num_nodes:
            return (f"SLURM starts the DDP ranks itself: hydra.launcher.tasks_per_node ({tasks}) must equal "
                    f"trainer.devices ({devices}) and hydra.launcher.nodes ({nodes}) trainer.num_nodes ({num_nodes})")
    return None


def runs_as_own_command(trainer_cfg: Any, in_multirun: bool) -> bool:
    """Whether this multirun job must run its point as a separate command (DDP that re-launches its command)."""
    return in_multirun and relaunches_command(trainer_cfg)


def point_command(hydra_cfg: Any) -> list[str]:
    """The job's own command line: train.py with its overrides, in its output directory, without -m."""
    keep = [o for o in hydra_cfg.overrides.hydra
            if not o.lstrip("~+").startswith(("hydra/launcher", "hydra/sweeper", "hydra.launcher", "hydra.sweeper",
                                              "hydra.sweep.", "hydra.mode", "hydra.run.dir", "hydra.output_subdir"))]
    return [sys.executable, str(CONF_DIR.parent / "train.py"), f"--config-name={hydra_cfg.job.config_name}",
            *hydra_cfg.overrides.task, *keep, f"hydra.run.dir={quoted(hydra_cfg.runtime.output_dir)}",
            "hydra.output_subdir=null"]


def quoted(value: str) -> str:
    """A path as one Hydra override value (quoted, so that `=`, `,` and spaces stay part of it)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def override_key(override: str) -> str:
    """The key of a command-line override: `trainer.max_time` of `trainer.max_time=00:01:00:00`, `a.b` of `~a.b`."""
    return override.split("=", 1)[0].lstrip("~+")


def earlier_attempt(hydra_cfg: Any) -> Path | None:
    """Another directory of this sweep holding an unfinished run of this job's point (the same job number, the same
    overrides but for the keys kept out of directory names), e.g. one named while trainer.max_time was still part of
    the name; None if there is none. What a resume=true sweep says before it starts a point anew beside it."""
    exclude = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    mine = sorted(o for o in hydra_cfg.overrides.task if override_key(o) not in exclude)
    here = Path(hydra_cfg.runtime.output_dir).resolve()
    for other in sorted(Path(hydra_cfg.sweep.dir).glob(f"{hydra_cfg.job.num}-*")):
        saved = other / ".hydra" / "overrides.yaml"
        if other.resolve() == here or not saved.is_file():
            continue
        from omegaconf import OmegaConf

        theirs = sorted(o for o in OmegaConf.load(saved) if override_key(str(o)) not in exclude)
        if theirs == mine and last_checkpoint(other).is_file() and not finished(other):
            return other
    return None


def finished(run_dir: Path) -> bool:
    """Whether a run directory's status.json records it finished (an unreadable one does not)."""
    try:
        return (read_status(run_dir) or {}).get("status") == OK
    except UnreadableFile:
        return False


def run_point(hydra_cfg: Any) -> dict[str, Any]:
    """Run this multirun job as its own command (diffusion.sweeps docstring); returns its recorded metrics
    (`Interrupted` ones where trainer.max_time stopped it).

    The command's process group is killed once its rank 0 has exited, so no rank outlives the point; Ctrl-C is
    passed on to it (its ranks save their interrupt checkpoint) before the sweep stops.
    """
    run_dir = Path(hydra_cfg.runtime.output_dir)
    command = point_command(hydra_cfg)
    print(f"job {hydra_cfg.job.num}: DDP point as its own command: {' '.join(command[1:])}", flush=True)
    env = {**os.environ, SWEEP_POINT_ENV: str(hydra_cfg.sweep.dir)}
    code = run_in_group(command, RANK_GRACE_S, env=env, cwd=os.getcwd())
    try:
        status = read_status(run_dir)
    except UnreadableFile:
        status = None
    if status is not None and status.get("status") == OK:
        return status.get("metrics") or {}
    if status is not None and status.get("status") == INTERRUPTED:  # trainer.max_time: the next resume continues
        return Interrupted(status.get("metrics") or {}, status.get("error") or INTERRUPTED)
    if status is None or status.get("status") != FAILED:  # killed before it could record anything
        record_failure(run_dir, f"the DDP point's command exited with code {code} (its ranks' messages above)")
    raise PointFailed(str(run_dir))


def run_in_group(command: Sequence[str], grace_s: float, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None) -> int:
    """Run `command` in a process group of its own until it exits; returns its exit code. On Ctrl-C or an error here
    the group gets Ctrl-C and `grace_s` to save and exit (then the error goes on up); once the command has ended its
    whole group is killed, so none of its children outlives it."""
    proc = subprocess.Popen(list(command), env=env, cwd=cwd, preexec_fn=os.setpgrp)  # noqa: PLW1509 - own group
    try:
        return proc.wait()
    except BaseException:
        signal_group(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        raise
    finally:
        signal_group(proc.pid, signal.SIGKILL)


def signal_group(pgid: int, signum: int) -> None:
    """Send `signum` to a process group, if any of it is left."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group has exited


def job_device(cfg: Any, stack: ExitStack) -> dict[str, Any]:
    """Trainer overrides for a multirun job that asks for one GPU where several are visible: a free one of them,
    held until the job ends, so parallel jobs (hydra/launcher=joblib) spread over the GPUs instead of all using
    GPU 0. Empty otherwise."""
    if sweep_launcher() is None or cfg.trainer.get("devices", 1) not in (1, "1"):
        return {}
    import torch

    if not uses_cuda(cfg.trainer.accelerator) or torch.cuda.device_count() < 2:
        return {}
    hc = HydraConfig.get()
    index = stack.enter_context(claim_device(Path(hc.sweep.dir) / ".devices", torch.cuda.device_count(),
                                             preferred=hc.job.num or 0))
    print(f"job {hc.job.num}: GPU {index}")
    return {"devices": [index]}
