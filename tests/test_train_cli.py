"""train.py end to end, exactly as a user types it (with tiny overrides), resume and bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, ROOT, TINY_RUN, run_entry, run_main
from diffusion.checkpoint import load_module
from diffusion.module import NonFiniteLossError
from diffusion.train import train
from wandb_files import WANDB_KEY, keys_of, run_files

pytestmark = pytest.mark.slow  # end-to-end through the real entry points: `make test`, not `make test-fast`

FAST = ["debug=fast", "callbacks.progress=null"]


def step_of(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.parametrize("data", ["mnist", "fashion"])
def test_acceptance_command_leaves_a_complete_run_directory(data, request):
    """The session's shared runs are the README's `python train.py schedule=cosine guidance=0.2` (conftest.TINY_RUN)."""
    run = request.getfixturevalue("tiny_run" if data == "mnist" else "tiny_fashion_run")
    assert "trainable parameters" in run.result.stdout
    for f in ["checkpoints/last.ckpt", "params.md", "config.yaml", "samples/final.png", ".hydra/overrides.yaml",
              "csv/metrics.csv", "metrics.json", "loss_curves.png", "model.safetensors", "status.json"]:
        assert (run.dir / f).is_file(), f
    assert step_of(run.ckpt) == 30
    saved = (run.dir / "config.yaml").read_text()
    assert "schedule:" in saved and "kind: cosine" in saved and f"name: {data}" in saved
    params = (run.dir / "params.md").read_text()
    assert "**total**" in params and "| bottleneck |" in params and "| time and label embedding |" in params
    assert "eval/class_accuracy" in (run.dir / "csv/metrics.csv").read_text()  # logged, not only written


def test_resume_continues_step_count_with_optimizer_and_ema(tiny_run, tmp_path):
    a, b = tiny_run.dir, tmp_path / "b"  # a: the session's 30-step run
    ckpt = torch.load(a / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 30 and ckpt["optimizer_states"] and "current_model_state" in ckpt  # EMA kept
    r = run_main("train.py", *TINY_RUN, "trainer.max_steps=60", f"ckpt_path={a}/checkpoints/last.ckpt",
                 f"hydra.run.dir={b}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert step_of(b / "checkpoints/last.ckpt") == 60
    curve = torch.load(b / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["callbacks"]["LossCurves"]
    steps = [step for step, _ in curve["train"]]
    assert steps == sorted(steps) and steps[0] < 30 < steps[-1]  # the resumed run's curve starts before the resume
    assert (b / "loss_curves.png").is_file()
    first, resumed = (json.loads((run / "status.json").read_text())["metrics"] for run in (a, b))
    assert first["fit_images"] == 30 * 32 and resumed["fit_images"] == 60 * 32  # the model's training, both attempts
    assert 0 < first["fit_seconds"] < resumed["fit_seconds"]
    for m in (first, resumed):
        assert m["fit_images_per_s"] * m["fit_seconds"] == pytest.approx(m["fit_images"], rel=0.02)
        assert m["steady_images_per_s"] > 0  # this attempt's steps after its first 20


def test_sigkill_mid_epoch_then_resume_finishes_with_the_same_step_count(tmp_path):
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    args = [sys.executable, str(ROOT / "train.py"), *FAST, "trainer.max_steps=120",
            "callbacks.last_checkpoint.every_n_train_steps=20", f"hydra.run.dir={run}"]
    env = dict(os.environ, DIFFUSION_DATA=str(DATA))
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints/last.ckpt"
    deadline = time.monotonic() + 300
    try:
        while not (last.is_file() and step_of(last) >= 40):  # wait for a checkpoint well into the epoch
            assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = step_of(last)  # still loadable: written atomically
    assert 40 <= killed_at < 120
    r = run_entry("train.py", *FAST, "trainer.max_steps=120", f"ckpt_path={last}", f"hydra.run.dir={resumed}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert step_of(resumed / "checkpoints/last.ckpt") == 120


def test_a_run_stopped_by_max_time_is_interrupted_and_resume_true_gives_it_a_fresh_slot_to_finish(tmp_path):
    from diffusion.runs import read_status

    args = [*FAST, "eval.num_samples=0", "logger=none", "trainer.max_time=00:00:00:02", f"hydra.run.dir={tmp_path}"]
    r = run_entry("train.py", *args, "trainer.max_steps=100000")
    assert r.returncode == 0, r.stderr[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    stopped = step_of(last)  # saved where the time ran out, not at the last every-10-steps save
    reason = f"stopped by trainer.max_time at step {stopped} of 100000"
    assert 0 < stopped < 100000 and f"{reason}; recorded as interrupted" in r.stdout
    assert read_status(tmp_path)["status"] == "interrupted" and read_status(tmp_path)["error"] == reason
    assert not (tmp_path / "model.safetensors").exists()  # not finished: no final weights, no evaluation

    # the first slot's 2 s are not counted again (Lightning's Timer alone would stop this run at once)
    r = run_entry("train.py", *args, f"trainer.max_steps={stopped + 5}", "resume=true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resume: continuing {tmp_path} from {last}" in r.stdout and "recorded as interrupted" not in r.stdout
    status = read_status(tmp_path)
    assert status["status"] == "ok" and status["metrics"]["global_step"] == stopped + 5
    assert (tmp_path / "model.safetensors").is_file()


def test_a_compiled_training_step_matches_the_eager_one(tmp_path):
    """compile=true through the compiler's CPU backend (inductor): the same losses as eager, step for step (fp32)."""
    losses = {}
    for setting in ("false", "true"):
        r = run_entry("train.py", "debug=fast", "trainer.max_steps=6", "trainer.log_every_n_steps=1", "eval.num_samples=0",
                      "callbacks.progress=null", f"compile={setting}", f"hydra.run.dir={tmp_path / setting}",
                      env={"DIFFUSION_CPU_BF16": "0"})
        assert r.returncode == 0, r.stderr[-3000:]
        rows = (tmp_path / setting / "csv" / "metrics.csv").read_text().splitlines()
        column = rows[0].split(",").index("train/loss_step")
        losses[setting] = [float(v) for row in rows[1:] if (v := row.split(",")[column])]
    assert len(losses["true"]) == 6 and losses["true"] == pytest.approx(losses["false"], rel=1e-5)


