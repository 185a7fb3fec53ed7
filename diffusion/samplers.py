"""Samplers: short pure functions of one `Job` (model, schedule, labels, generators, guidance) and their own options,
returning x_0 in [-1, 1], each registered under its `sampler=` name.

`model(x, t, y)` predicts ε. Classifier-free guidance uses ω ("guidance") in
ε̃ = (1+ω)·ε(x,t,c) − ω·ε(x,t,∅) (Ho & Salimans 2022, eq. 6); ω=0 is plain conditional
sampling, and the other common form ε_u + w·(ε_c − ε_u) is the same with w = 1+ω (so ω=−1,
w=0, is unconditional sampling).
Every sample draws its noise from its own generator, so image i depends only on its seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
import math
import types
import typing
from typing import Any, Literal, Union

import torch
from torch import Tensor

from diffusion.checks import check_steps
from diffusion.schedule import NoiseSchedule

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]
StepCallback = Callable[[int, int, Tensor, Tensor, Tensor], None]  # (step index, t, x after it, ε̃, x_t before)
Clip = Literal["none", "static", "dynamic"]  # x̂_0 clipping: none, to [-1, 1], or dynamic thresholding
CLIP_MODES = typing.get_args(Clip)
SAMPLERS: dict[str, Callable[..., Tensor]] = {}  # name -> sampler function: the registry


def register_sampler(name: str) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register a sampler as `sampler=<name>`: a new sampler is one such function and conf/sampler/<name>.yaml (its
    `_target_` naming the function); the checkpoint allow-list, sample.py, the demo and the benchmark follow."""

    def register(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        SAMPLERS[name] = fn
        return fn

    return register


def sampler_targets() -> set[str]:
    """The `_target_`s of the registered samplers, e.g. 'diffusion.samplers.ddim_sample'."""
    return {f"{fn.__module__}.{fn.__name__}" for fn in SAMPLERS.values()}


def sample_generators(seed: int, indices: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from (seed, index) so image i never depends on the batch (taken modulo
    2^64, the generator's seed range: the same seeds as without the modulo wherever those were accepted)."""
    return [torch.Generator().manual_seed((seed * 1_000_003 + int(i)) % 2**64) for i in indices]


def per_sample_randn(generators: Sequence[torch.Generator], shape: Sequence[int], device: torch.device) -> Tensor:
    """Stack of standard normal draws, one per (CPU) generator: (B, *shape), the same numbers on every device.

    On a GPU the draw goes through pinned memory and is copied asynchronously, overlapping the model's work.
    """
    noise = torch.stack([torch.randn(*shape, generator=g) for g in generators])
    if torch.device(device).type != "cuda":
        return noise.to(device)
    return noise.pin_memory().to(device, non_blocking=True)


def initial_noise(generators: Sequence[torch.Generator], shape: Sequence[int] | None, device: torch.device,
                  x_T: Tensor | None = None) -> Tensor:
    """x_T: the given one, or a per-sample N(0, I) draw of `shape` (C, H, W), which the model supplies."""
    if x_T is not None:
        return x_T
    if shape is None:
        raise ValueError("a sampler needs the image shape (C, H, W) or x_T; DiffusionModule.sample passes its own")
    return per_sample_randn(generators, shape, device)


def guided_eps(model: Denoiser, x: Tensor, t: Tensor, labels: Tensor, guidance: float, null_label: int) -> Tensor:
    """ε̃ = (1+ω)·ε(x,t,c) − ω·ε(x,t,∅) in one forward pass on a doubled batch; ω=0 skips ∅, ω=−1 is ε(x,t,∅)."""
    if guidance == 0:
        return model(x, t, labels).float()
    if guidance == -1:  # unconditional sampling
        return model(x, t, torch.full_like(labels, null_label)).float()
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, null_label)])).float()
    cond, uncond = eps.chunk(2)
    return (1 + guidance) * cond - guidance * uncond


def clip_x0(x0: Tensor, mode: str, percentile: float = 0.995) -> Tensor:
    """'none'; 'static' clamps to [-1, 1]; 'dynamic' thresholds at a per-sample percentile (Saharia et al. 2022)."""
    if mode == "none":
        return x0
    if mode == "static":
        return x0.clamp(-1, 1)
    if mode == "dynamic":
        s = torch.quantile(x0.abs().flatten(1), percentile, dim=1).clamp(min=1.0).view(-1, 1, 1, 1)
        return x0.clamp(-s, s) / s
    raise ValueError(f"clip_x0 must be one of {CLIP_MODES}, got {mode!r}")


def respaced_timesteps(timesteps: int, steps: int) -> list[int]:
    """`steps` evenly spaced training timesteps from T−1 down to 0 (respacing, Nichol & Dhariwal 2021, §4)."""
    check_steps(steps, timesteps, key="steps")
    return torch.linspace(timesteps - 1, 0, steps).round().long().tolist()


