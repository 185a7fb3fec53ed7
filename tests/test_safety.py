"""Hostile and broken files through the real CLIs: nothing they hold runs, each gets one line; atomic writes."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import DATA, ROOT, run_entry, run_main
from diffusion.checkpoint import CheckpointError, SafeCheckpointIO, export_safetensors, load_module, read_checkpoint
from diffusion.data import ImageDataModule
from diffusion.datasets import DataError, raw_dir
from diffusion.fetch import FILES
from diffusion.files import atomic_write

pytestmark = pytest.mark.slow  # end-to-end through the real entry points: `make test`, not `make test-fast`


class Payload:
    """A pickle whose loading would create `marker` (what a hostile checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_files(tmp: Path, tiny_ckpt: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected reason); every loader must refuse each one without running anything."""
    marker = tmp / "PWNED"
    good = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    files = {}

    def put(name: str, data: bytes | None = None, obj=None, reason: str = "") -> None:
        path = tmp / name
        if obj is not None:
            torch.save(obj, path)
        else:
            path.write_bytes(data)
        files[name] = (path, reason)

    put("pickle.ckpt", pickle.dumps(Payload(marker)), reason="objects other than tensors and plain values; refused")
    put("torch_pickle.ckpt", obj={"state_dict": {}, "hyper_parameters": {}, "x": Payload(marker)},
        reason="could run code; refused")
    evil_net = {**good["hyper_parameters"], "net": {"_target_": "os.system", "_args_": [f"touch {marker}"]}}
    put("target.ckpt", obj={**good, "hyper_parameters": evil_net}, reason="net._target_='os.system' is not allowed")
    nested = {**good["hyper_parameters"]}
    nested["net"] = {**nested["net"], "act": {"_target_": "os.system", "_args_": [f"touch {marker}"]}}
    put("nested_target.ckpt", obj={**good, "hyper_parameters": nested}, reason="net.act._target_")
    put("empty.ckpt", b"", reason="empty file")
    blob = tiny_ckpt.read_bytes()
    put("truncated.ckpt", blob[: len(blob) // 2], reason="truncated or not a PyTorch file")
    put("text.ckpt", b"hello, I am not a checkpoint\n", reason="not a PyTorch checkpoint")
    put("evaluator.pt", (DATA / "evaluators" / "mnist_classifier.pt").read_bytes(), reason="no model hyper-parameters")
    put("fake.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage", reason="unreadable safetensors file")
    dag: list = []
    for _ in range(60):  # 60 levels of lists, each holding the next one twice: ~1 kB, 2^60 values as a tree
        dag = [dag, dag]
    too_big = "nest deeper than 32 levels or hold more than 100,000 values"
    net = {"_target_": "diffusion.unet.UNet"}
    put("dag.ckpt", obj={"state_dict": {}, "hyper_parameters": {"net": net, "junk": dag}}, reason=too_big)
    loop: list = []
    loop.append(loop)  # a list that contains itself
    put("loop.ckpt", obj={"state_dict": {}, "hyper_parameters": {"net": net, "junk": loop}}, reason=too_big)
    long_schedule = {**good["hyper_parameters"], "schedule": {**good["hyper_parameters"]["schedule"],
                                                              "timesteps": 30_000_000}}
    put("timesteps.ckpt", obj={**good, "hyper_parameters": long_schedule},
        reason="its schedule asks for 30000000 timesteps (at most 100,000)")
    from safetensors.torch import save

    deep = "[" * 200_000 + "]" * 200_000  # JSON nested beyond Python's stack
    put("deep.safetensors", save({"w": torch.zeros(1)}, metadata={"format": "diffusion-mnist",
                                                                    "hyper_parameters": deep}),
        reason="safetensors metadata lacks readable hyper-parameters")
    (tmp / "a_directory.ckpt").mkdir()
    files["a_directory.ckpt"] = (tmp / "a_directory.ckpt", "it is a directory")
    return files


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_ckpt):
    tmp = tmp_path_factory.mktemp("hostile")
    return tmp, hostile_files(tmp, tiny_ckpt)


CASES = ["pickle.ckpt", "torch_pickle.ckpt", "target.ckpt", "nested_target.ckpt", "empty.ckpt", "truncated.ckpt",
         "text.ckpt", "evaluator.pt", "fake.safetensors", "a_directory.ckpt", "dag.ckpt", "loop.ckpt",
         "timesteps.ckpt", "deep.safetensors"]


@pytest.mark.parametrize("name", CASES)
def test_every_loader_refuses_without_running_code(hostile, name):
    tmp, files = hostile
    path, reason = files[name]
    with pytest.raises(CheckpointError, match="is not a diffusion checkpoint") as info:
        load_module(path)
    assert reason in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError):
        SafeCheckpointIO().load_checkpoint(path)  # what Lightning calls when resuming
    assert not (tmp / "PWNED").exists()


# Every kind of file is refused in-process above; through the CLI, two kinds stand for the rest (a process start
# costs ~8 s): the line reaches the user whole, the process runs nothing.
@pytest.mark.parametrize("name", ["pickle.ckpt", "a_directory.ckpt"])
def test_sample_cli_gives_one_line_and_runs_nothing(hostile, name, tmp_path):
    files_dir, files = hostile
    path, reason = files[name]
    r = run_entry("sample.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {path} is not a diffusion checkpoint (") and reason in lines[0]
    assert not (files_dir / "PWNED").exists()


@pytest.mark.parametrize("name", ["nested_target.ckpt"])
def test_train_resume_from_a_hostile_file_gives_one_line(hostile, name, tmp_path):
    files_dir, files = hostile
    path, reason = files[name]
    r = run_entry("train.py", "debug=fast", f"ckpt_path={path}", f"hydra.run.dir={tmp_path}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and f"{path} is not a diffusion checkpoint" in lines[0], r.stderr
    assert not (files_dir / "PWNED").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("command", [["sample.py"], ["train.py", "debug=fast"], ["-m", "diffusion.export"]])
def test_a_1kb_shared_reference_pickle_gets_one_line_fast_and_small_from_every_entry_point(hostile, command,
                                                                                             tmp_path):
    """Issue 52: a file whose hyper-parameters are a DAG of shared lists hung every entry point (walked as a tree).
    Its refusal costs what refusing a 29-byte text file costs, in time and in peak memory."""
    path, reason = hostile[1]["dag.ckpt"]
    assert path.stat().st_size < 2048
    text = refused(command, hostile[1]["text.ckpt"], tmp_path / "text")  # the same command's own start-up cost
    dag = refused(command, (path, reason), tmp_path / "dag")
    assert dag["seconds"] < text["seconds"] + 10, (dag, text)
    assert dag["peak_kib"] < text["peak_kib"] + 64 * 1024, (dag, text)  # within 64 MiB of a plain refusal


def refused(command: list[str], file: tuple[Path, str], out: Path) -> dict[str, float]:
    """Run an entry point on a file it must refuse in one line; its wall time and its own peak memory (KiB)."""
    import time

    path, reason = file
    script, *args = command
    argv = [sys.executable, *(["-m", args.pop(0)] if script == "-m" else [str(ROOT / script)]), *args,
            f"ckpt_path={path}", f"hydra.run.dir={out}"]
    out.mkdir(parents=True)
    peak = out / "peak_kib"  # written by a wrapper process that waits for the command
    wrapper = [sys.executable, "-c", "import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode;"
               " open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss));"
               " sys.exit(code)", str(peak)]
    start = time.monotonic()
    r = subprocess.run([*wrapper, *argv], cwd=out, env={**os.environ, "DIFFUSION_DATA": str(DATA)},
                       capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - start
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and reason in lines[0], r.stderr[-2000:]
    return {"seconds": seconds, "peak_kib": int(peak.read_text())}


def test_planted_newest_checkpoint_is_refused(hostile, tmp_path):
    files_dir, files = hostile
    planted = tmp_path / "outputs" / "run" / "checkpoints" / "last.ckpt"
    planted.parent.mkdir(parents=True)
    shutil.copy(files["torch_pickle.ckpt"][0], planted)
    r = run_entry("sample.py", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "error: outputs/run/checkpoints/last.ckpt is not a diffusion checkpoint "
        "(it asks to import posix.system, which could run code; refused)"]
    assert not (files_dir / "PWNED").exists()


def test_safetensors_export_round_trip_and_hostile_metadata(tiny_ckpt, tmp_path):
    module = load_module(tiny_ckpt)
    out = export_safetensors(module, tmp_path / "model.safetensors")
    again = load_module(out)
    assert again.hparams == module.hparams and again.checkpoint_step == module.checkpoint_step
    labels = torch.arange(4)
    a, b = (m.sample(labels, seed=3, guidance=0.5) for m in (module, again))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="holds only the EMA weights"):
        load_module(out, weights="raw")
    from safetensors.torch import load_file, save_file

    hparams = {**dict(module.hparams), "schedule": {"_target_": "builtins.exec", "_args_": ["open('PWNED','w')"]}}
    save_file(load_file(out), tmp_path / "evil.safetensors",
              metadata={"format": "diffusion-mnist", "hyper_parameters": json.dumps(hparams)})
    with pytest.raises(CheckpointError, match=r"schedule._target_='builtins.exec' is not allowed"):
        load_module(tmp_path / "evil.safetensors")


def test_export_cli_and_sampling_from_the_export(tiny_ckpt, tmp_path):
    out = tmp_path / "tiny.safetensors"
    r = subprocess.run([sys.executable, "-m", "diffusion.export", f"ckpt_path={tiny_ckpt}", f"out={out}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith(f"{out} ("), r.stderr[-2000:]
    assert read_checkpoint(out)["hyper_parameters"]["data_name"] == "mnist"
    r = run_main("sample.py", f"ckpt_path={out}", f"out_dir={tmp_path}", f"hydra.run.dir={tmp_path}",
                 "sampler.steps=5", "n_per_class=1")
    assert r.returncode == 0 and (tmp_path / "grid.png").is_file(), r.stderr[-2000:]
    half = tmp_path / "half.safetensors"  # bf16 storage and a chosen default ω
    r = run_main("diffusion.export", f"ckpt_path={out}", f"out={half}", "guidance=0.7", "dtype=bfloat16")
    assert r.returncode == 0, r.stderr[-2000:]
    full, small = load_module(out), load_module(half)
    assert half.stat().st_size < 0.6 * out.stat().st_size and small.hparams.guidance == 0.7
    for a, b in zip(full.state_dict().values(), small.state_dict().values()):
        assert b.dtype == a.dtype  # cast back on load
        torch.testing.assert_close(b, a, rtol=1e-2, atol=1e-2)
    r = run_main("diffusion.export", f"ckpt_path={out}", "dtype=int8")
    assert r.returncode == 1 and r.stderr.strip() == "error: dtype must be one of 'float32', 'bfloat16', " \
        "'float16', got 'int8'"
    r = run_main("diffusion.export")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "error: ckpt_path is required, e.g. python -m diffusion.export ckpt_path=outputs/<run>/checkpoints/last.ckpt "
        "out=model.safetensors"]


# ---- crash-safe writes --------------------------------------------------------------------------------------------

KILL_MIDWAY = """
import os, signal, sys, torch
from diffusion.checkpoint import SafeCheckpointIO

real_save = torch.save
def half_then_die(obj, f):
    import io
    buf = io.BytesIO()
    real_save(obj, buf)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)   # the process dies in the middle of writing the checkpoint
