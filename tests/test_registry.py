"""A new data set through the registry alone: one conf/data/<name>.yaml (3-channel 16×16 shapes made here), then
fetch-verify, evaluator, training, sampling and evaluation through the real entry points, unchanged."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CONF, ROOT, run_entry, run_main

pytestmark = pytest.mark.slow  # end-to-end through the real entry points: `make test`, not `make test-fast`

NAME = "test_shapes_registry"  # removed again after the module
CLASSES = ["square", "disc", "cross"]


def shapes(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coloured squares, discs and crosses on black, 16×16×3 uint8, with random colour and position."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    images, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            cy, cx = rng.integers(6, 10, 2)
            mask = [(abs(yy - cy) <= 4) & (abs(xx - cx) <= 4), (yy - cy) ** 2 + (xx - cx) ** 2 <= 20,
                    ((abs(yy - cy) <= 1) | (abs(xx - cx) <= 1)) & (abs(yy - cy) <= 5) & (abs(xx - cx) <= 5)][label]
            colour = rng.integers(120, 256, 3)
            images.append((mask[..., None] * colour).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """The data set's files under a private data root, and its one YAML file in conf/data/."""
    root = tmp_path_factory.mktemp("registry_data")
    raw = root / "shapes" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 120), ("test", 40)):
        images, labels = shapes(n, seed=len(split))
        np.savez(raw / f"{split}.npz", images=images, labels=labels)
    digest = {f: hashlib.sha256((raw / f).read_bytes()).hexdigest() for f in ("train.npz", "test.npz")}
    config = Path(CONF) / "data" / f"{NAME}.yaml"
    config.write_text(f"""# Synthetic 3-channel 16×16 shapes (written by tests/test_registry.py)
_target_: diffusion.data.ImageDataModule
name: {NAME}
root: ${{data_root:}}
classes: {json.dumps(CLASSES)}
channels: 3
size: 16
pad: 0
format: npz
folder: shapes
files: {json.dumps(digest)}
counts: {{train: [120, 120, 120], test: [40, 40, 40]}}
classifier_epochs: 40
batch_size: 32
num_workers: 0
val_size: 60
split_seed: 0
""")
    try:
        yield root
    finally:
        config.unlink()


def run(*args: str, root: Path) -> subprocess.CompletedProcess:
    """train.py as its own process; sample.py through its main in this process (conftest.run_main)."""
    env = {"DIFFUSION_DATA": str(root)}
    r = run_entry(*args, env=env) if args[0] == "train.py" else run_main(*args, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r


def test_fetch_verifies_and_the_evaluator_learns_the_classes(registered):
    r = subprocess.run([sys.executable, "-m", "diffusion.fetch", "--root", str(registered), NAME], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"{NAME}: 360 train + 120 test images verified" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "diffusion.classifier", "--data", NAME, "--root", str(registered)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    accuracy = float(r.stdout.split("test accuracy ")[1].split(",")[0])
    assert accuracy > 0.9  # three shapes are easy to tell apart


def test_train_sample_and_evaluate_end_to_end(registered, tmp_path):
    run_dir = tmp_path / "run"
    run("train.py", "debug=fast", f"data={NAME}", "timesteps=50", "trainer.max_steps=40", "eval.num_samples=30",
        "callbacks.progress=null", f"hydra.run.dir={run_dir}", root=registered)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"] == NAME and metrics["num_samples"] == 30 and len(metrics["per_class_accuracy"]) == 3
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "bulk"
    run("sample.py", f"ckpt_path={ckpt}", "mode=bulk", "num_samples=9", "sampler.steps=5", "evaluate=true",
        f"out_dir={out}", f"hydra.run.dir={out}", root=registered)
    saved = np.load(out / "samples.npz")
    assert saved["images"].shape == (9, 16, 16, 3) and saved["labels"].tolist() == [0, 1, 2] * 3
    assert json.loads((out / "metrics.json").read_text())["num_samples"] == 9
    for mode, n in (("grid", "n_per_class=2"), ("forward", "n_progression=3")):
        out = tmp_path / mode
        run("sample.py", f"ckpt_path={run_dir / 'model.safetensors'}", f"mode={mode}", n, "sampler.steps=5",
            "prompt=disc" if mode == "grid" else "seed=1", f"out_dir={out}", f"hydra.run.dir={out}", root=registered)
        assert (out / f"{mode}.png").is_file()


def test_a_corrupted_file_of_the_new_data_set_is_caught(registered, tmp_path):
    import shutil

    from diffusion.data import ImageDataModule
    from diffusion.datasets import DataError

    shutil.copytree(registered / "shapes", tmp_path / "shapes")
    images, labels = shapes(40, seed=99)
    np.savez(tmp_path / "shapes" / "raw" / "test.npz", images=images, labels=labels)  # valid, but not the file
    with pytest.raises(DataError, match=r"test.npz has SHA-256 .*; run `make data` to fetch it again"):
        ImageDataModule(NAME, root=str(tmp_path)).prepare_data()
