"""sample.py end to end on a tiny checkpoint trained in the session: every mode, prompts, stdin, bad input.

Most runs go through sample.py's own main in the test process (conftest.run_main: the same argv, composition and
entry point); those that need a process of their own (stdin, signals, Hydra's own error path, the first start in
an empty directory) run as one."""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, run_entry, run_main
from wandb_files import run_files

pytestmark = pytest.mark.slow  # end-to-end through the real entry points: `make test`, not `make test-fast`

FAST = ["sampler.steps=5"]


def sample(ckpt, out, *args, input=None):
    """`python sample.py ckpt_path=… <args>`: in this process, or as its own process where stdin is fed."""
    args = (f"ckpt_path={ckpt}", f"out_dir={out}", f"hydra.run.dir={out}", *FAST, *args)
    return run_main("sample.py", *args) if input is None else run_entry("sample.py", *args, input=input)


@pytest.mark.parametrize("mode,files,size", [
    ("grid", ["grid.png"], None), ("random", ["random.png"], None), ("fixed_noise", ["fixed_noise.png"], None),
    ("noise_pairs", ["noise_pairs.png"], None),
    ("progression", ["progression.png", "progression.gif"], None), ("forward", ["forward.png"], None),
])
def test_each_mode_writes_its_images(tiny_ckpt, tmp_path, mode, files, size):
    r = sample(tiny_ckpt, tmp_path, f"mode={mode}", "n_per_class=3")
    assert r.returncode == 0, r.stderr[-3000:]
    for f in files:
        assert (tmp_path / f).is_file() and str(tmp_path / f) in r.stdout
        img = Image.open(tmp_path / f)
        assert img.width > 64 and img.height > 64
    if mode == "progression":
        assert Image.open(tmp_path / "progression.gif").n_frames > 3


def test_grid_has_one_row_per_class_and_prompt_selects_one(tiny_ckpt, tmp_path):
    assert sample(tiny_ckpt, tmp_path / "all", "n_per_class=2").returncode == 0
    assert sample(tiny_ckpt, tmp_path / "seven", "n_per_class=2", "prompt=seven").returncode == 0
    full, one = Image.open(tmp_path / "all/grid.png"), Image.open(tmp_path / "seven/grid.png")
    assert 9 < full.height / one.height < 11