def test_wandb_logger_runs_offline_without_prompting(tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_MODE": ""}
    env_clean = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    cmd = [sys.executable, str(ROOT / "train.py"), *FAST, "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}"]
    r = subprocess.run(cmd, cwd=ROOT, env={**env_clean, **env, "DIFFUSION_DATA": str(DATA)}, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / "run"
    assert f"offline, files in {run_dir / 'wandb'}; upload with `wandb sync {run_dir / 'wandb'}/offline-run-*`" \
        in r.stdout
    (run,) = run_files(run_dir)
    assert run.run.display_name == "mnist-linear-T1000-w0.5" and run.run.job_type == "train"
    assert run.config["choices"]["schedule"] == "linear" and run.config["schedule"]["kind"] == "linear"  # nested
    assert run.run.tags == [] and all(WANDB_KEY.fullmatch(k) for k in keys_of(run)), sorted(keys_of(run))
    assert run.summary["samples/captions"] == ["zero", "one", "two", "three", "four", "five", "six", "seven",
                                               "eight", "nine"]  # the sample grid, one captioned row per class
    assert isinstance(run.summary["fid"], float) and run.summary["global_step"] == 20


@pytest.mark.parametrize("override,message", [
    ("timesteps=-5", "timesteps must be a positive integer"),
    ("timesteps=0", "timesteps must be a positive integer"),
    ("guidance=-1", "guidance (ω) must be a number ≥ 0"),
    ("p_uncond=1.5", "p_uncond must be in [0, 1]"),
    ("loss=huber", "loss must be 'mse' or 'l1'"),
    ("prediction=score", "prediction must be one of 'eps', 'v', 'x0', got 'score'"),
    ("loss_weight=p2", "loss_weight must be 'none' or 'min_snr', got 'p2'"),
    ("snr_gamma=0", "snr_gamma must be a number > 0, got 0"),
    ("sampler.steps=5000", "sampler.steps must be an integer between 1 and timesteps (1000)"),
    ("ckpt_path=/no/such.ckpt", "ckpt_path /no/such.ckpt does not exist"),
    ("guidance=nan", "guidance (ω) must be a number ≥ 0, got nan"),
    ("guidance=inf", "guidance (ω) must be a number ≥ 0, got inf"),
    ("eval.guidance=[0,nan]", "eval.guidance (ω) must be a number ≥ -1 (-1: unconditional), got nan"),
    ("optim.lr=-1", "optim.lr must be a number > 0, got -1"),
    ("optim.lr=0", "optim.lr must be a number > 0, got 0"),
    ("trainer.max_steps=0", "trainer.max_steps must be an integer ≥ 1 (or -1 with trainer.max_epochs ≥ 1), got 0"),
    (f"seed={2**64}", "seed must be an integer in [0, 2^32 - 1]"),
    ("model.downsample=avgpool", "downsample must be 'maxpool' or 'conv', got 'avgpool'"),
    ("model.condition=middle", "condition must be 'all', 'bottleneck' or 'bottleneck_input', got 'middle'"),
    ("model.condition=bottleneck_input",
     "condition=bottleneck_input adds the embedding to the bottleneck's input: channels[-1] (128) must equal emb_dim"),
    ("model.null_label=none", "null_label must be 'learned' or 'zero', got 'none'"),
    ("model.time_dim=0", "time_dim must be a positive integer, got 0"),
    ("sampler=own", "sampler=own is sample.py's (a model's own sampler); a run names the one it samples with"),
    ("data.val_size=-1", "data.val_size (0: validate on the test set) must be an integer ≥ 0, got -1"),
    ("data.batch_size=abc", "data.batch_size must be an integer ≥ 1, got 'abc'"),
    ("sampler=ddim sampler.eta=abc", "sampler.eta must be a number, got 'abc'"),
    ("sampler=dpm_solver sampler.order=7", "sampler.order must be one of 2, 3, got 7"),
    ("eval.inception=sometimes", "eval.inception must be true, false or published"),
    ("trainer.max_time=99999999999:00:00:00", "trainer.max_time must be DD:HH:MM:SS"),
    ("model.activation=tanh", "activation must be one of ['gelu', 'relu', 'silu'], got 'tanh'"),
    ("model.mid_attention=around", "mid_attention must be 'each' or 'between', got 'around'"),
    ("model.up_channels=[64]", "up_channels needs one width per level (3), got [64]"),
    ("model.time_hidden=-8", "time_hidden must be a positive integer, got -8"),
    ("model.stem_channels=0", "stem_channels must be a positive integer, got 0"),
    ("compile=fast", "compile must be true, false or one of default, reduce-overhead, max-autotune; got 'fast'"),
    ("resume=maybe", "resume must be true or false, got 'maybe'"),
    ("trainer.max_time=5min",
     "trainer.max_time must be DD:HH:MM:SS of at most 99,999 days, e.g. 00:03:50:00, got '5min'"),
    ("+eval.samplers.x.steps=5", "eval.samplers.x names no sampler; add one with +sampler@eval.samplers.x=NAME"),
    ("experiment=ablation_schedule eval.samplers.fast.steps=5000",
     "eval.samplers.fast.steps must be an integer between 1 and timesteps (1000), got 5000"),
    ("resume=true ckpt_path=x.ckpt", "resume=true finds the run directory's own checkpoints/last.ckpt; drop ckpt_path"),
    ("eval.weights=worst", "eval.weights must be"),
    ("eval.weights=best callbacks.best_checkpoint=null", "eval.weights=best needs callbacks.best_checkpoint"),
    *([] if torch.cuda.is_available() else
      [("trainer=gpu", "trainer.accelerator=gpu needs a CUDA GPU and none is visible here; use trainer=cpu")]),
])
def test_invalid_values_fail_with_one_clear_line(override, message, tmp_path):
    r = run_main("train.py", *override.split(), f"hydra.run.dir={tmp_path}")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "checkpoints").exists()  # caught before any set-up


def test_eval_weights_best_exports_and_evaluates_the_best_validation_checkpoint(tmp_path):
    r = run_main("train.py", *FAST, "logger=csv", "trainer.max_steps=30", "+trainer.val_check_interval=10",
                 "eval.weights=best", "eval.num_samples=20", f"hydra.run.dir={tmp_path}",
                 "callbacks.best_checkpoint.mode=max")  # "best": the highest loss, so that it is not the last step
    assert r.returncode == 0, r.stderr[-3000:]
    (best,) = (tmp_path / "checkpoints").glob("best-*.ckpt")
    step = torch.load(best, map_location="cpu", weights_only=False)["global_step"]
    assert f"eval.weights=best: the weights of step {step}, the best validation loss" in r.stdout
    losses = [float(row.split(",")[header.index("val/loss")]) for rows in [open(p).read().splitlines()
              for p in tmp_path.glob("**/metrics.csv")] for header in [rows[0].split(",")] for row in rows[1:]
              if row.split(",")[header.index("val/loss")]]
    assert len(losses) == 3 and step == 10 * (1 + losses.index(max(losses))) and step != 30  # validations: 10, 20, 30
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == step
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert f.metadata()["global_step"] == str(step)
    exported = load_module(tmp_path / "model.safetensors").state_dict()
    kept = load_module(best).state_dict()
    assert all(torch.equal(exported[k], kept[k]) for k in kept)  # the best checkpoint's weights, exactly


@pytest.mark.parametrize("script", ["train.py", "sample.py"])
def test_unwritable_output_directory_gets_one_line(script):
    r = run_entry(script, "hydra.run.dir=/proc/no/such/dir")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "error: cannot write the output directory /proc/no/such/dir (No such file or directory); "
        "choose another with hydra.run.dir=..."]