def log_snr_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """Timesteps evenly spaced in λ = log(α/σ) from T−1 to 0, snapped to the nearest integer t; Lu et al. (2022,
    §D.1) recommend this spacing for low-resolution pixel models. Repeats collapse, so at most `steps` values."""
    respaced_timesteps(schedule.timesteps, steps)  # validates steps
    ab = schedule.alpha_bar.detach().cpu().double()  # a short list of integers: computed on the CPU
    lam = 0.5 * (ab.log() - (1 - ab).log())
    targets = torch.linspace(lam[-1].item(), lam[0].item(), steps, dtype=torch.float64)
    idx = (lam[None, :] - targets[:, None]).abs().argmin(dim=1)
    return torch.unique_consecutive(idx).tolist()


def _finish_step(x: Tensor, step: int, t: int, eps: Tensor, callback: StepCallback | None, x_t: Tensor) -> None:
    """Stop with a clear error when sampling diverges; then report the step to the callback."""
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"sampling produced non-finite values at step {step} (t={t}); try sampler.clip=static")
    if callback:
        callback(step, t, x, eps, x_t)


def _alpha_bars(schedule: NoiseSchedule, ts: list[int], i: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """ᾱ at the current visited step and at the next one (1 after the last: x_0 is noise-free).

    The samplers' scalar coefficients are computed from these float32 buffer values; the images stay float32.
    """
    return schedule.alpha_bar[ts[i]], (schedule.alpha_bar[ts[i + 1]] if i + 1 < len(ts) else x.new_tensor(1.0))


def noise_level(schedule: NoiseSchedule, t: int) -> float:
    """σ_t = √((1−ᾱ_t)/ᾱ_t), the noise level of x_t/√ᾱ_t (Karras et al. 2022, Table 1, VP column)."""
    ab = schedule.alpha_bar[t].double().item()
    return ((1 - ab) / ab) ** 0.5


def check_interval(interval: Sequence[float] | None) -> tuple[float, float] | None:
    """A guidance interval [σ_lo, σ_hi] with 0 ≤ σ_lo < σ_hi, or None (guidance at every step)."""
    if interval is None:
        return None
    if len(interval) != 2 or not 0 <= float(interval[0]) < float(interval[1]):
        raise ValueError(f"sampler.guidance_interval must be [σ_lo, σ_hi] with 0 ≤ σ_lo < σ_hi, got {list(interval)}")
    return float(interval[0]), float(interval[1])


def step_guidance(schedule: NoiseSchedule, t: int, guidance: float, interval: tuple[float, float] | None) -> float:
    """ω at step t: the given ω inside the interval σ_lo < σ_t ≤ σ_hi, else 0, which skips the ∅ pass
    (guidance in a limited interval, Kynkäänniemi et al. 2024, eq. 4); no interval: ω everywhere."""
    if interval is None:
        return guidance
    return guidance if interval[0] < noise_level(schedule, t) <= interval[1] else 0.0


def _denoise(model, schedule, x, t, labels, guidance, clip, null_label, interval=None):
    """ε̃ and the (optionally clipped) x̂_0 with ε̃ made consistent with it."""
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    eps = guided_eps(model, x, tt, labels, step_guidance(schedule, t, guidance, interval), null_label)
    ab = schedule.alpha_bar[t].double()
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()  # Ho et al. 2020, eq. 4 solved for x_0
    if clip != "none":
        x0 = clip_x0(x0, clip)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    return eps.float(), x0.float()


@dataclass
class Job:
    """What every sampler needs, as one argument: the denoiser `model(x, t, y)` (ε), the schedule, the labels, one
    CPU generator per image, ω and the null label for guidance, and `shape` (C, H, W) or `x_T` to start from;
    `callback(step, t, x, ε̃, x_t)` sees every step (x after it, x_t before it).
    A sampler is `fn(job, **its options)` (conf/sampler/<name>.yaml)."""

    model: Denoiser
    schedule: NoiseSchedule
    labels: Tensor
    generators: Sequence[torch.Generator]
    shape: Sequence[int] | None = None
    guidance: float = 0.0
    null_label: int = -1
    callback: StepCallback | None = None
    x_T: Tensor | None = None
    x_t: Tensor | None = field(default=None, init=False, repr=False)  # the input of the step being taken

    def start(self) -> Tensor:
        """x_T: the given one, or a per-image N(0, I) draw."""
        return initial_noise(self.generators, self.shape, self.labels.device, self.x_T)

    def denoise(self, x: Tensor, t: int, clip: str = "none",
                interval: tuple[float, float] | None = None) -> tuple[Tensor, Tensor]:
        """ε̃ (guided) and x̂_0 at step t."""
        self.x_t = x
        return _denoise(self.model, self.schedule, x, t, self.labels, self.guidance, clip, self.null_label, interval)

    def noise(self, x: Tensor) -> Tensor:
        """Fresh N(0, I) noise like x, from each image's own generator."""
        return per_sample_randn(self.generators, x.shape[1:], x.device)

    def finish(self, x: Tensor, step: int, t: int, eps: Tensor) -> None:
        """Stop on non-finite values, then report the step to the callback."""
        _finish_step(x, step, t, eps, self.callback, self.x_t)


@register_sampler("ddpm")
@torch.no_grad()
def ddpm_sample(job: Job, steps: int | None = None, clip: Clip = "none",
                sigma: Literal["posterior", "beta"] = "posterior",
                guidance_interval: Sequence[float] | None = None) -> Tensor:
    """Ancestral sampling, x_{t−1} = μ̃(x_t, x̂_0) + σ_t·z (Ho et al. 2020, Alg. 2); σ² = β̃_t or β_t."""
    schedule, interval = job.schedule, check_interval(guidance_interval)
    ts = respaced_timesteps(schedule.timesteps, steps or schedule.timesteps)
    x = job.start()
    for i, t in enumerate(ts):
        eps, x0 = job.denoise(x, t, clip, interval)
        ab, ab_prev = _alpha_bars(schedule, ts, i, x)
        beta = 1 - ab / ab_prev  # β of the respaced chain; equals β_t when steps = T
        # 1. Posterior mean μ̃ = c0·x̂_0 + ct·x_t (Ho et al. 2020, eq. 7)
        mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + ((1 - ab_prev) * (1 - beta).sqrt() / (1 - ab)) * x
        # 2. Add noise σ_t·z except at the last step
        var = beta * (1 - ab_prev) / (1 - ab) if sigma == "posterior" else beta
        noise = job.noise(x) if i + 1 < len(ts) else torch.zeros_like(x)
        x = mean + var.sqrt() * noise
        job.finish(x, i, t, eps)
    return x


@register_sampler("ddim")
@torch.no_grad()
def ddim_sample(job: Job, steps: int = 50, eta: float = 0.0, clip: Clip = "none",
                guidance_interval: Sequence[float] | None = None) -> Tensor:
    """DDIM, x_prev = √ᾱ_prev·x̂_0 + √(1−ᾱ_prev−σ²)·ε̃ + σ·z (Song et al. 2021, eq. 12); η=0 is deterministic."""
    ts, interval = respaced_timesteps(job.schedule.timesteps, steps), check_interval(guidance_interval)
    x = job.start()
    for i, t in enumerate(ts):
        eps, x0 = job.denoise(x, t, clip, interval)
        ab, ab_prev = _alpha_bars(job.schedule, ts, i, x)
        # σ_t(η) (Song et al. 2021, eq. 16)
        sigma_eta = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma_eta**2).clamp(min=0).sqrt() * eps
        if eta > 0 and i + 1 < len(ts):
            x = x + sigma_eta * job.noise(x)
        job.finish(x, i, t, eps)
    return x


