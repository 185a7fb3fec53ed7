"""Noise schedules against closed forms."""

import math

import pytest
import torch

from diffusion.schedule import NoiseSchedule, cosine_betas, linear_betas


@pytest.mark.parametrize("T", [100, 1000, 4000])
@pytest.mark.parametrize("t", [0, 1, 17, -1])
def test_linear_alpha_bar_is_product_of_one_minus_beta(T, t):
    t = t % T
    s = NoiseSchedule(T, "linear")
    betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    expected = math.prod(1 - b for b in betas[: t + 1])
    assert s.alpha_bar[t].item() == pytest.approx(expected, rel=1e-5)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)


def test_linear_alpha_bar_known_value_T1000():
    # ᾱ_T for the DDPM linear schedule, a widely quoted number: ≈ 4.04e-5
    assert NoiseSchedule(1000, "linear").alpha_bar[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


@pytest.mark.parametrize("T", [100, 1000, 4000])
@pytest.mark.parametrize("frac", [0.1, 0.5, 0.9])
def test_cosine_alpha_bar_closed_form(T, frac):
    s = NoiseSchedule(T, "cosine")
    t = int(frac * T)  # buffer index t is diffusion step t+1
    f = lambda u: math.cos((u / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert s.alpha_bar[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-5)


def test_cosine_betas_clipped_at_0999():
    betas = cosine_betas(1000)
    assert betas.max().item() == pytest.approx(0.999)
    assert betas[-1].item() == pytest.approx(0.999)  # f(T) ≈ 0 would give β_T ≈ 1 without the clip
    assert (betas[:-10] < 0.999).all()


def test_buffers_are_float32_and_posterior_matches_eq7():
    s = NoiseSchedule(1000, "linear")
    assert s.betas.dtype == torch.float32
    t = 500
    ab, ab_prev, beta = s.alpha_bar[t].double(), s.alpha_bar[t - 1].double(), s.betas[t].double()
    assert s.posterior_variance[t].item() == pytest.approx((beta * (1 - ab_prev) / (1 - ab)).item(), rel=1e-5)
    assert s.alpha_bar_prev[0].item() == 1.0


def test_q_sample_statistics():
    s = NoiseSchedule(1000, "cosine")
    gen = torch.Generator().manual_seed(0)
    n, t = 200_000, 300
    x0 = torch.full((n, 1, 1, 1), 0.7)
    xt = s.q_sample(x0, torch.full((n,), t), torch.randn(n, 1, 1, 1, generator=gen))
    assert xt.mean().item() == pytest.approx(0.7 * s.sqrt_alpha_bar[t].item(), abs=5e-3)
    assert xt.std().item() == pytest.approx(s.sqrt_one_minus_alpha_bar[t].item(), rel=1e-2)


def test_q_sample_then_predict_x0_roundtrip():
    s = NoiseSchedule(100, "linear")
    x0, noise, t = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 50, 99])
    assert torch.allclose(s.predict_x0(s.q_sample(x0, t, noise), t, noise), x0, atol=1e-3)


@pytest.mark.parametrize("bad", [dict(timesteps=0), dict(timesteps=-3), dict(kind="no_such_schedule")])
def test_bad_schedule_arguments_raise(bad):
    with pytest.raises(ValueError):
        NoiseSchedule(**{"timesteps": 10, "kind": "linear", **bad})


def test_linear_betas_is_float64():
    assert linear_betas(10).dtype == torch.float64


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_each_prediction_target_converts_back_to_the_noise(kind, prediction):
    s = NoiseSchedule(1000, kind)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 1, 4, 4, generator=g), torch.randn(6, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 100, 500, 900, 998])
    x_t = s.q_sample(x0, t, noise)
    target = s.target(prediction, x0, t, noise)
    torch.testing.assert_close(s.eps_from(prediction, x_t, t, target), noise, atol=2e-3, rtol=1e-3)


def test_v_target_closed_form():
    # v = α·ε − σ·x_0 (Salimans & Ho 2022): at SNR = 1 (α = σ = 1/√2) v = (ε − x_0)/√2
    s = NoiseSchedule(1000, "cosine")
    t = (s.alpha_bar - 0.5).abs().argmin().view(1)
    x0, noise = torch.full((1, 1, 2, 2), 0.3), torch.full((1, 1, 2, 2), -1.1)
    alpha, sigma = s.sqrt_alpha_bar[t].item(), s.sqrt_one_minus_alpha_bar[t].item()
    assert alpha == pytest.approx(2**-0.5, abs=2e-3) and sigma == pytest.approx(2**-0.5, abs=2e-3)
    assert s.target("v", x0, t, noise).flatten()[0].item() == pytest.approx(alpha * -1.1 - sigma * 0.3, rel=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_min_snr_weight_makes_every_target_the_clipped_snr_times_the_x0_error(prediction):
    # Hang et al. 2023: the weighted loss is min(SNR_t, γ)·‖x_0 − x̂_0‖² whatever the network predicts
    s, gamma = NoiseSchedule(1000, "linear"), 5.0
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(5, 1, 3, 3, generator=g), torch.randn(5, 1, 3, 3, generator=g)
    t = torch.tensor([2, 50, 200, 600, 990])  # SNR from ~2500 to ~1e-4: both sides of γ
    x_t = s.q_sample(x0, t, noise)
    out = s.target(prediction, x0, t, noise) + 0.1 * torch.randn(x0.shape, generator=g)  # an imperfect prediction
    eps_hat = s.eps_from(prediction, x_t, t, out)
    x0_hat = s.predict_x0(x_t, t, eps_hat)
    weighted = s.loss_weight("min_snr", prediction, t, gamma) * (out - s.target(prediction, x0, t, noise)).pow(2).flatten(1).mean(1)
    expected = s.snr(t).clamp(max=gamma) * (x0_hat - x0).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(weighted, expected, rtol=2e-3, atol=1e-6)
    assert s.loss_weight("none", prediction, t).tolist() == [1.0] * 5


def test_unknown_prediction_and_weight_are_one_line_errors():
    s = NoiseSchedule(10)
    t = torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="prediction must be one of eps, v, x0"):
        s.target("score", torch.zeros(1, 1, 1, 1), t, torch.zeros(1, 1, 1, 1))
    with pytest.raises(ValueError, match="loss_weight must be one of none, min_snr"):
        s.loss_weight("p2", "eps", t)
