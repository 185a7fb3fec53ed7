"""The U-Net presets: exact parameter counts, shapes, conditioning."""

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_cfg


def build(preset: str, **kw):
    return instantiate(compose_cfg("train", [f"model={preset}", "run_dir=/tmp/x"]).model, **kw)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_seed000_has_exactly_the_published_parameter_count():
    assert n_params(build("seed000", null_class=False)) == 2_447_681
    assert n_params(build("seed000", null_class=True)) == 2_447_681 + 256


def test_small_is_about_1_2M_with_attention():
    m = build("small")
    assert 1.1e6 < n_params(m) < 1.3e6
    assert any(isinstance(mod, torch.nn.MultiheadAttention) for mod in m.modules())


@pytest.mark.parametrize("preset", ["seed000", "small", "tiny", "default"])
def test_output_shape_and_label_dependence(preset):
    m = build(preset).eval()
    x, t = torch.randn(3, 1, 32, 32), torch.tensor([0, 500, 999])
    a = m(x, t, torch.tensor([1, 2, 10]))  # 10 is the null class
    b = m(x, t, torch.tensor([4, 2, 10]))
    assert a.shape == x.shape
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:])


@pytest.mark.parametrize("down,up", [("conv", "transposed"), ("maxpool", "nearest_conv")])
def test_sampling_variants_and_three_channels(down, up):
    m = build("tiny", in_channels=3, downsample=down, upsample=up, dropout=0.1)
    assert m(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]), torch.tensor([0, 1])).shape == (2, 3, 32, 32)


def test_bad_sampling_kind_raises():
    from diffusion.unet import UNet

    with pytest.raises(ValueError, match="downsample"):
        UNet(downsample="avgpool")
    with pytest.raises(ValueError, match="upsample"):
        UNet(upsample="bilinear")


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("loss_weight", ["none", "min_snr"])
def test_every_prediction_trains_and_samples_in_eps_space(train_cfg, prediction, loss_weight):
    cfg = train_cfg(f"prediction={prediction}", f"loss_weight={loss_weight}", "model=tiny")
    module = instantiate(cfg.module, class_names=list("0123456789"), data={"channels": 1, "size": 28, "pad": 2})
    x0, y = torch.rand(4, 1, 32, 32) * 2 - 1, torch.arange(4)
    loss = module.diffusion_loss(x0, y)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in module.net.parameters() if p.requires_grad)
    t = torch.tensor([10, 300, 600, 900])
    x_t = module.schedule.q_sample(x0, t, torch.randn_like(x0))
    out = module.net(x_t, t, y)
    expected = module.schedule.eps_from(prediction, x_t, t, out)
    torch.testing.assert_close(module(x_t, t, y), expected)  # what every sampler sees: ε̂
    images = module.sample(torch.arange(2), instantiate(cfg.sampler), guidance=0.5)
    assert images.shape == (2, 1, 32, 32) and torch.isfinite(images).all()
