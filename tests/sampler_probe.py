"""A throwaway sampler registered from outside the package, as docs/extending.md adds one (tests only)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from diffusion.samplers import Job, _alpha_bars, check_interval, register_sampler, respaced_timesteps

NAME = "test_euler"


@register_sampler(NAME)
@torch.no_grad()
def euler_sample(job: Job, steps: int = 20, clip: str = "none",
                 guidance_interval: Sequence[float] | None = None) -> Tensor:
    """First-order steps x_prev = √ᾱ_prev·x̂_0 + √(1−ᾱ_prev)·ε̃ (DDIM with η = 0, Song et al. 2021, eq. 12)."""
    ts, interval = respaced_timesteps(job.schedule.timesteps, steps), check_interval(guidance_interval)
    x = job.start()
    for i, t in enumerate(ts):
        eps, x0 = job.denoise(x, t, clip, interval)
        ab, ab_prev = _alpha_bars(job.schedule, ts, i, x)
        x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        job.finish(x, i, t, eps)
    return x