@register_sampler("dpm_solver")
@torch.no_grad()
def dpm_solver_sample(job: Job, steps: int = 10, order: Literal[2, 3] = 3, clip: Clip = "none",
                      guidance_interval: Sequence[float] | None = None) -> Tensor:
    """DPM-Solver++(2M) or (3M): multistep in data prediction (Lu et al. 2022, Alg. 2 for 2M); the first steps use
    the orders their history allows, the last step lands on x̂_0."""
    if order not in (2, 3):
        raise ValueError(f"sampler.order must be 2 or 3 (DPM-Solver++(2M) or (3M)), got {order!r}")
    interval, schedule = check_interval(guidance_interval), job.schedule
    ts = log_snr_timesteps(schedule, steps)
    x = job.start()
    alpha_t = lambda t: schedule.sqrt_alpha_bar[t].double()  # noqa: E731  α_t of the VP-SDE
    sigma_t = lambda t: schedule.sqrt_one_minus_alpha_bar[t].double()  # noqa: E731  σ_t of the VP-SDE
    lam = lambda t: torch.log(alpha_t(t) / sigma_t(t))  # noqa: E731  λ_t = log(α_t/σ_t), half log-SNR
    history: list[tuple[Tensor, Tensor]] = []  # (x̂_0, step size h) of the previous steps, newest first
    for i, t in enumerate(ts):
        eps, x0 = job.denoise(x, t, clip, interval)
        if i + 1 == len(ts):
            x = x0  # σ → 0 at the end: the first-order update reduces to x̂_0
        else:
            s = ts[i + 1]
            h = lam(s) - lam(t)
            k = min(order, len(history) + 1)  # as high as the x̂_0 history allows
            if k == 3:
                x = ((sigma_t(s) / sigma_t(t)) * x + alpha_t(s) * _third_order(x0, history, h)).float()
            else:
                d = x0  # 1. first order: DPM-Solver++(1), i.e. DDIM (Lu et al. 2022, eq. 9)
                if k == 2:
                    r = history[0][1] / h  # 2. multistep 2nd-order correction D_i (Alg. 2, lines 6–8)
                    d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * history[0][0]
                x = ((sigma_t(s) / sigma_t(t)) * x - alpha_t(s) * torch.expm1(-h) * d).float()
            history = [(x0, h), *history][:2]
        job.finish(x, i, t, eps)
    return x


