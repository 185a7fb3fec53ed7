"""Multirun sweeps, the report, the guidance sweep without retraining, failures, launchers and DDP on CPU."""

import base64
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

from conftest import DATA, ROOT, WANDB_ENV, free_port, run_entry, run_main
from diffusion.report import PAPER_IS, collect
from wandb_files import WANDB_KEY, keys_of, run_files

pytestmark = pytest.mark.slow  # end-to-end through the real entry points: `make test`, not `make test-fast`

TINY = ["debug=ablation", "trainer.max_steps=20", "eval.num_samples=40", "callbacks.progress=null", "logger=csv"]


def run_report(root, *args):
    return subprocess.run([sys.executable, "-m", "diffusion.report", str(root), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **WANDB_ENV})


def test_guidance_sweep_evaluates_one_checkpoint_per_omega_without_retraining(tmp_path):
    r = run_main("train.py", "experiment=ablation_guidance", *TINY, "eval.guidance=[-1,0,0.5]",
                 "~eval.samplers.fast", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(tmp_path.glob("**/checkpoints/last.ckpt"))) == 1  # trained once
    rows = collect(tmp_path)
    assert [(row["evaluation"], row["ω"]) for row in rows] == [("paper", -1), ("paper", 0), ("paper", 0.5)]
    assert len({row["iterations"] for row in rows}) == 1
    rep = run_report(tmp_path)
    assert rep.returncode == 0 and (tmp_path / "guidance.png").is_file()


