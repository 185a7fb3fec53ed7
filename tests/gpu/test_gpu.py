"""The real entry points on a CUDA GPU: training, every sample mode with every sampler, the Inception evaluation and
a two-point multirun. Skipped where no CUDA device is present (CI's machines); run them with
`python -m pytest tests/gpu` on a GPU machine."""

import json

import pytest
import torch
import yaml

from conftest import DATA, compose_cfg, run_entry

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: these need a GPU")]

QUIET = ["callbacks.progress=null"]
MODES = ["grid", "random", "fixed_noise", "progression", "forward", "bulk"]
STEPS = {"ddpm": 100, "ddim": 20, "dpm_solver": 10}


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory, data_root):
    """`make train`'s run (2000 steps of the default model) with trainer=gpu, evaluated on the GPU at the end."""
    out = tmp_path_factory.mktemp("gpu-train")
    r = run_entry("train.py", "trainer=gpu", *QUIET, f"hydra.run.dir={out}", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_training_on_the_gpu_learns_and_evaluates_there(gpu_run):
    config = yaml.safe_load((gpu_run / "config.yaml").read_text())
    assert config["trainer"]["precision"] == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
    m = json.loads((gpu_run / "metrics.json").read_text())
    assert m["step"] == 2000 and m["num_samples"] == 1000
    assert m["class_accuracy"] > 0.8, m  # digits (0.912 on an H100; 0.927 for the CPU's make train)
    assert (gpu_run / "model.safetensors").is_file() and (gpu_run / "samples" / "final.png").is_file()


@pytest.mark.parametrize("sampler", list(STEPS))
def test_every_sample_mode_with_every_sampler_on_the_gpu(gpu_run, sampler, tmp_path):
    from diffusion.sample import run

    ckpt = gpu_run / "checkpoints" / "last.ckpt"
    for mode in MODES:
        cfg = compose_cfg("sample", [f"ckpt_path={ckpt}", f"mode={mode}", f"sampler={sampler}", "device=cuda",
                                     f"sampler.steps={STEPS[sampler]}", "num_samples=50", f"out_dir={tmp_path / mode}"])
        assert run(cfg), mode
    r = run_entry("sample.py", f"ckpt_path={ckpt}", "mode=bulk", "num_samples=500", "evaluate=true", "device=cuda",
                  f"sampler={sampler}", f"sampler.steps={STEPS[sampler]}", f"hydra.run.dir={tmp_path / 'cli'}")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert m["num_samples"] == 500 and m["class_accuracy"] > 0.3


def test_inception_evaluation_on_the_gpu(gpu_run, tmp_path):
    weights = DATA / "evaluators" / "inception_default_1.pt"
    if not weights.is_file():
        pytest.skip(f"no {weights}: `make inception` fetches it")
    r = run_entry("sample.py", f"ckpt_path={gpu_run / 'checkpoints' / 'last.ckpt'}", "mode=bulk", "num_samples=500",
                  "evaluate=true", "eval.inception=true", "device=cuda", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["fid_inception"] > 0


def test_two_point_multirun_on_the_gpu(tmp_path, data_root):
    r = run_entry("train.py", "-m", "trainer=gpu", "timesteps=100,200", "trainer.max_steps=50", "eval.num_samples=100",
                  "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *QUIET, f"hydra.sweep.dir={tmp_path}",
                  timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    statuses = sorted(json.loads(p.read_text())["status"] for p in tmp_path.glob("*/status.json"))
    assert statuses == ["ok", "ok"] and len(list(tmp_path.glob("*/metrics.json"))) == 2


def test_the_paper_recipe_compiled_into_cuda_graphs_trains_like_eager(tmp_path, data_root):
    """compile=reduce-overhead (CUDA graphs) through train.py on CUDA: the same losses as eager, step for
    step, in fp32 (TF32 matmuls: loose tolerance), and a steady images/s in status.json."""
    losses = {}
    for setting in ("false", "reduce-overhead"):
        run = tmp_path / setting
        r = run_entry("train.py", "trainer=gpu", "experiment=ablation_schedule", "trainer.precision=32",
                      "trainer.max_steps=40", "trainer.log_every_n_steps=1", "eval.num_samples=0", "logger=csv",
                      "callbacks.sample_grid=null", *QUIET, f"compile={setting}", f"hydra.run.dir={run}", timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        rows = (run / "csv" / "metrics.csv").read_text().splitlines()
        column = rows[0].split(",").index("train/loss_step")
        losses[setting] = [float(v) for row in rows[1:] if (v := row.split(",")[column])]
        assert json.loads((run / "status.json").read_text())["metrics"]["steady_images_per_s"] > 0
    compiled = losses["reduce-overhead"]
    assert len(compiled) == 40 and compiled == pytest.approx(losses["false"], rel=1e-2)