def _third_order(x0: Tensor, history: list[tuple[Tensor, Tensor]], h: Tensor) -> Tensor:
    """∫ e^{−(λ_s−λ)} x̂_0(λ) dλ over the step, with x̂_0 the quadratic through this and the last two x̂_0 in λ.

    The exact solution x_s = (σ_s/σ_t)·x_t + α_s·∫_{λ_t}^{λ_s} e^{−(λ_s−λ)} x̂_0(λ) dλ (Lu et al. 2022, eq. 8)
    with x̂_0's Taylor terms integrated exactly: 1−e^{−h}, h−1+e^{−h} and h²/2−h+1−e^{−h} multiply x̂_0, its first
    and its second derivative in λ (DPM-Solver++(3M), Lu et al. 2022, §4; derivatives from divided differences).
    """
    (x1, h0), (x2, h1) = history  # x̂_0 at λ_t − h0 and at λ_t − h0 − h1
    d1, d2 = (x0 - x1) / h0, (x1 - x2) / h1  # first divided differences
    c = (d1 - d2) / (h0 + h1)  # the quadratic's x̂_0'' / 2
    first, second = d1 + c * h0, 2 * c  # x̂_0' and x̂_0'' at λ_t
    em = torch.expm1(-h)
    return -em * x0 + (h + em) * first + (h * h / 2 - h - em) * second


def sampler_name(target: str) -> str:
    """A sampler config's `_target_` as its registered name: 'diffusion.samplers.ddim_sample' -> 'ddim'."""
    found = [name for name, fn in SAMPLERS.items() if f"{fn.__module__}.{fn.__name__}" == target]
    return found[0] if found else target.rsplit(".", 1)[-1].removesuffix("_sample")


def describe_sampler(sampler: Mapping[str, Any]) -> str:
    """A sampler config in words: 'ddpm, all T steps, sigma=posterior'."""
    steps = sampler.get("steps")
    options = [f"{k}={v}" for k, v in sampler.items()
               if k not in ("_target_", "_partial_", "steps") and v not in (None, "none")]
    return ", ".join([sampler_name(sampler["_target_"]), "all T steps" if steps is None else f"{steps} steps",
                      *options])


def check_sampler(options: Mapping[str, Any], key: str = "sampler") -> None:
    """A sampler config's options, each of the type its function declares (a Literal: one of its values), before any
    work: one line per bad option (`sampler.eta must be a number, got 'abc'`)."""
    from omegaconf import OmegaConf

    options = OmegaConf.to_container(options, resolve=True) if OmegaConf.is_config(options) else options
    fn = SAMPLERS.get(sampler_name(str(options.get("_target_"))))
    if fn is None:
        return  # not a registered sampler: the checkpoint allow-list and Hydra have their own lines for that
    hints = typing.get_type_hints(fn)
    for name, value in options.items():
        if name in ("_target_", "_partial_"):
            continue
        if name not in hints or name == "job":
            allowed = ", ".join(k for k in hints if k not in ("job", "return"))
            raise ValueError(f"{key}.{name} is not an option of {sampler_name(fn.__module__ + '.' + fn.__name__)} "
                             f"({allowed})")
        if not fits(value, hints[name]):
            raise ValueError(f"{key}.{name} must be {kind_of(hints[name])}, got {value!r}")


def fits(value: Any, hint: Any) -> bool:
    """Whether a config value has the type a sampler option declares (int | None, float, Literal[...], lists)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is Literal:
        return value in args and type(value) in {type(a) for a in args}
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint in (int, str, bool):
        return isinstance(value, hint) and (hint is bool or not isinstance(value, bool))
    if origin in (Sequence, list, tuple) or (isinstance(origin, type) and issubclass(origin, Sequence)):
        return isinstance(value, (list, tuple)) and all(fits(v, args[0]) for v in value)
    return True


def kind_of(hint: Any) -> str:
    """A sampler option's type in words: "a number", "an integer or null", "one of 'none', 'static', 'dynamic'"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(kind_of(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is not None and args:
        return f"a list of {kind_of(args[0]).removeprefix('a ')}s"
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false",
            type(None): "null"}.get(hint, str(hint))
