"""The evaluator network: a small CNN per data set, trained here, cached and reused.

`python -m diffusion.classifier --data mnist` trains it (1-2 minutes on CPU) and writes
`<data root>/evaluators/<data>_classifier.pt`; any registered data set (conf/data/) works, its shape and classes
taken from the spec. Its logits give IS and class accuracy, its
penultimate 128-d features the fast FID feature space.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.data import ImageDataModule
from diffusion.datasets import DataSpec
from diffusion.files import atomic_write
from diffusion.runtime import cpu_precision, data_root

def evaluator_path(root: str | Path, data: str) -> Path:
    """Where the evaluator for `data` is cached."""
    return Path(root) / "evaluators" / f"{data}_classifier.pt"


class ImageClassifier(nn.Module):
    """(N, C, S, S) in [-1, 1] -> class logits; `features` is the 128-d penultimate layer. S divisible by 8."""

    def __init__(self, width: int = 16, num_classes: int = 10, in_channels: int = 1, image_size: int = 32) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

        w, side = width, image_size // 8
        self.image_size = image_size  # evaluation frames every image to this side (evaluation.evaluator_view)
        self.body = nn.Sequential(block(in_channels, w), block(w, w), nn.MaxPool2d(2),  # S/2
                                  block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool2d(2),  # S/4
                                  block(2 * w, 4 * w), nn.MaxPool2d(2), nn.Flatten())  # S/8
        self.fc = nn.Sequential(nn.Linear(4 * w * side * side, 128), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, num_classes))

    def features(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class ClassifierModule(L.LightningModule):
    """Cross-entropy training with light random shifts (the digits sit in a 2-pixel border)."""

    def __init__(self, arch: dict[str, int], lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = ImageClassifier(**arch)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        dx, dy = torch.randint(-2, 3, (2,)).tolist()
        loss = F.cross_entropy(self.net(torch.roll(x, (dx, dy), dims=(2, 3))), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("test/accuracy", (self.net(x).argmax(1) == y).float().mean(), batch_size=len(y))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        total = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.hparams.lr, total_steps=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_classifier(data: str | DataSpec, root: str | Path, epochs: int | None = None, seed: int = 0) -> Path:
    """Train on the training images, measure test accuracy, save to `evaluator_path` with its architecture."""
    L.seed_everything(seed, verbose=False)
    spec = DataSpec.of(data)
    epochs = epochs or spec.classifier_epochs
    arch = {"num_classes": len(spec.classes), "in_channels": spec.channels, "image_size": spec.resolution}
    dm = ImageDataModule(root=str(root), batch_size=128, val_size=1, **spec.as_dict())
    module = ClassifierModule(arch)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", precision=cpu_precision(), logger=False,
                        enable_checkpointing=False, limit_val_batches=0, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    accuracy = trainer.test(module, datamodule=dm, verbose=False)[0]["test/accuracy"]
    path = evaluator_path(root, spec.name)
    saved = {"data": spec.name, "state_dict": module.net.state_dict(), "test_accuracy": accuracy, "epochs": epochs,
             "arch": arch}
    atomic_write(path, lambda f: torch.save(saved, f))
    print(f"{spec.name} evaluator: test accuracy {accuracy:.4f}, saved to {path}")
    return path


def load_classifier(root: str | Path, data: str) -> tuple[ImageClassifier, dict]:
    """The cached evaluator for `data`; FileNotFoundError / ValueError with the command that makes it."""
    path = evaluator_path(root, data)
    fix = f"run `make evaluators` (or `python -m diffusion.classifier --data {data}`)"
    if not path.is_file():
        raise FileNotFoundError(f"no {data} evaluator at {path}; {fix}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        net = ImageClassifier(**ckpt.get("arch", {}))  # files without "arch" are the 1×32×32, 10-class nets
        net.load_state_dict(ckpt["state_dict"])
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ValueError(f"evaluator {path} is unreadable ({type(err).__name__}); {fix}") from None
    if ckpt.get("data") != data:
        raise ValueError(f"evaluator {path} was trained on {ckpt.get('data')!r}, not {data!r}; {fix}")
    return net.eval(), ckpt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the evaluator classifier(s).")
    parser.add_argument("--data", nargs="*", default=["mnist", "fashion"], help="registered data sets (conf/data/)")
    parser.add_argument("--root", default=data_root(), help="data folder (default: $DIFFUSION_DATA or data)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the data set's classifier_epochs")
    parser.add_argument("--if-missing", action="store_true", help="skip data sets whose evaluator loads already")
    args = parser.parse_args(argv)
    for data in args.data:
        if args.if_missing:
            try:
                _, ckpt = load_classifier(args.root, data)
                print(f"{data} evaluator present (test accuracy {ckpt['test_accuracy']:.4f})")
                continue
            except (FileNotFoundError, ValueError):
                pass
        train_classifier(data, args.root, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
