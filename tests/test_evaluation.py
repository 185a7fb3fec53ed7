"""Evaluation on real data (small sizes where it matters): FID, IS, class accuracy, evaluator errors."""

import json
import shutil

import pytest
import torch

from conftest import compose_cfg, run_main
from diffusion.classifier import evaluator_path, load_classifier
from diffusion.datasets import DataSpec
from diffusion.evaluation import InceptionFeatures, crop_padding, evaluate, inception_fid, real_images, run_metadata
from diffusion.records import format_table, sampler_label, summarize_seeds
from diffusion.schedule import NoiseSchedule


@pytest.fixture(scope="module")
def mnist_test(data_root):
    return real_images(data_root, "mnist")


def test_fid_of_test_set_against_itself_is_zero_and_against_noise_is_large(mnist_test, data_root):
    images, labels = mnist_test
    same = evaluate(images, labels, "mnist", data_root)
    noise = torch.randint(0, 256, images[:2000].shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    other = evaluate(noise, labels[:2000], "mnist", data_root)
    assert abs(same["fid"]) < 0.01
    assert other["fid"] > 100 * max(same["fid"], 0.01) and other["fid"] > 50


def test_real_images_score_high_is_and_accuracy(mnist_test, data_root):
    images, labels = mnist_test
    m = evaluate(images, labels, "mnist", data_root)
    assert m["is"] >= 9.5 and m["class_accuracy"] >= 0.99
    assert min(m["per_class_accuracy"]) > 0.97 and sum(map(sum, m["confusion"])) == 10000
    assert "most often mistaken for" in format_table(m, [str(c) for c in range(10)])


def test_metrics_are_reproducible(mnist_test, data_root):
    images, labels = mnist_test[0][:1000], mnist_test[1][:1000]
    first, second = evaluate(images, labels, "mnist", data_root), evaluate(images, labels, "mnist", data_root)
    assert first == second  # IS shuffles before splitting; the shuffle is seeded


def test_fashion_real_images(data_root):
    images, labels = real_images(data_root, "fashion")
    m = evaluate(images[:3000], labels[:3000], "fashion", data_root)
    assert m["class_accuracy"] >= 0.91 and m["is"] > 5


def test_a_model_that_ignores_its_label_scores_near_chance(mnist_test, data_root):
    images, labels = mnist_test  # perfect images, but requested labels unrelated to what was drawn
    asked = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    m = evaluate(images, asked, "mnist", data_root)
    assert 0.07 < m["class_accuracy"] < 0.13
    assert m["is"] >= 9.5 and abs(m["fid"]) < 0.01  # quality metrics cannot see the label: accuracy can


def test_evaluators_meet_their_accuracy_bar(data_root):
    assert load_classifier(data_root, "mnist")[1]["test_accuracy"] >= 0.99
    assert load_classifier(data_root, "fashion")[1]["test_accuracy"] >= 0.91


def test_missing_mismatched_and_corrupt_evaluators_give_one_clear_error(data_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="make evaluators"):
        load_classifier(tmp_path, "mnist")
    evaluator_path(tmp_path, "mnist").parent.mkdir(parents=True)
    shutil.copy(evaluator_path(data_root, "fashion"), evaluator_path(tmp_path, "mnist"))
    with pytest.raises(ValueError, match="trained on 'fashion', not 'mnist'"):
        load_classifier(tmp_path, "mnist")
    evaluator_path(tmp_path, "mnist").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable.*make evaluators"):
        load_classifier(tmp_path, "mnist")


def test_reference_statistics_are_cached_per_evaluator(mnist_test, data_root, tmp_path):
    for sub in ("MNIST", "evaluators"):
        shutil.copytree(data_root / sub, tmp_path / sub, ignore=shutil.ignore_patterns("fid_ref_*", "inception*"))
    images, labels = mnist_test
    first = evaluate(images[:500], labels[:500], "mnist", tmp_path)
    cache = tmp_path / "evaluators" / "fid_ref_mnist_classifier.pt"
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    assert evaluate(images[:500], labels[:500], "mnist", tmp_path)["fid"] == pytest.approx(first["fid"])
    assert cache.stat().st_mtime_ns == stamp  # reused, not recomputed


def test_inception_wrapper_feeds_3x299_in_the_expected_range(tmp_path):
    class Probe(torch.nn.Module):
        def forward(self, x):
            ones = torch.ones_like(x[:, 0, 0, 0])
            stats = [x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), ones * x.shape[1], ones * x.shape[2]]
            return torch.stack(stats, 1).repeat(1, 512)

    path = tmp_path / "probe.pt"
    torch.jit.script(Probe()).save(str(path))
    images = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    images[1] = 255
    out = InceptionFeatures(path)(images)
    assert out.shape == (2, 2048)
    assert out[0, :4].tolist() == pytest.approx([-1.0, -1.0, 3.0, 299.0], abs=1e-5)
    assert out[1, :4].tolist() == pytest.approx([0.9921875, 0.9921875, 3.0, 299.0], abs=1e-5)


class PoolProbe(torch.nn.Module):
    """A stand-in for Inception: 2048 features from the resized image (average pooled to 32×64)."""

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x[:, :1], (32, 64)).flatten(1)