@pytest.mark.parametrize("bs", [4, 7])
def test_bulk_npz_pngs_and_batch_size_invariance(tiny_ckpt, tmp_path, bs):
    r = sample(tiny_ckpt, tmp_path / "ref", "mode=bulk", "num_samples=14", "batch_size=14", "png_dir=true")
    assert r.returncode == 0, r.stderr[-3000:]
    r = sample(tiny_ckpt, tmp_path / "bs", "mode=bulk", "num_samples=14", f"batch_size={bs}")
    assert r.returncode == 0, r.stderr[-3000:]
    ref, other = np.load(tmp_path / "ref/samples.npz"), np.load(tmp_path / "bs/samples.npz")
    assert ref["images"].shape == (14, 32, 32) and ref["images"].dtype == np.uint8
    assert np.bincount(ref["labels"]).tolist() == [2, 2, 2, 2, 1, 1, 1, 1, 1, 1]
    assert len(list((tmp_path / "ref/png").glob("*.png"))) == 14
    diff = np.abs(ref["images"].astype(int) - other["images"].astype(int))
    assert diff.max() <= 2, f"image i changed with the batch size (max diff {diff.max()})"


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["sigint_default", "sigint_ignored"])
def test_bulk_interrupt_keeps_complete_valid_npz(tiny_ckpt, tmp_path, sigint):
    """Ctrl-C works however the process was started (`cmd &` in a script starts it with SIGINT ignored)."""
    args = [sys.executable, str(ROOT / "sample.py"), f"ckpt_path={tiny_ckpt}", f"out_dir={tmp_path}",
            f"hydra.run.dir={tmp_path}", "mode=bulk", "num_samples=4000", "batch_size=50", "sampler.steps=20"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    npz, deadline = tmp_path / "samples.npz", time.monotonic() + 120
    while not npz.is_file():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted:" in err
    data = np.load(npz)
    assert 50 <= len(data["images"]) < 4000 and len(data["images"]) % 50 == 0
    assert len(data["labels"]) == len(data["images"])


def test_interactive_loop_through_stdin(tiny_ckpt, tmp_path):
    r = sample(tiny_ckpt, tmp_path, "interactive=true", "n_per_class=1", input="seven\nbanana\n3\ngrid\n\nquit\nnine\n")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert any(l.endswith("000_seven.png") for l in lines) and any(l.endswith("001_three.png") for l in lines)
    assert any("unknown prompt 'banana'" in l for l in lines)
    assert (tmp_path / "grid.png").is_file()
    assert not any("nine" in l for l in lines if l.endswith(".png"))  # quit stopped the loop


def test_interactive_ends_on_eof(tiny_ckpt, tmp_path):
    r = sample(tiny_ckpt, tmp_path, "interactive=true", input="4\n")
    assert r.returncode == 0 and r.stdout.strip().endswith("000_four.png")


def test_fashion_prompts_and_names(tiny_fashion_ckpt, tmp_path):
    r = sample(tiny_fashion_ckpt, tmp_path, "prompt=sneaker", "mode=bulk", "num_samples=3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(np.load(tmp_path / "samples.npz")["labels"].tolist()) == {7}


def test_trace_and_raw_weights(tiny_ckpt, tmp_path):
    r = sample(tiny_ckpt, tmp_path, "trace=true", "weights=raw", "n_per_class=1", "sampler=ddim", "sampler.steps=6")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (tmp_path / "trace.csv").read_text().splitlines()
    assert rows[0] == ("step,t,x_mean,x_std,x_min,x_max,mu_mean,mu_std,mu_min,mu_max,eps_mean,eps_std,eps_min,eps_max")
    assert len(rows) == 1 + 6


def test_default_checkpoint_is_the_newest_under_outputs(tiny_ckpt, tmp_path):
    run = tmp_path / "outputs" / "some-run" / "checkpoints"
    run.mkdir(parents=True)
    shutil.copy(tiny_ckpt, run / "last.ckpt")
    r = run_main("sample.py", *FAST, "n_per_class=1", f"out_dir={tmp_path / 'o'}", f"hydra.run.dir={tmp_path / 'o'}",
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "using the newest checkpoint: outputs/some-run/checkpoints/last.ckpt" in r.stdout


def test_without_any_run_the_shipped_mnist_model_is_used_and_named(tmp_path):
    r = run_entry("sample.py", *FAST, "n_per_class=1", f"out_dir={tmp_path}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no checkpoint under outputs/ or multirun/: using the shipped pretrained model" in r.stdout
    assert "pretrained/mnist/model.safetensors" in r.stdout and (tmp_path / "grid.png").is_file()


@pytest.mark.parametrize("args,message", [
    (["pretrained=cifar"], "error: no pretrained model 'cifar'; the shipped ones are: "),
    (["pretrained=mnist", "ckpt_path=x.ckpt"], "error: give ckpt_path or pretrained, not both"),
])
def test_bad_pretrained_choice_is_one_line(args, message, tmp_path):
    r = run_main("sample.py", *args, f"hydra.run.dir={tmp_path}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith(message), r.stderr


@pytest.mark.parametrize("args,message", [
    (["prompt=sneaker"], "unknown prompt 'sneaker'; valid prompts: 0/zero"),
    (["sampler.steps=101"], "sampler.steps must be an integer between 1 and the model's timesteps (100)"),
    (["mode=video"], "mode must be one of grid, random"),
    (["guidance=-1.5"], "guidance (ω) must be a number ≥ -1 (-1: unconditional)"),
    (["guidance=nan"], "guidance (ω) must be a number ≥ -1 (-1: unconditional), got nan"),
    (["guidance=inf"], "guidance (ω) must be a number ≥ -1 (-1: unconditional), got inf"),
    ([f"seed={2**64}"], "seed must be an integer in [0, 2^64 - 1]"),
    (["seed=-3"], "seed must be an integer in [0, 2^64 - 1]"),
    (["num_samples=0"], "num_samples must be a positive integer"),
    (["weights=best"], "weights must be 'ema' or 'raw'"),
    (["sampler=dpm_solver", "sampler.order=4"], "sampler.order must be one of 2, 3, got 4"),
    (["sampler=ddim", "sampler.eta=abc"], "sampler.eta must be a number, got 'abc'"),
    (["sampler.eta=abc"], "sampler.eta must be a number, got 'abc'"),  # the model's own sampler (ddim)
    (["mode=bulk", "evaluate=true", "eval.inception=maybe"], "eval.inception must be true, false or published"),
    (["sampler.order=4"], "sampler.order is not an option of this model's own sampler (ddim); name one: sampler=NAME "
                          "sampler.order=4"),
    (["sampler.guidance_interval=[5,1]"], "sampler.guidance_interval must be [σ_lo, σ_hi] with 0 ≤ σ_lo < σ_hi"),
    (["device=tpu"], "device must be cpu, cuda, cuda:N or auto; got 'tpu'"),
    (["mode=bulk", "num_samples=20", "shard=[10,30]"], "shard must be [start, stop) with 0 ≤ start < stop ≤ num_samples"),
    (["mode=grid", "shard=[0,5]"], "shard must be [start, stop) with 0 ≤ start < stop ≤ num_samples"),
    (["mode=bulk", "shard=[0,5]", "evaluate=true"], "a shard is scored once merged: mode=merge shards=[...]"),
    (["mode=merge"], "mode=merge needs shards=[folder, ...] (the shards of one bulk run)"),
    (["mode=merge", "shards=[nowhere]"], "shard nowhere: no samples.npz there"),
    (["logger=wandb"], "sample.py logs its evaluation to W&B: logger=wandb with mode=bulk evaluate=true (got "
                       "logger=wandb without evaluate=true)"),
    (["logger=csv", "mode=bulk", "evaluate=true"], "sample.py logs its evaluation to W&B: logger=wandb with"),
    *([] if torch.cuda.is_available() else
      [(["device=cuda"], "device=cuda but no CUDA GPU is visible here; use device=cpu or device=auto")]),
])
def test_bad_options_fail_with_one_line(tiny_ckpt, tmp_path, args, message):
    r = run_main("sample.py", f"ckpt_path={tiny_ckpt}", f"hydra.run.dir={tmp_path}", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and message in lines[0], r.stderr


def test_unknown_sampler_gets_hydras_message(tmp_path):  # a real process: Hydra's own error path, end to end
    r = run_entry("sample.py", "sampler=euler", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 1 and "Could not find 'sampler/euler'" in r.stderr and "dpm_solver" in r.stderr


def test_shards_merge_into_exactly_the_whole_runs_samples_and_score_the_same(tmp_path):
    common = ["pretrained=mnist", "sampler.steps=3", "num_samples=24", "eval.batch_size=24"]
    for start, stop in [(10, 24), (0, 10)]:  # any order, any batch size: image i depends on (seed, i) only
        r = run_main("sample.py", *common, "mode=bulk", f"shard=[{start},{stop}]", "batch_size=7",
                     f"hydra.run.dir={tmp_path / f'shard{start}'}")
        assert r.returncode == 0, r.stderr[-3000:]
    r = run_main("sample.py", *common, "mode=bulk", "evaluate=true", f"hydra.run.dir={tmp_path / 'whole'}")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_main("sample.py", *common, "mode=merge", f"shards=[{tmp_path / 'shard0'},{tmp_path / 'shard10'}]",
                 "evaluate=true", f"hydra.run.dir={tmp_path / 'merged'}")
    assert r.returncode == 0, r.stderr[-3000:]
    whole, merged = (np.load(tmp_path / d / "samples.npz") for d in ("whole", "merged"))
    assert np.array_equal(whole["images"], merged["images"]) and np.array_equal(whole["labels"], merged["labels"])
    scores = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "merged")]
    assert scores[0]["fid"] == scores[1]["fid"] and scores[0]["class_accuracy"] == scores[1]["class_accuracy"]

    r = run_main("sample.py", *common, "mode=merge", f"shards=[{tmp_path / 'shard10'}]", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "error: the shards hold 14 images, not each of 0 … 23 once (missing from 0)"]
    r = run_main("sample.py", *common, "guidance=2", "mode=merge", f"shards=[{tmp_path / 'shard0'},"
                 f"{tmp_path / 'shard10'}]", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 1 and "was not made by this model, seed, guidance, sampler and num_samples" in r.stderr


@pytest.mark.parametrize("args,line", [
    ([], "sampler: ddim, 5 steps, eta=0.0 (the model's own; sampler=NAME for another)"),  # the run's, steps=5 on top
    (["sampler=ddpm"], "sampler: ddpm, 5 steps, sigma=posterior"),  # named: conf/sampler/ddpm.yaml, steps=5 on top
    (["sampler.eta=0.5"], "sampler: ddim, 5 steps, eta=0.5 (the model's own; sampler=NAME for another)"),
])
def test_a_checkpoint_is_sampled_with_its_runs_sampler_unless_one_is_named(tiny_ckpt, tmp_path, args, line):
    r = sample(tiny_ckpt, tmp_path, "mode=bulk", "num_samples=2", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert line in r.stdout.splitlines(), r.stdout


@pytest.mark.parametrize("shape", [(3, 28, 28), (3, 16, 16, 3)])
def test_from_pixels_is_the_inverse_of_pixels(shape):
    from diffusion.modes import from_pixels, pixels

    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    nchw = from_pixels(images)
    assert nchw.shape == (3, 1 if len(shape) == 3 else 3, shape[1], shape[2]) and nchw.dtype == torch.uint8
    assert np.array_equal(pixels(nchw), images)


def test_an_evaluation_of_the_shipped_model_is_a_wandb_eval_run_with_its_metrics(tmp_path):
    r = run_main("sample.py", "pretrained=mnist", "mode=bulk", "num_samples=200", "evaluate=true", "logger=wandb",
                 f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"offline, files in {tmp_path / 'wandb'}; upload with `wandb sync {tmp_path / 'wandb'}/offline-run-*`" \
        in r.stdout
    (run,) = run_files(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (run.run.job_type, run.run.run_group, run.run.display_name) == ("eval", "pretrained/mnist",
                                                                          "eval pretrained/mnist")
    for key in ("fid", "is", "class_accuracy"):
        assert run.summary[key] == pytest.approx(metrics[key])
    assert run.summary["eval_samples"] == 200 and run.summary["eval/results/nrows"] == 1
    assert run.config["model"]["schedule"] == metrics["schedule"] and run.config["model"]["guidance"] == \
        metrics["guidance"]
    assert run.steps == [metrics["step"]]  # on the training run's step axis
    assert any("evalconfusion_table" in a.name for a in run.artifacts)
