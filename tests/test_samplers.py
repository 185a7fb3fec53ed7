"""Samplers on a Gaussian toy problem, where the optimal noise predictor and the exact answer are analytic."""

import pytest
import torch

from diffusion.samplers import (Job, clip_x0, ddim_sample, ddpm_sample, dpm_solver_sample, guided_eps,
                                log_snr_timesteps, noise_level, respaced_timesteps, sample_generators)
from diffusion.schedule import NoiseSchedule

MU = torch.linspace(-0.6, 0.6, 10)  # class c has data x_0 ~ N(MU[c], S²) in every pixel
S = 0.3


class GaussianEps:
    """ε*(x_t, t, y) = E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ μ_y)/(ᾱ S² + 1 − ᾱ); ∅ (label 10) is the class mixture's μ=0."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.ab = schedule.alpha_bar.double()

    def __call__(self, x, t, y):
        ab = self.ab[t].view(-1, 1, 1, 1)
        mu = torch.where(y < 10, MU[y.clamp(max=9)], torch.zeros(())).double().view(-1, 1, 1, 1)
        return ((1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * S**2 + 1 - ab)).float()


def exact_ode_endpoint(x_T, labels, schedule):
    """Probability-flow ODE from t=T to data: the affine map between the Gaussian marginals."""
    ab = schedule.alpha_bar[-1].double()
    mu = MU[labels].double().view(-1, 1, 1, 1)
    return mu + S * (x_T.double() - ab.sqrt() * mu) / (ab * S**2 + 1 - ab).sqrt()


@pytest.fixture(params=["linear", "cosine"])
def toy(request):
    schedule = NoiseSchedule(1000, request.param)
    labels = torch.arange(10).repeat(2)
    x_T = torch.randn(20, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    return schedule, GaussianEps(schedule), labels, x_T


JOB = {"shape", "guidance", "null_label", "callback", "x_T"}  # the Job's optional fields; the rest are options


def draw(sampler, model, schedule, labels, generators, **kw):
    """The sampler on one Job built from the job's keywords in `kw`, with the others as its options."""
    job = Job(model, schedule, labels, generators, **{k: v for k, v in kw.items() if k in JOB})
    return sampler(job, **{k: v for k, v in kw.items() if k not in JOB})


def error(sampler, toy, **kw):
    schedule, model, labels, x_T = toy
    out = draw(sampler, model, schedule, labels, sample_generators(0, range(20)), x_T=x_T, **kw)
    return (out.double() - exact_ode_endpoint(x_T, labels, schedule)).abs().max().item()


def test_ddim_eta0_converges_to_the_analytic_answer_at_first_order(toy):
    e100, e400 = error(ddim_sample, toy, steps=100), error(ddim_sample, toy, steps=400)
    assert e400 < 0.015
    assert 3.0 < e100 / e400 < 5.0  # 4× the steps, 4× less error


def test_dpm_solver_2m_lands_on_the_analytic_answer(toy):
    assert error(dpm_solver_sample, toy, steps=200, order=2) < 1e-3  # float32 round-off level
    e20, e50 = error(dpm_solver_sample, toy, steps=20, order=2), error(dpm_solver_sample, toy, steps=50, order=2)
    assert e20 < 0.05 and e20 < error(ddim_sample, toy, steps=20) / 3  # 2nd order beats DDIM at equal steps
    assert e20 / e50 > 4.0  # 2.5× the steps: at least 2.5^1.5 less error (2.5² = 6.25 for exact 2nd order)


def test_dpm_solver_3m_converges_at_third_order(toy):
    schedule = toy[0]
    e30_2m, e30, e50 = (error(dpm_solver_sample, toy, steps=n, order=k) for n, k in ((30, 2), (30, 3), (50, 3)))
    assert e50 < 1e-3 and e30 < e30_2m / 3  # the quadratic term beats 2M at equal steps
    if schedule.kind == "cosine":  # linear's integer timesteps bunch up near t=0: its error floors by 50 steps
        e25 = error(dpm_solver_sample, toy, steps=25, order=3)
        assert e25 / e50 > 2**2.5  # twice the steps: ≥ 2^2.5 less error (2M: 3.9 here; exact 3rd order: 8)


