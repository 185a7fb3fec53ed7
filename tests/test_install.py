"""The install cannot drift: constraints.txt pins every dependency inside pyproject.toml's ranges, and the suite runs
on exactly those versions when it runs in the venv that `make` builds."""

import importlib.metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as the pinned versions are


def pinned() -> dict[str, str]:
    """constraints.txt as {canonical name: version}."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = (line.split("==") for line in lines if line.strip() and not line.startswith("#"))
    return {canonicalize_name(name): version.strip() for name, version in pairs}


def declared() -> list[Requirement]:
    """pyproject.toml's dependencies and every extra's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    return [Requirement(r) for r in [*project["dependencies"], *(r for extra in extras for r in extra)]]


def test_every_declared_dependency_is_pinned_inside_its_range():
    lock = pinned()
    outside = [f"{r} (pinned {lock.get(canonicalize_name(r.name), 'nowhere')})" for r in declared()
               if not r.specifier.contains(lock.get(canonicalize_name(r.name), "0"), prereleases=True)]
    assert not outside, "constraints.txt outside pyproject.toml: " + "; ".join(outside)


def test_every_extra_has_a_tested_upper_bound():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    uncapped = [r for extra in project["optional-dependencies"].values() for r in extra
                if not any(s.operator in ("<", "<=", "==", "~=") for s in Requirement(r).specifier)]
    assert not uncapped


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="not the venv `make` builds")
def test_the_suite_runs_on_the_pinned_versions():
    lock, seen = pinned(), {}
    for dist in importlib.metadata.distributions():
        seen.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)
    drift = [f"{name} {version} (constraints.txt: {lock[name]})" for name, version in seen.items()
             if name in lock and version != lock[name]]
    assert not drift, "installed versions differ from constraints.txt (make install): " + "; ".join(drift)


def make_plan(target: str) -> list[str]:
    """The pip installs `make <target>` would run in a fresh clone (`make -n -B`: print every command, run none)."""
    import subprocess

    r = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if "pip install" in line and " -e " in line]


def test_make_install_gives_what_the_readme_runs_and_make_test_adds_only_the_test_tools():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert {canonicalize_name(Requirement(r).name) for r in extras["test"]} == {"pytest", "scipy", "playwright"}
    user = ["'.[sweep,demo,tensorboard]'"]  # the Hydra launchers and Optuna, the demo, TensorBoard
    for target in ("install", "train"):
        assert [line.split(" -e ")[1].strip() for line in make_plan(target)] == user
    assert [line.split(" -e ")[1].strip() for line in make_plan("test")] == [*user, "'.[test,sweep,demo,tensorboard]'"]
    assert project["requires-python"] == ">=3.11"
