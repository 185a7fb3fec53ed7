"""What `resume=true` finds in a run directory, and the status record it reads (diffusion.runs); a DDP point's own
command (diffusion.sweeps)."""

import json

from diffusion.runs import Resume, last_checkpoint, write_status
from diffusion.sweeps import point_command, quoted


def test_finished_runs_are_skipped_interrupted_and_failed_ones_continue_from_their_last_checkpoint(tmp_path):
    assert Resume.of(tmp_path) == Resume()  # never started: runs from scratch
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last_checkpoint(tmp_path) == last
    last.parent.mkdir(parents=True)
    last.write_bytes(b"x")
    assert Resume.of(tmp_path) == Resume(checkpoint=last)  # killed (no status.json)
    write_status(tmp_path, "interrupted", "stopped by trainer.max_time at step 5 of 20")
    assert Resume.of(tmp_path) == Resume(checkpoint=last)  # stopped short: continued
    write_status(tmp_path, "failed", "RuntimeError: boom")
    assert Resume.of(tmp_path) == Resume(checkpoint=last)  # failed: retried, not skipped
    write_status(tmp_path, "ok", metrics={"global_step": 20, "eval/fid": 3.5, "note": "dropped"})
    assert Resume.of(tmp_path) == Resume(finished={"global_step": 20, "eval/fid": 3.5})


def test_a_finished_record_is_not_rewritten_with_the_same_metrics(tmp_path):
    write_status(tmp_path, "ok", metrics={"global_step": 20})
    stamp = (tmp_path / "status.json").stat().st_mtime_ns
    write_status(tmp_path, "ok", metrics={"global_step": 20})
    assert (tmp_path / "status.json").stat().st_mtime_ns == stamp
    write_status(tmp_path, "ok", metrics={"global_step": 40})
    assert json.loads((tmp_path / "status.json").read_text())["metrics"] == {"global_step": 40}


def test_a_ddp_point_reruns_its_own_overrides_in_its_own_directory_without_the_sweep():
    from omegaconf import OmegaConf

    hc = OmegaConf.create({"job": {"config_name": "train", "num": 1},
                           "overrides": {"task": ["schedule=cosine", "trainer=ddp"],
                                         "hydra": ["hydra.sweep.dir=multirun/x", "hydra/launcher=basic",
                                                   "hydra.job.chdir=false", "hydra.mode=MULTIRUN"]},
                           "runtime": {"output_dir": "/runs/x/1-a=b,c=d"}, "sweep": {"dir": "multirun/x"}})
    command = point_command(hc)
    assert command[2:] == ["--config-name=train", "schedule=cosine", "trainer=ddp", "hydra.job.chdir=false",
                           "hydra.run.dir='/runs/x/1-a=b,c=d'", "hydra.output_subdir=null"]
    assert "-m" not in command and quoted("it's") == "'it\\'s'"


def test_a_resumed_sweep_point_finds_an_unfinished_run_of_its_settings_under_another_name(tmp_path):
    from omegaconf import OmegaConf

    from conftest import compose_cfg
    from diffusion.sweeps import earlier_attempt

    exclude = compose_cfg("train", [], hydra=True).hydra.job.config.override_dirname.exclude_keys
    assert {"trainer.max_time", "resume", "logger"} <= set(exclude)  # slots and resumes keep the point's name

    def job(num: int, name: str, task: list[str]):
        return OmegaConf.create({"job": {"num": num, "config": {"override_dirname": {"exclude_keys": list(exclude)}}},
                                 "overrides": {"task": task}, "runtime": {"output_dir": str(tmp_path / name)},
                                 "sweep": {"dir": str(tmp_path)}})

    old = tmp_path / "0-schedule=linear,trainer.max_time=00:00:00:02"  # named while max_time was part of names
    (old / ".hydra").mkdir(parents=True)
    (old / ".hydra" / "overrides.yaml").write_text("- schedule=linear\n- trainer.max_time=00:00:00:02\n")
    resuming = job(0, "0-schedule=linear", ["schedule=linear", "resume=true"])
    assert earlier_attempt(resuming) is None  # nothing to continue there
    last_checkpoint(old).parent.mkdir()
    last_checkpoint(old).write_bytes(b"x")
    assert earlier_attempt(resuming) == old
    assert earlier_attempt(job(0, "0-schedule=cosine", ["schedule=cosine", "resume=true"])) is None  # other settings
    assert earlier_attempt(job(1, "1-schedule=linear", ["schedule=linear", "resume=true"])) is None  # another point
    write_status(old, "ok", metrics={"global_step": 20})
    assert earlier_attempt(resuming) is None  # finished there: nothing left to continue