@pytest.mark.slow
def test_inception_fid_follows_the_paper_protocol_crop_to_28_against_the_unpadded_test_set(mnist_test, data_root,
                                                                                          tmp_path, monkeypatch):
    import diffusion.evaluation as ev

    real_split = ev.load_split
    monkeypatch.setattr(ev, "load_split", lambda *a, **k: tuple(v[:1000] for v in real_split(*a, **k)))  # faster
    probe = tmp_path / "probe.pt"
    torch.jit.script(PoolProbe()).save(str(probe))
    padded = mnist_test[0][:1000]  # the test images as the model draws them: 32×32 with the 2-pixel border
    assert crop_padding(padded, DataSpec.of("mnist")).shape[-2:] == (28, 28)
    shutil.copytree(data_root / "MNIST", tmp_path / "MNIST")
    same = inception_fid(padded, DataSpec.of("mnist"), tmp_path, str(probe), batch=500)
    assert abs(same) < 1e-3  # cropped samples equal to the test set: FID 0
    assert (tmp_path / "evaluators" / "fid_ref_mnist_inception28.pt").is_file()
    shifted = torch.roll(padded, 2, dims=-1)  # the same digits 2 pixels off centre
    assert inception_fid(shifted, DataSpec.of("mnist"), tmp_path, str(probe), batch=500) > 100 * max(same, 1e-3)


@pytest.mark.slow
def test_sample_py_bulk_evaluate_writes_metrics(tiny_ckpt, tmp_path):
    r = run_main("sample.py", f"ckpt_path={tiny_ckpt}", f"hydra.run.dir={tmp_path}", f"out_dir={tmp_path}",
                 "mode=bulk", "num_samples=30", "evaluate=true", "sampler.steps=4")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["num_samples"] == 30 and {"fid", "is", "class_accuracy", "per_class_accuracy", "confusion"} <= set(m)
    assert "class accuracy" in r.stdout


def test_summarize_seeds_is_mean_and_sample_std():
    runs = [{"data": "mnist", "num_samples": 10, "fid": f, "is": 9.0, "class_accuracy": 0.9, "seed": s}
            for s, f in enumerate([1.0, 2.0, 6.0])]
    m = summarize_seeds(runs)
    assert m["fid_mean"] == pytest.approx(3.0) and m["fid_std"] == pytest.approx(2.6457513)  # stdev of 1, 2, 6
    assert m["is_std"] == 0 and "fid_inception_mean" not in m and m["num_seeds"] == 3 and m["seeds"] == runs
    assert m["summary"].startswith("3 seeds × 10 samples: fid 3 ± 2.6")


@pytest.mark.parametrize("sampler,option,value", [("dpm_solver", "order", 2), ("ddim", "eta", 0.5)])
def test_run_metadata_records_the_sampler_options(sampler, option, value):
    cfg = compose_cfg("sample", [f"sampler={sampler}", f"sampler.{option}={value}", "sampler.steps=7",
                                 "sampler.guidance_interval=[0.3,5]"])
    m = run_metadata(NoiseSchedule(50, "cosine"), cfg.sampler, 123, 0.5)
    assert (m["sampler"], m["sampler_steps"], m["sampler_options"][option]) == (sampler, 7, value)
    assert m["sampler_options"]["guidance_interval"] == [0.3, 5] and "_target_" not in m["sampler_options"]
    assert (m["schedule"], m["timesteps"], m["step"], m["guidance"]) == ("cosine", 50, 123, 0.5)
    json.dumps(m)  # metrics.json-ready: plain containers only


@pytest.mark.parametrize("overrides, label", [
    (["sampler=dpm_solver", "sampler.order=2", "sampler.steps=20"], "dpm_solver 2M 20"),
    (["sampler=dpm_solver", "sampler.guidance_interval=[0.3,5]"], "dpm_solver 3M 10 + interval"),
    (["sampler=ddim"], "ddim 50"), (["sampler=ddpm"], "ddpm")])
def test_sampler_label_names_the_order_steps_and_interval(overrides, label):
    cfg = compose_cfg("sample", overrides)
    assert sampler_label(run_metadata(NoiseSchedule(50, "linear"), cfg.sampler, 1, 0.5)) == label


@pytest.mark.slow
def test_sample_py_repeats_the_evaluation_over_seeds(tiny_ckpt, tmp_path):
    r = run_main("sample.py", f"ckpt_path={tiny_ckpt}", f"hydra.run.dir={tmp_path}", f"out_dir={tmp_path}",
                 "mode=bulk", "num_samples=20", "evaluate=true", "sampler.steps=3", "repeats=3", "seed=5")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    per_seed = [json.loads((tmp_path / f"seed={s}" / "metrics.json").read_text()) for s in (5, 6, 7)]
    assert [x["seed"] for x in m["seeds"]] == [5, 6, 7] and [x["fid"] for x in per_seed] == [x["fid"] for x in m["seeds"]]
    assert m["fid_mean"] == pytest.approx(sum(x["fid"] for x in per_seed) / 3) and m["fid_std"] > 0
    assert "3 seeds × 20 samples: fid" in r.stdout


@pytest.mark.slow
def test_evaluate_needs_bulk_mode(tiny_ckpt, tmp_path):
    r = run_main("sample.py", f"ckpt_path={tiny_ckpt}", f"hydra.run.dir={tmp_path}", "evaluate=true")
    assert r.returncode == 1 and r.stderr.strip() == "error: evaluate=true needs mode=bulk or mode=merge (it scores the bulk samples)"


@pytest.mark.slow
def test_missing_evaluator_fails_before_training(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(__import__("conftest").DATA / "MNIST", data / "MNIST")
    r = run_main("train.py", "debug=fast", f"hydra.run.dir={tmp_path / 'run'}", env={"DIFFUSION_DATA": str(data)})
    assert r.returncode == 1 and "make evaluators" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
