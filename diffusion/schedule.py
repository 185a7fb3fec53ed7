"""Noise schedules: β(t) as plain functions and a small object holding the precomputed buffers."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

BETA_SCHEDULES: dict[str, Callable[..., Tensor]] = {}
PREDICTIONS = ("eps", "v", "x0")  # what the network outputs: ε, v = α·ε − σ·x_0, or x_0
LOSS_WEIGHTS = ("none", "min_snr")


def beta_schedule(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Register `<kind>_betas` as schedule `kind`: a new schedule is one such function and conf/schedule/<kind>.yaml."""
    BETA_SCHEDULES[fn.__name__.removesuffix("_betas")] = fn
    return fn


@beta_schedule
def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """β_t evenly spaced from beta_start to beta_end (Ho et al. 2020, §4), float64."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


@beta_schedule
def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """β_t = 1 − ᾱ_t/ᾱ_{t−1} with ᾱ from f(t)=cos²(((t/T)+s)/(1+s)·π/2), clipped (Nichol & Dhariwal 2021, eq. 17)."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


class NoiseSchedule(nn.Module):
    """Discrete DDPM forward process q(x_t | x_0); t is 0-based (t=0 is the first noising step)."""

    def __init__(self, timesteps: int = 1000, kind: str = "linear", **beta_kwargs: float) -> None:
        super().__init__()
        if kind not in BETA_SCHEDULES:
            raise ValueError(f"schedule kind must be one of {sorted(BETA_SCHEDULES)}, got {kind!r}")
        if int(timesteps) < 1:
            raise ValueError(f"timesteps must be a positive integer, got {timesteps}")
        self.timesteps, self.kind = int(timesteps), kind
        betas = BETA_SCHEDULES[kind](self.timesteps, **beta_kwargs)  # float64 math, float32 storage
        alphas = 1 - betas
        alpha_bar = torch.cumprod(alphas, 0)
        alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
        buffers = {
            "betas": betas,
            "alphas": alphas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alpha_bar": (1 - alpha_bar).sqrt(),
            # β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t (Ho et al. 2020, eq. 7)
            "posterior_variance": betas * (1 - alpha_bar_prev) / (1 - alpha_bar),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, timesteps={self.timesteps}"

    @staticmethod
    def gather(values: Tensor, t: Tensor) -> Tensor:
        """values[t] reshaped to (B, 1, 1, 1) for broadcasting over images."""
        return values[t].view(-1, 1, 1, 1)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (Ho et al. 2020, eq. 4)."""
        return self.gather(self.sqrt_alpha_bar, t) * x0 + self.gather(self.sqrt_one_minus_alpha_bar, t) * noise

    def predict_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x̂_0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t, eq. 4 solved for x_0 (per-sample t; the samplers use scalar t)."""
        return (x_t - self.gather(self.sqrt_one_minus_alpha_bar, t) * eps) / self.gather(self.sqrt_alpha_bar, t)

    def snr(self, t: Tensor) -> Tensor:
        """SNR(t) = ᾱ_t/(1−ᾱ_t) = α_t²/σ_t² (Kingma et al. 2021, eq. 2), per sample, float32."""
        return self.alpha_bar[t] / (1 - self.alpha_bar[t])

    def target(self, prediction: str, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """What the network learns to output for `prediction`: ε, x_0, or v = α_t·ε − σ_t·x_0 (Salimans & Ho 2022,
        §4)."""
        if prediction == "eps":
            return noise
        if prediction == "x0":
            return x0
        if prediction == "v":
            return self.gather(self.sqrt_alpha_bar, t) * noise - self.gather(self.sqrt_one_minus_alpha_bar, t) * x0
        raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")

    def eps_from(self, prediction: str, x_t: Tensor, t: Tensor, out: Tensor) -> Tensor:
        """The network output for `prediction` as ε̂, so that every sampler and guidance work in ε-space:
        v: ε̂ = σ_t·x_t + α_t·v̂ (Salimans & Ho 2022, App. D); x_0: ε̂ = (x_t − α_t·x̂_0)/σ_t (eq. 4 solved for ε)."""
        if prediction == "eps":
            return out
        alpha, sigma = self.gather(self.sqrt_alpha_bar, t), self.gather(self.sqrt_one_minus_alpha_bar, t)
        if prediction == "v":
            return sigma * x_t + alpha * out
        if prediction == "x0":
            return (x_t - alpha * out) / sigma
        raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")

    def loss_weight(self, kind: str, prediction: str, t: Tensor, gamma: float = 5.0) -> Tensor:
        """Per-sample weight of the loss on `prediction`'s target. 'min_snr': the weight that makes it
        min(SNR_t, γ)·‖x_0 − x̂_0‖², i.e. min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR+1) for v, min(SNR, γ) for x_0
        (Min-SNR-γ, Hang et al. 2023, eq. 7 and §3.4); 'none': 1."""
        if kind == "none":
            return torch.ones_like(t, dtype=self.alpha_bar.dtype)
        if kind != "min_snr":
            raise ValueError(f"loss_weight must be one of {', '.join(LOSS_WEIGHTS)}, got {kind!r}")
        snr = self.snr(t)
        clipped = snr.clamp(max=gamma)
        return {"eps": clipped / snr, "v": clipped / (snr + 1), "x0": clipped}[prediction]
