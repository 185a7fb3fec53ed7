"""Turning model outputs into files: uint8 conversion and labelled grids (torchvision's make_grid underneath)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import make_grid


def to_uint8(x: Tensor) -> Tensor:
    """[-1, 1] floats -> uint8 [0, 255], same shape."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def grid_image(images: Tensor, ncol: int, row_labels: Sequence[str] | None = None, scale: int = 2) -> Image.Image:
    """(N, C, H, W) in [-1, 1] as a grid of `ncol` columns, upscaled, with an optional label left of each row."""
    grid = make_grid(images.float().cpu(), nrow=ncol, padding=2, normalize=True, value_range=(-1, 1), pad_value=0.5)
    pil = Image.fromarray((grid.permute(1, 2, 0) * 255).round().byte().numpy())
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    if not row_labels:
        return pil
    margin = 8 + 7 * max(len(s) for s in row_labels)
    canvas = Image.new("RGB", (pil.width + margin, pil.height), "white")
    canvas.paste(pil, (margin, 0))
    draw, row_h = ImageDraw.Draw(canvas), pil.height / len(row_labels)
    for i, label in enumerate(row_labels):
        draw.text((4, int((i + 0.5) * row_h) - 6), label, fill="black")
    return canvas


def save_grid(images: Tensor, path: str | Path, ncol: int, row_labels: Sequence[str] | None = None) -> Path:
    """Write a grid PNG (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, ncol, row_labels).save(path)
    return path
