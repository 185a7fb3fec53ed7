"""One path from a model to metrics.json (diffusion.scoring) and one owner of results (diffusion.records)."""

import json

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import ROOT, compose_cfg
from wandb_files import WANDB_KEY
from diffusion import records, report
from diffusion.checkpoint import load_module
from diffusion.generate import balanced_labels, generate
from diffusion.records import Metric, logger_scalars, summarize_seeds
from diffusion.scoring import EvalSettings, folder, sample_and_score

SAMPLER = OmegaConf.create({"_target_": "diffusion.samplers.ddim_sample", "_partial_": True, "steps": 3})


def test_one_call_scores_every_omega_and_seed_and_summarises_the_seeds(tiny_ckpt, tmp_path, data_root):
    module = load_module(tiny_ckpt)
    kept = {}
    results = sample_and_score(module, SAMPLER, 20, [0.0, 0.5], [3, 4], EvalSettings(batch_size=10), tmp_path,
                               batch_size=7, sweep=True, keep=lambda where, x, y: kept.setdefault(where, (x, y)),
                               note="extra")
    assert sorted(results) == [0.0, 0.5]
    for w in (0.0, 0.5):
        per_seed = [json.loads((folder(tmp_path, w, s) / "metrics.json").read_text()) for s in (3, 4)]
        summary = json.loads((folder(tmp_path, w) / "metrics.json").read_text())
        assert [m["seed"] for m in per_seed] == [3, 4] and {m["guidance"] for m in per_seed} == {w}
        assert summary["num_seeds"] == 2
        assert summary["fid_mean"] == pytest.approx((per_seed[0]["fid"] + per_seed[1]["fid"]) / 2)
        assert summary["note"] == "extra" and results[w]["fid_mean"] == summary["fid_mean"]
    # the kept images are exactly what the generation loop makes for that seed
    images, labels = kept[folder(tmp_path, 0.5, 4)]
    expected = generate(module, balanced_labels(20, list(range(10))), range(20), 7, instantiate(SAMPLER), 0.5, 4)
    assert torch.equal(images, expected) and torch.equal(labels, balanced_labels(20, list(range(10))))


def test_train_and_sample_share_one_eval_schema():
    train, sample = compose_cfg("train", ["run_dir=x"]).eval, compose_cfg("sample", [], hydra=False).eval
    assert set(train) == set(sample) and EvalSettings.of(train) == EvalSettings.of(sample)
    assert EvalSettings.of(compose_cfg("sample", ["eval.inception=true", "eval.batch_size=64"]).eval) == \
        EvalSettings(batch_size=64, inception=True)


def test_a_new_headline_metric_is_one_key(monkeypatch, tmp_path):
    """Adding a metric: its value in evaluate()'s dict and one Metric in records.HEADLINE; the rest follows: the
    seed summary, the logger keys, the report, the printed table, a rendered docs table and the demo."""
    import shutil

    from diffusion import demo, render

    monkeypatch.setattr(records, "HEADLINE", (*records.HEADLINE, Metric("precision", "precision")))
    runs = [{"data": "mnist", "num_samples": 10, "fid": f, "is": 9.0, "class_accuracy": 0.9, "precision": p,
             "seed": s, "confusion": [[9, 1], [0, 10]], "per_class_accuracy": [0.9, 1.0]}
            for s, (f, p) in enumerate(((1.0, 0.5), (3.0, 0.7)))]
    summary = summarize_seeds(runs)
    assert summary["precision_mean"] == pytest.approx(0.6) and "precision 0.6 ± 0.14" in summary["summary"]
    assert logger_scalars(runs[0], guidance=1)["eval/w1/precision"] == 0.5
    assert "precision" in report.columns() and report._row("run", summary)["precision"] == "0.6 ± 0.14"
    assert "precision 0.50" in records.format_table(runs[0], ["a", "b"]).splitlines()[0]  # the printed table
    (tmp_path / "metrics.json").write_text(json.dumps(summary))
    monkeypatch.setattr(render, "ROOT", tmp_path)
    table = render.TABLES["seeds"](tmp_path / "doc.md", "metrics.json")  # a rendered docs table
    assert table.splitlines()[0].endswith("| precision |") and "| 0.60 ± 0.14 |" in table.splitlines()[-1]
    model = tmp_path / "run" / "model.safetensors"  # the demo's description of a run's model
    model.parent.mkdir()
    shutil.copy(ROOT / "pretrained" / "mnist" / "model.safetensors", model)
    (model.parent / "metrics.json").write_text(json.dumps(runs[0]))
    assert "precision 0.50" in demo.describe(str(model), [str(model)])


def test_one_and_several_seeds_read_alike():
    one = {"fid": 4.0, "num_samples": 10}
    several = summarize_seeds([{"fid": 3.0, "num_samples": 10}, {"fid": 5.0, "num_samples": 10}])
    assert records.value(one, "fid") == records.value(several, "fid") == 4.0
    assert records.spread(one, "fid") is None and records.spread(several, "fid") == pytest.approx(2 ** 0.5)
    assert records.shown(one, "fid", fixed=2) == "4.00" and records.shown(several, "fid", fixed=2) == "4.00 ± 1.41"


def test_logger_keys_are_valid_wandb_keys_for_any_evaluation_name_and_guidance():
    m = {"fid": 3.0, "is": 9.0, "class_accuracy": 0.9, "fid_inception": 12.0}
    assert logger_scalars(m) == {"eval/fid": 3.0, "eval/fid_inception": 12.0, "eval/is": 9.0,
                                 "eval/class_accuracy": 0.9}
    assert set(logger_scalars(m, "fast", 0.2)) == {"eval/fast/w0_2/fid", "eval/fast/w0_2/fid_inception",
                                                   "eval/fast/w0_2/is", "eval/fast/w0_2/class_accuracy"}
    for name, w in (("ddim-50", -1), ("2m.20", 0.25), ("paper", 0), (None, 7.5)):
        for key in logger_scalars(m, name, w):
            assert WANDB_KEY.fullmatch(key), key


def test_inception_published_scores_the_standard_fid_only_where_the_paper_has_a_figure():
    from types import SimpleNamespace

    from diffusion.checks import ConfigError, check_inception

    def module(data, kind, T):
        return SimpleNamespace(schedule=SimpleNamespace(kind=kind, timesteps=T), data_spec=SimpleNamespace(name=data))

    published = EvalSettings(inception="published")
    assert [published.wants_inception(module("mnist", "linear", 1000), w) for w in (0.2, 0, 0.5, 1)] == \
        [True, True, True, False]  # Table 2 and Table 3's ω at linear, T = 1000
    assert [published.wants_inception(module("mnist", "cosine", 4000), w) for w in (0.2, 0)] == [True, False]
    assert not published.wants_inception(module("fashion", "linear", 1000), 0.2)  # the paper reports MNIST only
    assert EvalSettings(inception=True).wants_inception(module("fashion", "cosine", 50), 3.0)
    with pytest.raises(ConfigError, match="eval.inception must be true, false or published"):
        check_inception("yes")