def test_dpm_solver_order_is_checked(toy):
    with pytest.raises(ValueError, match="order must be 2 or 3"):
        error(dpm_solver_sample, toy, steps=10, order=4)


def counting(model, seen):
    """The model, recording each call's batch size."""
    return lambda x, t, y: (seen.append(len(y)), model(x, t, y))[1]


@pytest.mark.parametrize("sampler", [ddim_sample, dpm_solver_sample, ddpm_sample])
def test_guidance_interval_applies_omega_only_inside_it(toy, sampler):
    schedule, model, labels, x_T = toy
    kw = dict(steps=12, guidance=1.0, null_label=10, x_T=x_T)

    def run(m, **k):  # fresh generators each time: the same noise for every run
        return draw(sampler, m, schedule, labels, sample_generators(2, range(20)), **{**kw, **k})
    everywhere, nowhere = run(model, guidance_interval=[0, 1e9]), run(model, guidance_interval=[1e8, 1e9])
    assert torch.equal(everywhere, run(model)) and torch.equal(nowhere, run(model, guidance=0.0))
    seen = []
    lo, hi = 0.3, 5.0
    out = run(counting(model, seen), guidance_interval=[lo, hi])
    visited = (log_snr_timesteps(schedule, 12) if sampler is dpm_solver_sample
               else respaced_timesteps(schedule.timesteps, 12))
    sigmas = [((1 - schedule.alpha_bar[t]) / schedule.alpha_bar[t]).sqrt().item() for t in visited]
    assert [n == 40 for n in seen] == [lo < s <= hi for s in sigmas]  # the ∅ pass exactly where σ is inside
    assert 0 < sum(n == 40 for n in seen) < len(seen)
    assert not torch.equal(out, everywhere) and not torch.equal(out, nowhere)
    assert noise_level(schedule, visited[0]) == pytest.approx(sigmas[0])


@pytest.mark.parametrize("interval", [[5.0, 1.0], [-1.0, 2.0], [1.0]])
def test_bad_guidance_interval_is_one_clear_error(toy, interval):
    with pytest.raises(ValueError, match="guidance_interval must be"):
        error(ddim_sample, toy, steps=5, guidance=1.0, null_label=10, guidance_interval=interval)


def test_ddpm_matches_data_distribution(toy):
    schedule, model, _, _ = toy
    labels = torch.full((400,), 7)
    out = draw(ddpm_sample, model, schedule, labels, sample_generators(3, range(400)), shape=(1, 2, 2), steps=200)
    assert out.mean().item() == pytest.approx(MU[7].item(), abs=0.02)
    assert out.std().item() == pytest.approx(S, rel=0.08)


def test_ddpm_step_matches_ho_et_al_algorithm_2():
    """One step x_{t−1} = 1/√α_t (x_t − β_t/√(1−ᾱ_t) ε) + σ_t z with σ² = β̃_t, as in the seed code."""
    schedule = NoiseSchedule(50, "linear")
    model = GaussianEps(schedule)
    labels = torch.tensor([3, 5])
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    seen = {}
    draw(ddpm_sample, model, schedule, labels, sample_generators(9, [0, 1]), shape=(1, 4, 4), x_T=x,
         callback=lambda i, t, xt, eps, x_in: seen.setdefault(i, xt.clone()))
    t = 49
    eps = model(x, torch.full((2,), t), labels)
    z = torch.stack([torch.randn(1, 4, 4, generator=g) for g in sample_generators(9, [0, 1])])
    a, ab, b = schedule.alphas[t], schedule.alpha_bar[t], schedule.betas[t]
    expected = (x - b / (1 - ab).sqrt() * eps) / a.sqrt() + schedule.posterior_variance[t].sqrt() * z
    assert torch.allclose(seen[0], expected, atol=1e-5)


def test_guidance_zero_equals_plain_conditional_and_formula():
    calls = []

    def model(x, t, y):
        calls.append(len(y))
        return y.float().view(-1, 1, 1, 1) * torch.ones_like(x)

    x, t, y = torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long), torch.tensor([1, 2, 3])
    assert torch.equal(guided_eps(model, x, t, y, 0.0, 10), model(x, t, y))
    assert calls[0] == 3  # ω=0: no unconditional half
    out = guided_eps(model, x, t, y, 0.5, 10)
    assert calls[2] == 6  # one forward pass on the doubled batch
    assert torch.allclose(out, 1.5 * model(x, t, y) - 0.5 * 10)  # (1+ω)ε_c − ω ε_∅