def test_guidance_sweep_over_an_existing_checkpoint_with_sample_py(tiny_ckpt, tmp_path):
    r = run_main("sample.py", "-m", f"ckpt_path={tiny_ckpt}", "mode=bulk", "num_samples=30", "evaluate=true",
                 "sampler.steps=4", "guidance=-1,0,2", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = collect(tmp_path)
    assert sorted(row["ω"] for row in rows) == [-1, 0, 2] and all(row["status"] == "ok" for row in rows)


def test_repeated_evaluation_is_one_mean_and_std_row_beside_each_seed(tiny_ckpt, tmp_path):
    r = run_main("sample.py", f"ckpt_path={tiny_ckpt}", "mode=bulk", "num_samples=20", "evaluate=true", "repeats=3",
                 "sampler.steps=3", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["run"]: row for row in collect(tmp_path)}
    seeds = [rows[f"seed={s}"]["classifier FID"] for s in range(3)]
    summary = rows[f"{tmp_path.name} (mean ± std of 3 seeds)"]
    mean, std = statistics.fmean(seeds), statistics.stdev(seeds)
    assert summary["classifier FID"] == f"{mean:.4g} ± {std:.2g}"  # the paper's Table 1 format
    assert run_report(tmp_path).returncode == 0 and "± " in (tmp_path / "report.md").read_text()


def test_a_failing_run_is_reported_and_the_others_keep_their_results_in_one_wandb_group(tmp_path):
    sweep = tmp_path / "sweep-xyz"
    r = run_entry("train.py", "-m", *TINY, "logger=wandb", "timesteps=100,-5,200", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]  # the sweep finishes
    assert "job failed" in r.stderr
    rows = collect(sweep)
    ok = [row for row in rows if row["status"] == "ok"]
    failed = [row for row in rows if row["status"] != "ok"]
    assert sorted(row["T"] for row in ok) == [100, 200]
    assert len(failed) == 1 and "timesteps must be a positive integer" in failed[0]["status"]
    rep = run_report(sweep)
    assert "2 ok, 1 failed" in rep.stdout and "failed: ConfigError" in (sweep / "report.md").read_text()
    runs = run_files(sweep)  # W&B: the ok runs in one group named after the sweep, each named after its point
    assert {(f.run.run_group, f.run.display_name) for f in runs} == {("mnist/sweep-xyz", "timesteps=100"),
                                                                     ("mnist/sweep-xyz", "timesteps=200")}
    assert all(f.run.tags == [f"timesteps={f.config['timesteps']}"] for f in runs)  # the swept values only


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    r = run_entry("train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY,
                  "eval.num_samples=0", "timesteps=100,200", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    statuses = [json.loads(p.read_text())["status"] for p in tmp_path.glob("*/status.json")]
    assert statuses == ["ok", "ok"]
    assert "Joblib.Parallel" in r.stdout + r.stderr
    r = run_entry("train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, "eval.num_samples=0",
                  "timesteps=100,200", f"hydra.sweep.dir={tmp_path}", "resume=true")
    assert r.returncode == 0 and r.stdout.count("finished earlier (status.json ok); skipped") == 2, r.stdout[-3000:]


def files_of(run_dir):
    """(mtime, size) of a run's own files; Hydra rewrites .hydra/ and appends to its log for every launch."""
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run_dir.rglob("*")
            if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"}


def kill_when(first: subprocess.Popen, found, log, deadline_s: float = 300, group: bool = True) -> None:
    """SIGKILL a command's whole process group as soon as `found()` is true; `group=False`: its main process only
    (as the OOM killer does), then wait until the processes it started (W&B's service) have ended."""
    deadline = time.monotonic() + deadline_s
    while not found():
        assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)  # polling the files a training writes
    (os.killpg if group else os.kill)(first.pid, signal.SIGKILL)
    first.wait()
    while not group:
        try:
            os.killpg(first.pid, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            os.killpg(first.pid, signal.SIGKILL)
        time.sleep(0.05)  # polling for the orphaned W&B service to finish its file


PAPER = {("linear", 1000, 0.2): "16.19 / 9.56", ("linear", 4000, 0.2): "20.91 / 8.68",
         ("cosine", 1000, 0.2): "26.82 / 9.00", ("cosine", 4000, 0.2): "21.70 / 8.73",
         ("linear", 1000, 0.0): "21.12 / 9.13", ("linear", 1000, 0.5): "24.67 / 9.14"}  # the paper's Tables 2 and 3


def test_tables_2_and_3_from_a_2x2_sweep_with_two_named_evaluations_killed_mid_point_and_resumed(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=ablation_schedule", *[a for a in TINY if a != "logger=csv"], "logger=wandb",
            "trainer.max_steps=40", "trainer.log_every_n_steps=5", "callbacks.last_checkpoint.every_n_train_steps=10",
            f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "DIFFUSION_DATA": str(DATA), **WANDB_ENV, "WANDB__TRANSACTION_LOG_FLUSH_INTERVAL": "0.2"}
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        def point1_logged() -> bool:  # point 1's first checkpoint, and W&B has written some of its steps
            return bool(list(sweep.glob("1-*/checkpoints/last.ckpt"))) and any(f.steps for point in sweep.glob("1-*")
                                                                        for f in run_files(point))

        kill_when(first, point1_logged, log, group=False)
    point0, point1 = sorted(sweep.glob("0-*"))[0], sorted(sweep.glob("1-*"))[0]
    assert json.loads((point0 / "status.json").read_text())["status"] == "ok"
    assert not (point1 / "status.json").exists() and not list(sweep.glob("2-*"))
    before = files_of(point0)

    r = run_entry("train.py", *args, "resume=true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resume: {point0} finished earlier (status.json ok); skipped" in r.stdout
    assert f"resume: continuing {point1} from {point1 / 'checkpoints' / 'last.ckpt'}" in r.stdout
    assert files_of(point0) == before  # not retrained, nothing rewritten
    statuses = [json.loads((p / "status.json").read_text()) for p in sorted(sweep.glob("[0-9]-*"))]
    assert [s["status"] for s in statuses] == ["ok"] * 4
    assert [s["metrics"]["global_step"] for s in statuses] == [40] * 4  # point 1 reached the same final step

    rows = collect(sweep)  # 4 points × 2 named evaluations × 3 ω, each its own metrics.json
    assert len(rows) == 24 and all(row["status"] == "ok" and row["classifier FID"] is not None for row in rows)
    assert (point1 / "eval" / "fast" / "guidance=0.5" / "metrics.json").is_file()
    assert {(row["schedule"], row["T"]) for row in rows} == {("linear", 1000), ("linear", 4000), ("cosine", 1000),
                                                             ("cosine", 4000)}
    assert {(row["evaluation"], row["sampler"]) for row in rows} == {("paper", "ddpm 10"), ("fast", "dpm_solver 2M 10")}
    assert {row["ω"] for row in rows} == {0.2, 0, 0.5} and {row["iterations"] for row in rows} == {40}
    assert {(row["schedule"], row["T"]): (row["paper (Inception FID)"], row[PAPER_IS]) for row in rows
            if row["ω"] == 0.2} == {k[:2]: tuple(map(float, v.split(" / "))) for k, v in PAPER.items() if k[2] == 0.2}

    rep = run_report(sweep)
    assert rep.returncode == 0 and "24 ok, 0 failed" in rep.stdout, rep.stdout
    report = (sweep / "report.md").read_text()
    table, table2, table3 = report.split("\n## The seed paper's Table ")
    assert table.count("\n") == 2 + 24 and (sweep / "report.csv").is_file()
    assert table2.startswith("2: schedule × T at ω = 0.2") and table3.startswith("3: ω at linear, T = 1000")
    for text in (table2, table3):  # no Inception FID at this size: the classifier FID, labelled as such
        assert "| ours, paper: classifier FID / classifier IS | ours, fast: classifier FID / classifier IS |" in text
    for (schedule, T, w), paper in PAPER.items():  # every figure of Tables 2 and 3, with both evaluations beside it
        for text in [table2] * (w == 0.2) + [table3] * ((schedule, T) == ("linear", 1000)):
            (line,) = [row for row in text.splitlines() if row.startswith(f"| {schedule} | {T} | {w:g} |")]
            cells = line.strip("| ").split(" | ")
            assert cells[3] == paper and len(cells) == 6 and "not run" not in line, line
            assert all(float(fid) > 0 and float(is_) > 0 for fid, is_ in (c.split(" / ") for c in cells[4:])), line
        assert paper in rep.stdout
    check_wandb_of_the_sweep(sweep, point1, r.stdout)


def check_wandb_of_the_sweep(sweep, resumed, output):
    """The acceptance sweep as W&B has it (issue 43), read back from the offline run files."""
    files = run_files(sweep)
    runs = {}
    for f in files:
        runs.setdefault(f.run.run_id, []).append(f)
    ids = {json.loads((p / "wandb.json").read_text())["id"]: p for p in sorted(sweep.glob("[0-9]-*"))}
    assert set(runs) == set(ids) and len(ids) == 4  # one W&B run per point, the resumed one included
    attempts = runs[next(i for i, p in ids.items() if p == resumed)]
    assert len(attempts) == 2 and attempts[0].steps and attempts[1].steps  # its two attempts, both logged steps
    assert f"({next(i for i, p in ids.items() if p == resumed)}) (continues its W&B run)" in output
    modes = [line.split("), ", 1)[1].split(",")[0] for line in output.splitlines() if line.startswith("W&B: run ")]
    assert modes == ["offline"] * 3  # the points the resume ran (point 0 was skipped): one mode line for each
    names = set()
    for run_id, attempts in runs.items():
        steps = [s for f in attempts for s in f.steps]
        assert steps == sorted(set(steps)) and steps[-1] == 40, (run_id, steps)  # optimizer steps, never again
        point = ids[run_id]
        for f in attempts:
            assert (f.run.run_group, f.run.job_type) == ("ablation_schedule/sweep", "train")
            choices = f.config["choices"]
            assert choices["schedule"] in ("linear", "cosine") and choices["experiment"] == "ablation_schedule"
            assert f"schedule={choices['schedule']}" in point.name
            assert f"timesteps={f.config['timesteps']}" in point.name
            assert f.config["data"]["batch_size"] == 32 and f.config["loss"] == "l1" and choices["model"] == "mini"
            assert sorted(f.run.tags) == [f"schedule={choices['schedule']}", f"timesteps={f.config['timesteps']}"]
            assert all(WANDB_KEY.fullmatch(k) for k in keys_of(f)), sorted(keys_of(f))
        names.add(attempts[0].run.display_name)
        final = attempts[-1]
        for key in ("fid", "is", "class_accuracy", "fit_images_per_s", "fit_seconds"):
            assert isinstance(final.summary.get(key), float), (key, final.summary)
        assert final.summary["evaluation"] == "paper" and final.summary["eval_guidance"] == 0.2
        assert final.summary["eval/results/nrows"] == 6  # 2 evaluations × 3 ω
        tables = [a.name for a in final.artifacts if a.type == "run_table"]
        assert any("evalresults" in t for t in tables) and any("evalpaperconfusion_table" in t for t in tables)
        assert any("evalfid_vs_guidance" in t for t in tables), tables
        (model,) = [a for a in final.artifacts if a.type == "model"]
        digests = {e.path: e.digest for e in model.manifest.contents}
        weights = base64.b64encode(hashlib.md5((point / "model.safetensors").read_bytes()).digest()).decode()
        assert digests["model.safetensors"] == weights and "eval/fast/guidance=0.5/metrics.json" in digests
        assert not any(p.endswith(".ckpt") for p in digests) and "latest" in model.aliases
        assert json.loads(model.metadata)["eval/paper/w0_2/fid"] == final.summary["eval/paper/w0_2/fid"]
    assert names == {"schedule=linear,timesteps=1000", "schedule=linear,timesteps=4000",
                     "schedule=cosine,timesteps=1000", "schedule=cosine,timesteps=4000"}

    rep = run_report(sweep, "--wandb")
    assert rep.returncode == 0, rep.stderr[-3000:]
    (report,) = run_files(sweep / "wandb-report")
    assert (report.run.run_group, report.run.job_type) == ("ablation_schedule/sweep", "report")
    assert report.summary["ok"] == 24 and report.summary["report/table_2/nrows"] == 4
    assert report.summary["report/runs/nrows"] == 24 and report.summary["report/table_3/nrows"] == 3


def test_a_time_boxed_slot_then_resume_true_without_it_continues_every_point_in_its_directory_and_wandb_run(
        tmp_path):
    """The documented slot recipe: `-m … trainer.max_time=…`, then the same sweep without it and with resume=true."""
    from diffusion.runs import read_status

    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=ablation_schedule_small", *[a for a in TINY if a != "logger=csv"], "logger=wandb",
            "timesteps=1000", "schedule=linear,cosine", f"hydra.sweep.dir={sweep}"]
    r = run_entry("train.py", *args, "trainer.max_steps=100000", "trainer.max_time=00:00:00:02")
    assert r.returncode == 0, r.stderr[-3000:]
    points = sorted(sweep.glob("[0-9]-*"))
    assert [p.name for p in points] == ["0-eval.num_samples=40,schedule=linear,timesteps=1000",
                                        "1-eval.num_samples=40,schedule=cosine,timesteps=1000"]  # no max_time
    first = [read_status(p) for p in points]
    assert [s["status"] for s in first] == ["interrupted"] * 2
    stopped = [s["metrics"]["global_step"] for s in first]
    assert all(step > 0 for step in stopped)

    final = max(stopped) + 5
    r = run_entry("train.py", *args, f"trainer.max_steps={final}", "resume=true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(sweep.glob("[0-9]-*")) == points  # the same directories, no new ones
    for point in points:
        assert f"resume: continuing {point} from {point / 'checkpoints' / 'last.ckpt'}" in r.stdout
        status = read_status(point)
        assert status["status"] == "ok" and status["metrics"]["global_step"] == final
        assert status["metrics"]["fit_images"] == final * 32  # both slots' steps, counted once
    assert "starts from step 0" not in r.stdout
    modes = [line.split("), ", 1)[1].split(",")[0] for line in r.stdout.splitlines() if line.startswith("W&B: run ")]
    assert modes == ["offline"] * 2  # one mode line, the same for every point (not "dryrun" after the first)
    runs = {}
    for f in run_files(sweep):
        runs.setdefault(f.run.run_id, []).append(f)
    ids = {json.loads((p / "wandb.json").read_text())["id"] for p in points}
    assert set(runs) == ids and len(ids) == 2  # one W&B run per point across both slots
    for attempts in runs.values():
        steps = [s for f in attempts for s in f.steps]
        assert len(attempts) == 2 and steps == sorted(set(steps)) and steps[-1] == final


def test_submitit_local_runs_each_point_as_a_submitit_job_and_the_report_reads_the_sweep(tmp_path):
    r = run_entry("train.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *TINY,
                  "eval.num_samples=20", "timesteps=100,200", f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tmp_path / ".submitit").glob("*/*_submitted.pkl"))) == 2  # one submitit job per point
    statuses = [json.loads(p.read_text())["status"] for p in sorted(tmp_path.glob("*/status.json"))]
    assert statuses == ["ok", "ok"]
    rep = run_report(tmp_path)
    assert rep.returncode == 0 and "2 ok, 0 failed" in rep.stdout, rep.stdout


def test_the_slurm_recipe_asks_sbatch_for_the_ranks_gpus_and_time_of_the_ddp_points(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/job.sbatch\necho "sbatch: stopped by the test" >&2\n'
                                 "exit 1\n")
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks that it exists
    for tool in ("sbatch", "srun"):
        (fake / tool).chmod(0o755)
    r = run_entry("train.py", "-m", "experiment=ablation_schedule", "hydra/launcher=submitit_slurm",
                  "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4",
                  "hydra.launcher.tasks_per_node=4", "hydra.launcher.timeout_min=600", "trainer=ddp",
                  "trainer.devices=4", "trainer.num_nodes=2", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                  env={"PATH": f"{fake}:{os.environ['PATH']}"}, timeout=120)
    script = (tmp_path / "job.sbatch").read_text()  # what a cluster would have been asked for
    for line in ["#SBATCH --partition=gpu", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --time=600", "#SBATCH --array=0-3"]:
        assert any(have.startswith(line) for have in script.splitlines()), (line, script)
    assert "srun" in script and "submitit.core._submit" in script
    assert r.returncode != 0 and "sbatch: stopped by the test" in r.stderr


def test_slurm_without_slurm_or_with_tasks_not_matching_devices_is_refused_in_one_line(tmp_path):
    args = ["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.tasks_per_node=1", "trainer=ddp", "trainer.devices=4",
            "timesteps=100,200"]
    r = run_main("train.py", *args, cwd=tmp_path, env={"PATH": os.path.dirname(sys.executable)})
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "error: hydra/launcher=submitit_slurm submits to SLURM and finds no sbatch/srun here: run the sweep on the "
        "cluster's login node, or use hydra/launcher=submitit_local to run the same jobs on this machine"]
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("sbatch", "srun"):
        (fake / tool).write_text("#!/bin/sh\nexit 1\n")
        (fake / tool).chmod(0o755)
    r = run_main("train.py", *args, cwd=tmp_path, env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "error: SLURM starts the DDP ranks itself: hydra.launcher.tasks_per_node (1) must equal trainer.devices (4) "
        "and hydra.launcher.nodes (1) trainer.num_nodes (1)"]


def test_slurm_variables_of_rank_1_of_2_make_the_process_rank_1(tmp_path):
    """What srun does on a node: one process per task, ranks read from SLURM's environment, none re-launched."""
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "ddp-test", "SLURM_JOB_ID": "4242",
             "SLURM_NODELIST": "localhost", "SLURM_NODEID": "0", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(free_port()), **PROBES}
    args = [sys.executable, str(ROOT / "train.py"), *DDP, *TINY, "eval.num_samples=0",
            "module._target_=ddp_probes.NoiseProbe", f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "DIFFUSION_DATA": str(DATA), "WANDB_MODE": "offline", **slurm}
    ranks = [subprocess.Popen(args, cwd=ROOT, env={**env, "SLURM_PROCID": str(k), "SLURM_LOCALID": str(k)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], outputs[1][-3000:]
    assert (tmp_path / "noise_rank0.txt").is_file() and (tmp_path / "noise_rank1.txt").is_file()
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["metrics"]["world_size"] == 2 and status["metrics"]["global_step"] == 20
    assert "finished at step 20" in outputs[0] and "finished at step" not in outputs[1]  # rank 1 writes nothing


DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
PROBES = {"PYTHONPATH": str(ROOT / "tests")}  # tests/ddp_probes.py, for every rank


def test_ddp_with_two_gloo_processes_trains_evaluates_and_draws_different_noise_per_rank(tmp_path):
    r = run_entry("train.py", *DDP, *TINY, "eval.num_samples=30", "module._target_=ddp_probes.NoiseProbe",
                  f"hydra.run.dir={tmp_path}", env=PROBES, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["num_samples"] == 30  # 15 per rank, gathered by torchmetrics
    assert m["step"] == 20
    digests = [(tmp_path / f"noise_rank{k}.txt").read_text() for k in (0, 1)]
    assert digests[0] != digests[1]  # else the global batch repeats the same t, ε and dropout on every rank


def test_a_nan_on_one_rank_stops_both_ranks_with_one_line(tmp_path):
    r = run_entry("train.py", *DDP, *TINY, "trainer.log_every_n_steps=5", "eval.num_samples=0",
                  "module._target_=ddp_probes.NaNOnRankOne", f"hydra.run.dir={tmp_path}", env=PROBES, timeout=300)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert errors == ["error: the loss became NaN or infinite at step 3; training stopped, the last checkpoint "
                      "(saved before it) is kept"], r.stderr[-3000:]  # rank 0's line, with rank 1's first bad step
    assert not (tmp_path / "checkpoints" / "interrupted.ckpt").exists()


def test_multirun_with_ddp_trains_each_point_on_two_ranks_a_nan_fails_only_its_point_and_a_resume_retries_it(
        tmp_path):
    args = ["-m", "schedule=linear,cosine", *DDP, "debug=fast", "module._target_=ddp_probes.NaNOnRankOneOfOneSchedule"]
    r = run_entry("train.py", *args, cwd=tmp_path, env={**PROBES, "PROBE_NAN_SCHEDULE": "linear"}, timeout=600)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()  # one launch, one time-stamped tree
    points = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("-")[0] for p in points] == ["0", "1"]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: job failed (NonFiniteLossError: the loss became NaN or infinite at step 3; training "
                      f"stopped, the last checkpoint (saved before it) is kept); recorded in {points[0]}/status.json"]
    linear, cosine = (json.loads((p / "status.json").read_text()) for p in points)
    assert linear["status"] == "failed" and cosine["status"] == "ok"
    assert cosine["metrics"]["world_size"] == 2 and cosine["metrics"]["global_step"] == 20
    assert (points[1] / "model.safetensors").is_file() and not (points[0] / "model.safetensors").exists()
    rep = run_report(sweep)
    assert rep.returncode == 0 and "1 ok, 1 failed" in rep.stdout, rep.stdout
    assert subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).stdout == b""  # no rank outlives

    before = files_of(points[1])
    r = run_entry("train.py", *args, f"hydra.sweep.dir={sweep}", "resume=true", cwd=tmp_path, env=PROBES)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert files_of(points[1]) == before  # the finished point is skipped
    linear = json.loads((points[0] / "status.json").read_text())  # the failed one is retried, on two ranks again
    assert linear["status"] == "ok" and linear["metrics"]["world_size"] == 2
    assert "2 ok, 0 failed" in run_report(sweep).stdout


def test_joblib_with_ddp_points_is_refused_in_one_line_before_the_sweep_starts(tmp_path):
    r = run_entry("train.py", "-m", "schedule=linear,cosine", *DDP, "debug=fast", "hydra/launcher=joblib",
                  cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: hydra/launcher=joblib runs sweep points side by side with one device each and cannot give each "
        "point 2 DDP ranks; drop hydra/launcher=joblib to run the DDP points one after another, or use trainer=gpu "
        "for one GPU per point (docs/sweeps.md, \"GPUs and clusters\")"]
    assert not (tmp_path / "multirun").exists()  # nothing launched, no sweep tree


def test_a_crash_on_one_rank_saves_the_interrupt_checkpoint_without_deadlock(tmp_path):
    from diffusion.checkpoint import load_module

    r = run_entry("train.py", *DDP, *TINY, "eval.num_samples=0", "module._target_=ddp_probes.CrashOnRankZero",
                  f"hydra.run.dir={tmp_path}", env=PROBES, timeout=300)  # a barrier in the save would hang here
    assert r.returncode != 0 and "planted crash on rank 0" in r.stderr
    module = load_module(tmp_path / "checkpoints" / "interrupted.ckpt", weights="raw")
    assert module.checkpoint_step == 3


def test_an_optuna_search_minimises_the_fid_and_a_rerun_carries_on_its_stored_study(tmp_path):
    import optuna

    args = ["hparams_search=optuna_fid", "debug=fast", "callbacks.progress=null", "logger=csv",
            f"hydra.sweep.dir={tmp_path}"]
    r = run_entry("train.py", *args, "hydra.sweeper.n_trials=3")
    assert r.returncode == 0, r.stderr[-3000:]
    trials = optuna.load_study(study_name="optuna_fid", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    recorded = [json.loads(next(tmp_path.glob(f"{k}-*/status.json")).read_text())["metrics"]["eval/fid"]
                for k in range(3)]
    assert [t.value for t in trials] == pytest.approx(recorded)  # the objective is each run's end-of-run FID
    assert len({t.params["optim.lr"] for t in trials}) == 3
    assert f"best_value: {min(recorded)}" in (tmp_path / "optimization_results.yaml").read_text()

    r = run_entry("train.py", *args, "hydra.sweeper.n_trials=4")  # the same search, carried on to 4 trials
    assert r.returncode == 0, r.stderr[-3000:]
    assert "search: study 'optuna_fid' has 3 finished trial(s) of 4; running 1 more" in r.stdout
    assert len(optuna.load_study(study_name="optuna_fid", storage=f"sqlite:///{tmp_path}/optuna.db").trials) == 4
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("[0-9]*-*")) == ["0", "1", "2", "3"]
