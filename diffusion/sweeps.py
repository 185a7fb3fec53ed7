"""Sweep points: which launcher/strategy pairs work, a DDP point run as its own command, and resuming a run
directory (skip what finished, continue what was interrupted, retry what failed).

Lightning starts the extra DDP ranks by re-running `sys.argv`; inside `-m` that is the whole sweep (Lightning
#11300, Hydra #2070). So a multirun job whose trainer would re-launch its command runs the point as a plain
`python train.py <its overrides> hydra.run.dir=<its directory>` in a child process group: that command's
ranks re-run the point only, and none of them outlives it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from diffusion.distributed import in_slurm_job, relaunches_command
from diffusion.processes import run_in_group
from diffusion.runtime import CONF_DIR

SWEEP_POINT_ENV = "DIFFUSION_SWEEP_POINT"  # set to the sweep directory for the command a DDP sweep point runs
STATUS_FILE = "status.json"
LAST_CKPT = Path("checkpoints") / "last.ckpt"
RANK_GRACE_S = 60  # how long a finished point's other ranks may take to exit before they are killed
PARALLEL_LAUNCHERS = ("joblib",)  # launchers that run several points at once in one node's processes


class PointFailed(RuntimeError):
    """A sweep point's own command failed; it has printed its line and recorded its status.json."""


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


def run_point(hydra_cfg: Any) -> dict[str, Any]:
    """Run this multirun job as its own command (diffusion.sweeps docstring); returns its recorded metrics.

    The command's process group is killed once its rank 0 has exited, so no rank outlives the point; Ctrl-C is
    passed on to it (its ranks save their interrupt checkpoint) before the sweep stops.
    """
    run_dir = Path(hydra_cfg.runtime.output_dir)
    command = point_command(hydra_cfg)
    print(f"job {hydra_cfg.job.num}: DDP point as its own command: {' '.join(command[1:])}", flush=True)
    env = {**os.environ, SWEEP_POINT_ENV: str(hydra_cfg.sweep.dir)}
    code = run_in_group(command, RANK_GRACE_S, env=env, cwd=os.getcwd())
    status = read_status(run_dir)
    if status is not None and status.get("status") == "ok":
        return status.get("metrics") or {}
    if status is None or status.get("status") != "failed":  # killed before it could record anything
        from diffusion.cli import record_failure

        record_failure(run_dir, f"the DDP point's command exited with code {code} (its ranks' messages above)")
    raise PointFailed(str(run_dir))


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """A run directory's status.json, or None when it has none (never started, or killed)."""
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass(frozen=True)
class Resume:
    """What `resume=true` finds in a run directory: finished (its metrics), a checkpoint to continue, or nothing."""

    finished: dict[str, Any] | None = None
    checkpoint: Path | None = None

    @classmethod
    def of(cls, run_dir: str | Path) -> Resume:
        """ok in status.json -> finished; else (interrupted, or failed: retried) its last.ckpt if there is one."""
        status = read_status(run_dir)
        if status is not None and status.get("status") == "ok":
            return cls(finished=status.get("metrics") or {})
        last = Path(run_dir) / LAST_CKPT
        return cls(checkpoint=last if last.is_file() else None)
