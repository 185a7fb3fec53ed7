"""The shipped models: safe to load, the right architecture, documented, and really trained."""

import json
import pickle

import pytest
import torch
from safetensors import safe_open

from conftest import ROOT, run_entry
from diffusion.checkpoint import load_module, shipped_models
from diffusion.classifier import load_classifier
from diffusion.evaluation import classify
from diffusion.generate import balanced_labels, generate
from diffusion.samplers import dpm_solver_sample

SHIPPED = shipped_models()
# Share of 100 samples the evaluator must label as the requested class. Fashion-MNIST's evaluator itself labels only
# 92.1% of the real test images right (Shirt/Coat/Pullover overlap), so 95% is out of reach there even for perfect
# samples; its bar is 85%.
MIN_CLASS_ACCURACY = {"mnist": 0.95, "fashion": 0.85}


def data_of(name: str) -> str:
    """The data set a shipped model was trained on: its name up to the first "_" (mnist_1unit -> mnist)."""
    return name.split("_")[0]


def test_the_mnist_model_is_shipped():
    assert "mnist" in SHIPPED and SHIPPED["mnist"] == ROOT / "pretrained" / "mnist" / "model.safetensors"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_file_loads_without_unpickling_and_rebuilds_its_architecture(name, monkeypatch):
    path = SHIPPED[name]
    assert path.stat().st_size <= 10_000_000
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    hparams = json.loads(meta["hyper_parameters"])
    assert meta["format"] == "diffusion-mnist" and hparams["data_name"] == data_of(name)

    def refuse(*args, **kwargs):
        raise AssertionError("a shipped model must load without unpickling")

    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    module = load_module(path)
    assert type(module.net).__name__ == "UNet" and module.image_shape == (1, 32, 32)
    assert sum(p.numel() for p in module.net.parameters()) == 2_447_937  # seed000 U-Net with the null class
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(module.state_dict())  # every weight in the file, every file tensor used


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_has_its_evaluation_and_provenance_beside_it(name):
    folder = SHIPPED[name].parent
    m = json.loads((folder / "metrics.json").read_text())
    assert m["data"] == data_of(name) and m["num_samples"] >= 1000 and m["step"] == load_module(SHIPPED[name]).checkpoint_step
    if "fid_inception_protocol" in m:
        assert m["fid_inception_protocol"]["resolution"] == 28 and m["fid_inception_protocol"]["num_samples"] == 10000
    about = (folder / "README.md").read_text()
    assert "python train.py" in about and "commit" in about.lower()
    assert (folder / "grid.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_draws_the_requested_class(name, data_root):
    module = load_module(SHIPPED[name])
    labels = balanced_labels(100, range(10))
    images = generate(module, labels, range(100), 100, lambda *a, **k: dpm_solver_sample(*a, steps=20, **k), seed=1)
    net, _ = load_classifier(data_root, data_of(name))
    accuracy = (classify(net, images)[1].argmax(1) == labels).float().mean().item()
    assert accuracy >= MIN_CLASS_ACCURACY[data_of(name)], f"{name}: only {accuracy:.2f} of 100 samples classified as the requested class"


@pytest.mark.slow
def test_sample_py_pretrained_needs_no_data_and_no_training(tmp_path):
    r = run_entry("sample.py", "pretrained=mnist", "n_per_class=2", f"out_dir={tmp_path}", f"hydra.run.dir={tmp_path}",
                  cwd=tmp_path, env={"DIFFUSION_DATA": str(tmp_path / "no-data")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "grid.png").is_file() and not (tmp_path / "no-data").exists()
    # a shipped model samples with the sampler its file names, its headline's: DPM-Solver++(2M), 20 steps
    assert "sampler: dpm_solver, 20 steps, order=2 (the model's own; sampler=NAME for another)" in r.stdout


def test_demo_lists_own_runs_first_then_the_shipped_models(tmp_path):
    from diffusion.demo import list_models, shipped_entries

    assert list_models(None, roots=(str(tmp_path / "outputs"),)) == shipped_entries()
    assert shipped_entries()[0].endswith("pretrained/mnist/model.safetensors")  # no runs: the page starts on mnist
    run = tmp_path / "outputs" / "r" / "checkpoints"
    run.mkdir(parents=True)
    (run / "last.ckpt").write_bytes(b"listed, not loaded")
    assert list_models(None, roots=(str(tmp_path / "outputs"),)) == [str(run / "last.ckpt"), *shipped_entries()]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_model_samples_by_default_with_the_sampler_and_guidance_of_its_headline(name):
    """The README's figure is what `python sample.py pretrained=<name> mode=bulk … evaluate=true` measures: the file
    names the sampler (and ω) its metrics.json was made with."""
    from diffusion.checkpoint import own_sampler
    from diffusion.samplers import sampler_name

    m = json.loads((SHIPPED[name].parent / "metrics.json").read_text())
    module = load_module(SHIPPED[name])
    own = own_sampler(module)
    assert (sampler_name(own._target_), own.steps, module.hparams.guidance) == (m["sampler"], m["sampler_steps"],
                                                                                m["guidance"])
    for key, value in (m.get("sampler_options") or {}).items():
        assert own.get(key) == value, key


def test_export_writes_the_sampler_a_model_is_sampled_with(tiny_ckpt, tmp_path):
    from conftest import run_main
    from diffusion.checkpoint import own_sampler

    out = tmp_path / "model.safetensors"
    r = run_main("diffusion.export", f"ckpt_path={tiny_ckpt}", f"out={out}", "sampler=dpm_solver",
                 "sampler.order=2", "sampler.steps=7")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "sampler dpm_solver, 7 steps, order=2" in r.stdout
    own = own_sampler(load_module(out))
    assert own._target_.endswith("dpm_solver_sample") and (own.steps, own.order) == (7, 2)
    r = run_main("diffusion.export", f"ckpt_path={tiny_ckpt}", f"out={out}", "sampler=ddim", "sampler.steps=500")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "error: sampler.steps must be an integer between 1 and the model's T (100), got 500"]
    r = run_main("sample.py", f"ckpt_path={out}", "n_per_class=1", f"hydra.run.dir={tmp_path / 'grid'}")
    assert r.returncode == 0 and "sampler: dpm_solver, 7 steps, order=2 (the model's own" in r.stdout