torch.save = half_then_die
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
SafeCheckpointIO().save_checkpoint({**ckpt, "global_step": 999}, sys.argv[1])
"""


def test_a_save_killed_midway_leaves_the_previous_checkpoint_loadable(tiny_ckpt, tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    shutil.copy(tiny_ckpt, last)
    before = last.read_bytes()
    r = subprocess.run([sys.executable, "-c", KILL_MIDWAY, str(last)], cwd=ROOT, capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert last.read_bytes() == before  # the old file, whole
    step = read_checkpoint(tiny_ckpt)["global_step"]
    assert read_checkpoint(last)["global_step"] == step and load_module(last).checkpoint_step == step
    leftovers = [p.name for p in last.parent.iterdir() if p != last]
    assert leftovers and all(n.startswith(".last.ckpt.") and n.endswith(".tmp") for n in leftovers)  # same dir


def test_atomic_write_cleans_up_on_error_and_uses_normal_permissions(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "g.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "g.bin").stat().st_mode & 0o777 == 0o644


def test_files_a_user_reads_get_normal_permissions(tiny_ckpt, tmp_path):
    umask_022 = {"preexec_fn": lambda: os.umask(0o022)}
    args = [sys.executable, str(ROOT / "sample.py"), f"ckpt_path={tiny_ckpt}", f"out_dir={tmp_path}",
            f"hydra.run.dir={tmp_path}", "mode=bulk", "num_samples=3", "sampler.steps=3"]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "DIFFUSION_DATA": str(DATA)}, **umask_022)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "samples.npz").stat().st_mode & 0o777 == 0o644


# ---- data files ---------------------------------------------------------------------------------------------------

@pytest.fixture
def data_copy(data_root, tmp_path):
    """A private copy of the MNIST raw files, to corrupt."""
    shutil.copytree(raw_dir(data_root, "mnist"), raw_dir(tmp_path, "mnist"))
    return tmp_path


@pytest.mark.parametrize("label", [3, 12])
def test_a_corrupted_label_is_caught_before_training(data_copy, label):
    f = raw_dir(data_copy, "mnist") / "train-labels-idx1-ubyte"
    data = bytearray(f.read_bytes())
    data[8 + 100] = label if data[8 + 100] != label else (label + 1) % 10  # one label changed (in range or not)
    f.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte has SHA-256 .*; run `make data` to fetch it again"):
        ImageDataModule(root=str(data_copy)).setup()


def test_train_cli_names_make_data_for_a_corrupted_file(data_copy, tmp_path):
    f = raw_dir(data_copy, "mnist") / FILES[0]
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    r = run_main("train.py", "debug=fast", f"hydra.run.dir={tmp_path / 'run'}", env={"DIFFUSION_DATA": str(data_copy)})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "run `make data` to fetch it again" in lines[0], r.stderr
