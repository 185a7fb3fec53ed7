"""MNIST / Fashion-MNIST as a LightningDataModule: 28×28 padded to 32×32, pixels in [-1, 1]."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset, random_split

from diffusion.fetch import FOLDER, DataError, raw_dir, verified

CLASS_NAMES = {
    "mnist": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "fashion": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}


class DataMissingError(FileNotFoundError):
    """The raw files are not where torchvision expects them."""


def to_model_range(images: Tensor, pad: int = 2) -> Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 32, 32) in [-1, 1]; the border is background (-1)."""
    x = images.float().div(127.5).sub(1).unsqueeze(1)  # [0, 255] -> [-1, 1]
    return F.pad(x, (pad, pad, pad, pad), value=-1.0)


def load_split(root: str | Path, name: str, train: bool) -> tuple[Tensor, Tensor]:
    """Verify, then read the raw files with torchvision (download=False): uint8 images (N, 28, 28), labels (N,)."""
    from torchvision import datasets

    if name not in FOLDER:
        raise ValueError(f"data name must be one of {sorted(FOLDER)}, got {name!r}")
    if not all((raw_dir(root, name) / f).is_file() for f in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")):
        raise DataMissingError(f"{name} data not found under {Path(root).resolve()}; run `make data` to fetch it")
    try:
        verified(root, name)  # shapes, label counts and SHA-256, once per process
    except DataError as err:
        raise DataError(f"{err}; run `make data` to fetch it again") from None
    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    ds = cls(str(root), train=train, download=False)
    return ds.data, ds.targets.long()


class DigitsDataModule(L.LightningDataModule):
    """Train/val split of the 60k training images (seeded) and the official 10k test set."""

    def __init__(self, name: str = "mnist", root: str = "data", batch_size: int = 128, num_workers: int = 0,
                 val_size: int = 5000, split_seed: int = 0) -> None:
        super().__init__()
        if name not in CLASS_NAMES:
            raise ValueError(f"data.name must be one of {sorted(CLASS_NAMES)}, got {name!r}")
        if batch_size < 1 or num_workers < 0 or not 0 < val_size < 60000:
            raise ValueError("data.batch_size must be ≥ 1, data.num_workers ≥ 0 and 0 < data.val_size < 60000")
        self.save_hyperparameters()
        self.name, self.root, self.batch_size, self.num_workers = name, root, batch_size, num_workers
        self.class_names = CLASS_NAMES[name]

    def prepare_data(self) -> None:
        """Fail fast with a clear message if the data has not been fetched (never downloads)."""
        load_split(self.root, self.name, train=False)

    def setup(self, stage: str | None = None) -> None:
        """Build the tensors once; a 60k×32×32 float set is 245 MB, cheaper than per-item transforms."""
        if hasattr(self, "train_set"):
            return
        images, labels = load_split(self.root, self.name, train=True)
        full = TensorDataset(to_model_range(images), labels)
        gen = torch.Generator().manual_seed(self.hparams.split_seed)
        sizes = [len(full) - self.hparams.val_size, self.hparams.val_size]
        self.train_set, self.val_set = random_split(full, sizes, gen)
        test_images, test_labels = load_split(self.root, self.name, train=False)
        self.test_set = TensorDataset(to_model_range(test_images), test_labels)

    def _loader(self, ds, shuffle: bool) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=shuffle, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
