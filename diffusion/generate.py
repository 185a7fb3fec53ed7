"""The one generation loop: bulk sampling, the end-of-run evaluation and the demo all make images through it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from diffusion.images import to_uint8


def balanced_labels(n: int, classes: Sequence[int]) -> Tensor:
    """Label i is classes[i mod len(classes)]: balanced, and the same for every batch size."""
    return torch.tensor([classes[i % len(classes)] for i in range(n)])


def generate(module: Any, labels: Tensor, indices: Sequence[int], batch_size: int, sampler: Any = None,
             guidance: float | None = None, seed: int = 0, desc: str | None = None,
             on_batch: Callable[[Tensor, list[int]], None] | None = None, **kwargs: Any) -> Tensor:
    """uint8 images (N, C, H, W) for `labels`, `batch_size` at a time.

    Image i is seeded by (seed, indices[i]) alone, so it is the same whatever the batch size or the process that
    makes it (callers split `indices` across ranks). `desc` shows a progress bar; `on_batch(images, indices)` sees
    each batch as soon as it is done (e.g. to save it); `kwargs` go to the sampler (callback, x_T, ...).
    """
    indices = list(indices)
    if len(indices) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(indices)} indices")
    done: list[Tensor] = []
    with tqdm(total=len(indices), desc=desc, unit="img", file=sys.stderr, disable=desc is None) as bar:
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            images = to_uint8(module.sample(labels[start : start + len(idx)], sampler, seed=seed, indices=idx,
                                            guidance=guidance, **kwargs)).cpu()
            done.append(images)
            if on_batch is not None:
                on_batch(images, idx)
            bar.update(len(idx))
    return torch.cat(done) if done else torch.empty((0, *module.image_shape), dtype=torch.uint8)
