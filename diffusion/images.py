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


def grid_image(images: Tensor, ncol: int, row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, scale: int = 2) -> Image.Image:
    """(N, C, H, W) in [-1, 1] as a grid of `ncol` columns, upscaled, with optional row and column labels."""
    grid = make_grid(images.float().cpu().clamp(-1, 1), nrow=ncol, padding=2, normalize=True, value_range=(-1, 1),
                     pad_value=0.5)
    pil = Image.fromarray((grid.permute(1, 2, 0) * 255).round().byte().numpy())
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    if not row_labels and not col_labels:
        return pil
    left = 8 + 6 * max(map(len, row_labels)) if row_labels else 0
    top = 14 if col_labels else 0
    canvas = Image.new("RGB", (pil.width + left, pil.height + top), "white")
    canvas.paste(pil, (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(row_labels or []):
        draw.text((4, top + int((i + 0.5) * pil.height / len(row_labels)) - 6), label, fill="black")
    for j, label in enumerate(col_labels or []):
        draw.text((left + int((j + 0.5) * pil.width / len(col_labels)) - 3 * len(label), 1), label, fill="black")
    return canvas


def save_grid(images: Tensor, path: str | Path, ncol: int, row_labels: Sequence[str] | None = None,
              col_labels: Sequence[str] | None = None) -> Path:
    """Write a grid PNG (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, ncol, row_labels, col_labels).save(path)
    return path