@pytest.mark.parametrize("override,message", [
    ("schedule=no_such_schedule", "Could not find 'schedule/no_such_schedule'"),
    ("model=huge", "Could not find 'model/huge'"),
    ("learning_rate=3", "Could not override 'learning_rate'"),
])
def test_unknown_options_fail_with_hydras_message(override, message, tmp_path):
    r = run_main("train.py", override, f"hydra.run.dir={tmp_path}")
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr
    if "Could not find" in message:
        assert "Available options" in r.stderr


def test_missing_data_says_make_data(tmp_path):
    r = run_main("train.py", f"hydra.run.dir={tmp_path}", env={"DIFFUSION_DATA": str(tmp_path / "empty")})
    assert r.returncode == 1 and "run `make data`" in r.stderr and "Traceback" not in r.stderr


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(train_cfg, tmp_path,
                                                                                         monkeypatch):
    from diffusion.module import DiffusionModule

    real = DiffusionModule.diffusion_loss

    def poisoned(self, *args, **kwargs):
        loss = real(self, *args, **kwargs)
        return loss * float("nan") if self.global_step >= 12 else loss

    monkeypatch.setattr(DiffusionModule, "diffusion_loss", poisoned)
    cfg = train_cfg("callbacks.last_checkpoint.every_n_train_steps=5")
    with pytest.raises(NonFiniteLossError, match=r"NaN or infinite at step 12; training stopped"):
        train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "checkpoints/interrupted.ckpt").exists()


