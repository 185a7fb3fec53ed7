"""The data-set registry: `conf/data/<name>.yaml` says what a data set is; `DataSpec` is that description in code.

A new data set is one YAML file (classes, channels, size, pad, file format, files with their SHA-256, class
counts) plus, if it has its own download, one source function in `diffusion/fetch.py`. The data module, the
evaluator, the evaluation, sampling and the demo read everything from the spec (or from a checkpoint's copy).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("idx", "npz")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
NPZ_FILES = {"train": ("train.npz",), "test": ("test.npz",)}
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class DataError(RuntimeError):
    """A data set is missing, misdescribed or failed verification."""


@dataclass(frozen=True)
class DataSpec:
    """What a data set is: classes, image shape, on-disk format and the checks its files must pass."""

    name: str
    classes: tuple[str, ...]
    channels: int = 1
    size: int = 28  # stored images are size × size
    pad: int = 0  # background border added on each side: the model sees size + 2·pad
    format: str = "idx"  # idx: MNIST-style files; npz: train.npz / test.npz with `images` (uint8) and `labels`
    folder: str = ""  # files live in <root>/<folder>/raw (torchvision's layout); default: the name
    files: dict[str, str | None] = field(default_factory=dict)  # file -> SHA-256 of its (uncompressed) bytes
    counts: dict[str, list[int]] | None = None  # split -> images per class, checked on load
    source: str | None = None  # offline source in diffusion/fetch.py (SOURCES), tried before torchvision
    torchvision: str | None = None  # torchvision.datasets class that downloads it (needs the internet)
    classifier_epochs: int = 3  # training epochs of its evaluator network

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "folder", self.folder or self.name)
        bad = [v for v in (self.name, self.folder, *self.files) if not SAFE_NAME.fullmatch(str(v))]
        if bad or self.format not in FORMATS or self.channels not in (1, 3) or self.size < 1 or self.pad < 0:
            raise DataError(f"data set {self.name!r} is misdescribed: names {bad or 'ok'}, format {self.format!r} "
                            f"(one of {FORMATS}), channels {self.channels} (1 or 3), size {self.size}, pad {self.pad}")
        if len(self.classes) < 2:
            raise DataError(f"data set {self.name!r} needs at least two classes, got {list(self.classes)}")

    @property
    def resolution(self) -> int:
        """Side of the images the model sees: size + 2·pad."""
        return self.size + 2 * self.pad

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the model's images."""
        return (self.channels, self.resolution, self.resolution)

    def split_files(self, split: str) -> tuple[str, ...]:
        """The files of one split ("train" or "test")."""
        return (IDX_FILES if self.format == "idx" else NPZ_FILES)[split]

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for checkpoints and JSON)."""
        return {**asdict(self), "classes": list(self.classes)}

    @classmethod
    def of(cls, data: str | Mapping[str, Any] | DataSpec) -> DataSpec:
        """A spec from itself, a mapping (a data config or a checkpoint's copy) or a registered name."""
        if isinstance(data, DataSpec):
            return data
        if isinstance(data, str):
            from diffusion.runtime import config_option, config_options

            if data not in config_options("data"):
                raise ValueError(f"data.name must be one of {', '.join(config_options('data'))}, got {data!r}")
            data = config_option("data", data)
        from omegaconf import OmegaConf

        known = {f.name for f in fields(cls)}
        plain = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in dict(data).items()}
        return cls(**{k: v for k, v in plain.items() if k in known})


def raw_dir(root: str | Path, data: str | Mapping[str, Any] | DataSpec) -> Path:
    """Folder holding the files: <root>/<folder>/raw."""
    return Path(root) / DataSpec.of(data).folder / "raw"


def read_idx(data: bytes) -> np.ndarray:
    """Parse IDX bytes (LeCun et al.) into a uint8 array, checking the header against the payload size."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError("not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    payload = data[4 + 4 * ndim :]
    if len(payload) != int(np.prod(dims)):
        raise DataError(f"IDX payload has {len(payload)} bytes, header says {dims}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def read_split(root: str | Path, spec: DataSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W) or (N, H, W, C) and integer labels (N,) of one split, checked against the spec."""
    folder = raw_dir(root, spec)
    paths = [folder / f for f in spec.split_files(split)]
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p} is missing")
    if spec.format == "idx":
        images, labels = (read_idx(p.read_bytes()) for p in paths)
    else:
        with np.load(paths[0], allow_pickle=False) as z:  # arrays only: nothing in the file can run
            images, labels = z["images"], z["labels"]
    shape = (spec.size, spec.size) if spec.channels == 1 else (spec.size, spec.size, spec.channels)
    if images.dtype != np.uint8 or images.shape[1:] != shape or labels.shape != images.shape[:1]:
        raise DataError(f"{spec.name} {split}: images {images.dtype} {images.shape}, labels {labels.shape}; "
                        f"expected uint8 (N, {', '.join(map(str, shape))}) and (N,)")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(spec.classes)):
        raise DataError(f"{spec.name} {split}: labels outside 0..{len(spec.classes) - 1}")
    counts = np.bincount(labels, minlength=len(spec.classes)).tolist()
    if spec.counts and counts != list(spec.counts[split]):
        raise DataError(f"{spec.name} {split}: label counts {counts} differ from the original")
    return images, labels.astype(np.int64)
