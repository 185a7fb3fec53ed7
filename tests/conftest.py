"""Shared fixtures: config composition with cheap settings, the real data folder, entry-point runner."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import diffusion  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
DATA = Path(os.environ.get("DIFFUSION_DATA", ROOT / "data"))
_WANDB_HOME = Path(tempfile.gettempdir()) / "diffusion-tests-wandb"  # W&B's artifact staging and cache, not ~/.local
WANDB_ENV = {"WANDB_MODE": "offline", "WANDB_DATA_DIR": str(_WANDB_HOME / "data"),
             "WANDB_CACHE_DIR": str(_WANDB_HOME / "cache")}


def compose_cfg(name: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    """Compose a primary config the way the entry point does (without running Hydra's job)."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(name, overrides=overrides, return_hydra_config=hydra)


@pytest.fixture
def train_cfg(tmp_path: Path):
    """Factory: the training config with a tiny, fast setup writing into tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_cfg("train", [f"run_dir={tmp_path}", "debug=fast", "logger=csv", f"data.root={DATA}",
                                     "callbacks.progress=null", *overrides])

    return make


def run_entry(script: str, *args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600,
              input: str | None = None):
    """Run `python <script> args` as a user would; returns the CompletedProcess (text output)."""
    full_env = {**os.environ, "DIFFUSION_DATA": str(DATA), **WANDB_ENV, **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=full_env, text=True, input=input,
                          capture_output=True, timeout=timeout)


def run_main(script: str, *args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python <script> args` (or `python -m <module> args`) run inside this process, in `cwd` if given: the same
    argv, Hydra composition, entry point and error handling as run_entry, without a new interpreter (~6 s each):
    for the one-line errors and the runs that need no process of their own. Working directory, environment, RNG
    state and Hydra's global state are restored; returns a CompletedProcess."""
    from hydra.core.global_hydra import GlobalHydra

    argv, environ, rng, here = sys.argv, dict(os.environ), torch.random.get_rng_state(), os.getcwd()
    precision, out, err, code = torch.get_float32_matmul_precision(), io.StringIO(), io.StringIO(), 0
    module = not script.endswith(".py")
    sys.argv = [script if module else str(ROOT / script), *args]
    os.environ.update({"DIFFUSION_DATA": str(DATA), **WANDB_ENV, **(env or {})})
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if module:
                runpy.run_module(script, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        os.chdir(here)
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
        torch.random.set_rng_state(rng)
        torch.set_float32_matmul_precision(precision)
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data folder written by `make data`."""
    if not (DATA / "MNIST" / "raw").is_dir():
        pytest.fail(f"no data under {DATA}: run `make data` first (make test does)")
    return DATA


# The README's `python train.py schedule=cosine guidance=0.2`, shrunk: the one training most tests share (T = 100)
TINY_RUN = ["schedule=cosine", "guidance=0.2", "timesteps=100", "trainer.max_steps=30", "logger=csv", "debug=fast",
            "callbacks.progress=null"]


@dataclass(frozen=True)
class TinyRun:
    """A run train.py made in this session: its directory and what the command printed."""

    dir: Path
    result: subprocess.CompletedProcess

    @property
    def ckpt(self) -> Path:
        return self.dir / "checkpoints" / "last.ckpt"


def _train_tiny(root: Path, data: str) -> TinyRun:
    """`python train.py <TINY_RUN> data=<data>` as a user types it, once per session."""
    r = run_entry("train.py", *TINY_RUN, f"data={data}", f"hydra.run.dir={root}")
    assert r.returncode == 0, r.stderr[-3000:]
    return TinyRun(root, r)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_root) -> TinyRun:
    """The session's tiny MNIST run (TINY_RUN)."""
    return _train_tiny(tmp_path_factory.mktemp("tiny_mnist"), "mnist")


@pytest.fixture(scope="session")
def tiny_fashion_run(tmp_path_factory, data_root) -> TinyRun:
    """The session's tiny Fashion-MNIST run."""
    return _train_tiny(tmp_path_factory.mktemp("tiny_fashion"), "fashion")


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_run) -> Path:
    """The tiny MNIST run's last.ckpt (T=100, 30 steps)."""
    return tiny_run.ckpt


@pytest.fixture(scope="session")
def tiny_fashion_ckpt(tiny_fashion_run) -> Path:
    """The tiny Fashion-MNIST run's last.ckpt."""
    return tiny_fashion_run.ckpt


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def demo_server(ckpt: Path, workdir: Path, cwd: Path = ROOT, env: dict | None = None) -> Iterator[str]:
    """`python -m diffusion.demo ckpt_path=…` on a free port, as a user starts it; yields its URL, then stops it."""
    port = free_port()
    log = open(workdir / "server.log", "w")
    full_env = {**os.environ, "DIFFUSION_DATA": str(DATA), "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "diffusion.demo", f"ckpt_path={ckpt}", f"port={port}",
                             f"hydra.run.dir={workdir / 'run'}"], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            env=full_env)
    url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert proc.poll() is None, open(log.name).read()[-3000:]
                assert time.monotonic() < deadline, "demo did not start in 120 s"
                time.sleep(0.5)  # polling the port until the server answers
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
