"""Any registered image data set (conf/data/<name>.yaml) as a LightningDataModule: padded, pixels in [-1, 1]."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset, random_split

from diffusion.checks import check_integer
from diffusion.datasets import DataError, DataSpec, raw_dir, read_split
from diffusion.fetch import verified


class DataMissingError(FileNotFoundError):
    """The raw files are not where the data set's spec says."""


def channels_first(images: Tensor) -> Tensor:
    """Images as stored, (N, H, W) grey or (N, H, W, C) colour -> (N, C, H, W)."""
    return images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)


def to_model_range(images: Tensor, pad: int = 2) -> Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float (N, C, H + 2·pad, W + 2·pad) in [-1, 1]; the border is -1."""
    x = channels_first(images.float().div(127.5).sub(1))  # [0, 255] -> [-1, 1]
    return F.pad(x, (pad, pad, pad, pad), value=-1.0)


def load_split(root: str | Path, data: str | Mapping[str, Any] | DataSpec, train: bool) -> tuple[Tensor, Tensor]:
    """Verify (once per process), then read one split: uint8 images (N, H, W[, C]) and int64 labels (N,)."""
    spec = DataSpec.of(data)
    folder = raw_dir(root, spec)
    if not all((folder / f).is_file() for f in spec.split_files("train") + spec.split_files("test")):
        raise DataMissingError(f"{spec.name} data not found under {Path(root).resolve()}; run `make data` to fetch it")
    try:
        verified(root, spec)  # SHA-256, shapes, label range and counts
    except DataError as err:
        raise DataError(f"{err}; run `make data` to fetch it again") from None
    images, labels = read_split(root, spec, "train" if train else "test")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)


class ImageDataModule(L.LightningDataModule):
    """Train/val split of the training images (seeded) and the official test set of one registered data set.

    `val_size=0` trains on every training image and validates on the test set (what seeds 002 and 004 do);
    `drop_last=False` keeps the last, smaller batch of each epoch (60,000 / 128: 469 iterations, not 468).

    The keys of conf/data/<name>.yaml beside the loader settings are the data set's spec (`DataSpec`); given
    only a name, the spec is read from the registry.
    """

    def __init__(self, name: str = "mnist", root: str = "data", batch_size: int = 128, num_workers: int = 0,
                 val_size: int = 5000, split_seed: int = 0, drop_last: bool = True, **spec: Any) -> None:
        super().__init__()
        self.spec = DataSpec.of({"name": name, **spec} if spec else name)
        check_integer(batch_size, "data.batch_size", minimum=1)
        check_integer(num_workers, "data.num_workers")
        check_integer(val_size, "data.val_size (0: validate on the test set)")
        check_integer(split_seed, "data.split_seed")
        loader = {"root": root, "batch_size": batch_size, "num_workers": num_workers, "val_size": val_size,
                  "split_seed": split_seed, "drop_last": drop_last}
        self.save_hyperparameters({**loader, **self.spec.as_dict()})  # plain values: checkpoints load safely
        self.name, self.root, self.batch_size, self.num_workers = name, root, batch_size, num_workers
        self.class_names = list(self.spec.classes)

    def prepare_data(self) -> None:
        """Fail fast with a clear message if the data has not been fetched or does not verify (never downloads)."""
        load_split(self.root, self.spec, train=False)

    def setup(self, stage: str | None = None) -> None:
        """Build the tensors once; a 60k×32×32 float set is 245 MB, cheaper than per-item transforms."""
        if hasattr(self, "train_set"):
            return
        images, labels = load_split(self.root, self.spec, train=True)
        if not 0 <= self.hparams.val_size < len(images):
            raise ValueError(f"data.val_size must be between 0 (validate on the test set) and {len(images) - 1}, "
                             f"got {self.hparams.val_size}")
        full = TensorDataset(to_model_range(images, self.spec.pad), labels)
        test_images, test_labels = load_split(self.root, self.spec, train=False)
        self.test_set = TensorDataset(to_model_range(test_images, self.spec.pad), test_labels)
        if self.hparams.val_size == 0:
            self.train_set, self.val_set = full, self.test_set
            return
        gen = torch.Generator().manual_seed(self.hparams.split_seed)
        sizes = [len(full) - self.hparams.val_size, self.hparams.val_size]
        self.train_set, self.val_set = random_split(full, sizes, gen)

    def _loader(self, ds, shuffle: bool) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=shuffle and self.hparams.drop_last, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