@pytest.mark.parametrize("sampler,kw", [(ddpm_sample, dict(steps=10)), (ddim_sample, dict(steps=10, eta=1.0)),
                                        (dpm_solver_sample, dict(steps=10, order=2)),
                                        (dpm_solver_sample, dict(steps=10, order=3))])
def test_image_i_does_not_depend_on_batch_size(sampler, kw):
    schedule = NoiseSchedule(100, "cosine")
    model = GaussianEps(schedule)
    labels = torch.arange(6)
    full = draw(sampler, model, schedule, labels, sample_generators(4, range(6)), shape=(1, 4, 4), **kw)
    part = draw(sampler, model, schedule, labels[4:], sample_generators(4, [4, 5]), shape=(1, 4, 4), **kw)
    assert torch.allclose(full[4:], part, atol=1e-6)


def test_respacing_and_bad_steps():
    assert respaced_timesteps(1000, 4) == [999, 666, 333, 0]
    assert respaced_timesteps(10, 10) == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="between 1 and"):
        respaced_timesteps(100, 101)
    ts = log_snr_timesteps(NoiseSchedule(1000, "linear"), 20)
    assert ts[0] == 999 and ts[-1] == 0 and ts == sorted(set(ts), reverse=True) and len(ts) <= 20


def test_clip_modes():
    x = torch.tensor([[-3.0, 0.5, 2.0]]).view(1, 1, 1, 3)
    assert clip_x0(x, "static").max().item() == 1.0
    dyn = clip_x0(x, "dynamic")
    assert dyn.abs().max().item() <= 1.0 and dyn[0, 0, 0, 1].item() < 0.5  # rescaled, not just clamped
    with pytest.raises(ValueError):
        clip_x0(x, "bogus")


def test_divergence_names_the_step():
    schedule = NoiseSchedule(10, "linear")
    with pytest.raises(FloatingPointError, match="step 0"):
        draw(ddim_sample, lambda x, t, y: torch.full_like(x, float("nan")), schedule,
             torch.zeros(2, dtype=torch.long), sample_generators(0, range(2)), shape=(1, 2, 2), steps=5)


def test_the_trace_records_the_ddpm_mean_of_eq_11_at_every_step():
    """The seed report's trace: μ_θ(x_t, t) = (x_t − β_t/√(1−ᾱ_t)·ε̃)/√α_t equals the sampler's posterior mean
    c0·x̂_0 + ct·x_t at every step, and the last step's x (no noise added) is that mean itself."""
    from diffusion.modes import Tracer

    schedule = NoiseSchedule(30, "linear")
    model = GaussianEps(schedule)
    labels, tracer, means = torch.tensor([2, 7]), Tracer(schedule), []

    def record(i, t, x, eps, x_t):
        tracer(i, t, x, eps, x_t)
        ab, ab_prev = schedule.alpha_bar[t], schedule.alpha_bar[t - 1] if t > 0 else torch.tensor(1.0)
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        beta = schedule.betas[t]
        means.append((ab_prev.sqrt() * beta / (1 - ab)) * x0 + ((1 - ab_prev) * (1 - beta).sqrt() / (1 - ab)) * x_t)
        means[-1] = (means[-1], x)

    draw(ddpm_sample, model, schedule, labels, sample_generators(3, [0, 1]), shape=(1, 4, 4), callback=record)
    assert [row["t"] for row in tracer.rows] == list(range(29, -1, -1))
    for row, (mean, _) in zip(tracer.rows, means):  # float32, two algebraic routes: agree to ~1e-4
        assert row["mu_mean"] == pytest.approx(mean.mean().item(), abs=1e-3)
        assert row["mu_max"] == pytest.approx(mean.max().item(), abs=1e-3)
    last_mean, last_x = means[-1]
    assert torch.allclose(last_mean, last_x, atol=1e-3) and tracer.rows[-1]["mu_std"] == pytest.approx(
        tracer.rows[-1]["x_std"], abs=1e-3)
    assert max(abs(r["mu_mean"] - r["x_mean"]) for r in tracer.rows[:-1]) > 1e-2  # μ_θ is not the noisy x