def test_unpadded_28x28_data_trains_samples_and_evaluates(tmp_path):
    r = run_main("train.py", *FAST, "data.pad=0", "trainer.max_steps=10", "logger=none", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "class_accuracy" in json.loads((tmp_path / "metrics.json").read_text())  # evaluator framed to its 32×32
    out = tmp_path / "bulk"
    r = run_main("sample.py", f"ckpt_path={tmp_path}/checkpoints/last.ckpt", "mode=bulk", "num_samples=10",
                 "evaluate=true", "sampler.steps=3", f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.load(out / "samples.npz")["images"].shape == (10, 28, 28)  # the model's own shape, no border


SEEDS = ["seed000", "seed001", "seed002", "seed003", "seed004"]


def test_seed_presets_shortened_as_a_user_would_train_and_sample_their_own_way(tmp_path):
    """Every seed's preset stopped at step 2, before its first validation (early stopping and the plateau schedule
    find no val/loss yet and must not fail), in one multirun; then each checkpoint is sampled with no sampler named:
    its own (DDPM; `sampler.steps=2` keeps the run short and travels with the checkpoint)."""
    fast = ["eval.num_samples=0", "logger=none", "callbacks.progress=null", "callbacks.sample_grid.n_per_class=1",
            "data.batch_size=8", "sampler.steps=2"]
    r = run_main("train.py", "-m", f"experiment={','.join(SEEDS)}", "trainer.max_steps=2", *fast,
                 f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=${hydra.job.num}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "error:" not in r.stderr, r.stderr[-3000:]
    ckpts = []
    for num, preset in enumerate(SEEDS):  # the jobs run in the order given
        assert json.loads((tmp_path / str(num) / "status.json").read_text())["status"] == "ok", preset
        ckpts.append(tmp_path / str(num) / "checkpoints" / "last.ckpt")
        ckpt = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
        hp = ckpt["hyper_parameters"]
        assert ckpt["global_step"] == 2 and hp["net"]["_target_"] == "diffusion.unet.UNet", preset
        size = 32 if preset == "seed000" else 28  # the blog pads to 32×32; the others train at 28×28
        assert ckpt["state_dict"]["net.inp.weight"].shape[1] == 1 and hp["data"]["size"] + 2 * hp["data"]["pad"] == size
        assert hp["sampler"]["_target_"] == "diffusion.samplers.ddpm_sample", preset
        ema = any(k.startswith("WeightAveraging") for k in ckpt["callbacks"])
        assert ema == (preset == "seed003"), preset  # only the paper's preset averages (our choice: it states none)
        if preset == "seed001":  # unconditional
            assert hp["net"]["conditional"] is False and hp["schedule"]["kind"] == "cosine"
            assert not any(k.startswith("net.label") for k in ckpt["state_dict"])
        if preset == "seed004":  # T=100, Adam + plateau scheduler, early stopping, ω = 2
            assert hp["schedule"]["timesteps"] == 100 and hp["guidance"] == 2.0
            assert ckpt["lr_schedulers"][0]["patience"] == 3
            stopper = [v for k, v in ckpt["callbacks"].items() if k.startswith("EarlyStopping")]
            assert stopper and stopper[0]["patience"] == 5
    out = tmp_path / "samples"
    r = run_main("sample.py", "-m", f"ckpt_path={','.join(map(str, ckpts))}", "mode=bulk", "num_samples=2",
                 f"hydra.sweep.dir={out}", "hydra.sweep.subdir=${hydra.job.num}")
    assert r.returncode == 0, r.stderr[-3000:]
    own = "sampler: ddpm, 2 steps, sigma=posterior (the model's own; sampler=NAME for another)"
    assert r.stdout.count(own) == len(SEEDS), r.stdout
    for num, preset in enumerate(SEEDS):
        images = np.load(out / str(num) / "samples.npz")["images"]
        assert images.shape == ((2, 32, 32) if preset == "seed000" else (2, 28, 28)), preset


def test_a_wandb_agents_run_is_the_one_train_py_logs_into(tmp_path):
    """What `wandb agent` runs for sweeps/wandb_ablation_schedule.yaml: its command, with the point as Hydra overrides
    and the agent's run id in WANDB_RUN_ID (offline here; tiny overrides appended)."""
    import yaml

    sweep = yaml.safe_load((ROOT / "sweeps" / "wandb_ablation_schedule.yaml").read_text())
    point = {"schedule": "cosine", "timesteps": 100}
    assert set(point) == set(sweep["parameters"]) and sweep["metric"]["name"] == "eval/fast/w0_2/fid"
    args = {"${env}": [], "${interpreter}": [], "${program}": [],
            "${args_no_hyphens}": [f"{k}={v}" for k, v in point.items()]}
    command = [a for part in sweep["command"] for a in args.get(part, [part])]
    assert sweep["program"] == "train.py" and command[:2] == ["experiment=ablation_schedule", "logger=wandb"]
    r = run_main("train.py", *command, "debug=ablation", "trainer.max_steps=10", "eval.num_samples=20",
                 "callbacks.progress=null", f"hydra.run.dir={tmp_path}", env={"WANDB_RUN_ID": "agentrun0001"})
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = run_files(tmp_path)
    assert run.run.run_id == "agentrun0001"
    assert json.loads((tmp_path / "wandb.json").read_text())["id"] == "agentrun0001"
    assert run.config["choices"]["schedule"] == "cosine" and run.config["timesteps"] == 100
    assert isinstance(run.summary["eval/fast/w0_2/fid"], float)  # the sweep's metric, as W&B reads it


def test_a_slot_that_ends_before_its_first_step_is_interrupted_not_finished(tmp_path):
    from diffusion.runs import read_status

    r = run_main("train.py", *FAST, "eval.num_samples=0", "logger=none", "trainer.max_time=00:00:00:00",
                 f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    status = read_status(tmp_path)
    assert status["status"] == "interrupted" and status["error"].startswith("stopped by trainer.max_time at step 0 of")
    assert not (tmp_path / "model.safetensors").exists()  # so resume=true trains it, rather than skipping it


@pytest.mark.parametrize("name,content,logger", [
    ("status.json", b"[1, 2]", "logger=none"),                      # another JSON type
    ("status.json", b"\xff\xfe\x00garbage", "logger=none"),         # not UTF-8
    ("status.json", b'{"status": "ok", "metr', "logger=none"),      # cut off mid-write
    ("wandb.json", b'{"id": "../../../x"}', "logger=wandb"),        # an id that is a path
    ("wandb.json", b'{"id": 5, "name": {"a": 1}}', "logger=wandb"),  # values of other types
])
def test_resume_true_over_a_broken_run_state_file_continues_and_says_so_in_one_line(tmp_path, name, content, logger):
    from diffusion.runs import read_status

    args = [*FAST, "eval.num_samples=0", logger, f"hydra.run.dir={tmp_path}"]
    r = run_main("train.py", *args, "trainer.max_steps=10")
    assert r.returncode == 0, r.stderr[-3000:]
    (tmp_path / "status.json").write_text('{"status": "interrupted", "error": null, "metrics": {}}')
    (tmp_path / name).write_bytes(content)
    r = run_main("train.py", *args, "trainer.max_steps=15", "resume=true")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    said = [line for line in r.stdout.splitlines() if f"{tmp_path / name}: " in line]
    assert len(said) == 1, r.stdout[-3000:]
    assert f"resume: continuing {tmp_path}" in r.stdout and read_status(tmp_path)["metrics"]["global_step"] == 15
    if name == "wandb.json":  # a new W&B run, with a sound identity
        assert json.loads((tmp_path / "wandb.json").read_text())["id"] != "../../../x"


@pytest.mark.parametrize("name", ["status.json", "wandb.json"])
def test_resume_true_over_a_run_state_file_that_is_a_directory_stops_with_one_line(tmp_path, name):
    (tmp_path / name).mkdir(parents=True)
    r = run_main("train.py", *FAST, "eval.num_samples=0", "logger=wandb", "resume=true", f"hydra.run.dir={tmp_path}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / name}: a directory"), \
        r.stderr[-3000:]
