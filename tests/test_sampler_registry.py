"""A new sampler through the registry alone: one registered function (tests/sampler_probe.py) and one
conf/sampler/<name>.yaml; sample.py, the metrics, the report, the demo's choices, the benchmark and the checkpoint
allow-list follow with no other change."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from conftest import CONF, ROOT, run_entry
from diffusion.checkpoint import CheckpointError, load_module, read_checkpoint
from diffusion.report import collect
from diffusion.runtime import config_option, config_options
from diffusion.samplers import SAMPLERS

PROBE_ENV = {"PYTHONPATH": str(ROOT / "tests")}  # where the entry points find sampler_probe
YAML = "_target_: sampler_probe.euler_sample\n_partial_: true\nsteps: 5\nclip: none\nguidance_interval: null\n"


@pytest.fixture(scope="module")
def euler():
    """The probe's registration and conf/sampler/test_euler.yaml, for this module only."""
    import sampler_probe

    path = Path(CONF) / "sampler" / f"{sampler_probe.NAME}.yaml"
    path.write_text(YAML)
    yield sampler_probe
    path.unlink()
    SAMPLERS.pop(sampler_probe.NAME, None)


def test_the_registered_sampler_is_a_config_option_and_equals_ddim(euler, tiny_ckpt):
    assert euler.NAME in config_options("sampler") and SAMPLERS[euler.NAME] is euler.euler_sample
    module, labels = load_module(tiny_ckpt), torch.arange(4)
    mine = module.sample(labels, instantiate(config_option("sampler", euler.NAME)), seed=3)
    ddim = module.sample(labels, instantiate(config_option("sampler", "ddim"), steps=5), seed=3)
    torch.testing.assert_close(mine, ddim)  # first-order steps with η = 0 are DDIM's


def test_the_allow_list_follows_the_registry(euler, tiny_ckpt, tmp_path):
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    path = tmp_path / "x.ckpt"
    ckpt["hyper_parameters"]["sampler"]["_target_"] = "sampler_probe.euler_sample"
    torch.save(ckpt, path)
    assert read_checkpoint(path)["hyper_parameters"]["sampler"]["_target_"] == "sampler_probe.euler_sample"
    ckpt["hyper_parameters"]["sampler"]["_target_"] = "sampler_probe.unregistered_sample"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"sampler\._target_='sampler_probe\.unregistered_sample' is not allowed"):
        read_checkpoint(path)


@pytest.mark.slow
def test_sample_py_evaluates_it_and_the_report_names_it(euler, tiny_ckpt, tmp_path):
    r = run_entry("sample.py", f"ckpt_path={tiny_ckpt}", f"sampler={euler.NAME}", "mode=bulk", "num_samples=20",
                  "evaluate=true", f"hydra.run.dir={tmp_path}", env=PROBE_ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["sampler"] == euler.NAME and m["sampler_steps"] == 5
    assert collect(tmp_path)[0]["sampler"] == f"{euler.NAME} 5"


@pytest.mark.slow
def test_the_benchmark_runs_it(euler, tiny_ckpt):
    r = subprocess.run([sys.executable, "-m", "benchmarks.sample_speed", str(tiny_ckpt), "--n", "20", "--batch", "10",
                        "--only", euler.NAME], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, **PROBE_ENV})
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"| {euler.NAME} | 5 |" in r.stdout
