"""The eager Inception rebuild (diffusion.inception) against TorchScript networks of the FID file's structure."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffusion.evaluation import InceptionFeatures
from diffusion.inception import rebuild


# TorchScript networks laid out like `make inception`'s file (same module names, the same conv + scale-free batch
# norm + ReLU layers, random statistics), with a few channels so they run in a moment at 299×299
class Conv2dLayer(nn.Module):
    def __init__(self, cin: int, cout: int, k: tuple[int, int], stride: int = 1, padding: tuple[int, int] = (0, 0)):
        super().__init__()
        g = torch.Generator().manual_seed(cin * 100 + cout * 10 + k[0] + 3 * k[1])
        self.weight = nn.Parameter(torch.randn(cout, cin, *k, generator=g) / (cin * k[0] * k[1]) ** 0.5)
        self.beta = nn.Parameter(torch.randn(cout, generator=g) * 0.1)
        self.mean = nn.Parameter(torch.randn(cout, generator=g) * 0.1)
        self.var = nn.Parameter(torch.rand(cout, generator=g) + 0.5)
        self.stride, self.padding = stride, list(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight.to(x.dtype), None, [self.stride, self.stride], self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.1, 1e-3))


def conv(cin: int, cout: int, k: int | tuple[int, int] = 1, stride: int = 1, pad: int | tuple[int, int] = 0):
    k, pad = (k, k) if isinstance(k, int) else k, (pad, pad) if isinstance(pad, int) else pad
    return Conv2dLayer(cin, cout, k, stride, pad)


def avg3() -> nn.Module:
    return nn.AvgPool2d(3, 1, 1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = conv(c, 2)
        self.tower = nn.Sequential(conv(c, 2), conv(2, 2, 5, pad=2))
        self.tower_1 = nn.Sequential(conv(c, 2), conv(2, 3, 3, pad=1))
        self.tower_2 = nn.Sequential(avg3(), conv(c, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionC(InceptionA):
    def __init__(self, c: int):
        super().__init__(c)
        self.tower = nn.Sequential(conv(c, 2), conv(2, 2, (1, 7), pad=(0, 3)), conv(2, 2, (7, 1), pad=(3, 0)))


class InceptionB(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = conv(c, 3, 3, stride=2)
        self.tower = nn.Sequential(conv(c, 2), conv(2, 2, 3, stride=2))
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.pool(x)], 1)


class InceptionD(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.tower = nn.Sequential(conv(c, 2), conv(2, 3, 3, stride=2))
        self.tower_1 = nn.Sequential(conv(c, 2), conv(2, 2, 3, stride=2))
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), self.pool(x)], 1)


class InceptionE(nn.Module):
    def __init__(self, c: int, pool: nn.Module, swap: bool = False):
        super().__init__()
        self.conv, self.tower_conv = conv(c, 2), conv(c, 2)
        self.tower_mixed_conv, self.tower_mixed_conv_1 = conv(2, 2, (1, 3), pad=(0, 1)), conv(2, 2, (3, 1), pad=(1, 0))
        self.tower_1_conv, self.tower_1_conv_1 = conv(c, 3), conv(3, 2, 3, pad=1)
        self.tower_1_mixed_conv = conv(2, 2, (1, 3), pad=(0, 1))
        self.tower_1_mixed_conv_1 = conv(2, 2, (3, 1), pad=(1, 0))
        self.tower_2_pool, self.tower_2_conv = pool, conv(c, 2)
        self.swap = swap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.tower_conv(x), self.tower_1_conv_1(self.tower_1_conv(x))
        if self.swap:  # a network that is not the FID one: its branches in another order
            a, b = b, a
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a), self.tower_1_mixed_conv(b),
                          self.tower_1_mixed_conv_1(b), self.tower_2_conv(self.tower_2_pool(x))], 1)


class InceptionV3(nn.Module):
    def __init__(self, swap: bool = False):
        super().__init__()
        self.layers = nn.Sequential(conv(3, 4, 3, stride=2), nn.MaxPool2d(3, 2), InceptionA(4), InceptionB(9),
                                    InceptionC(14), InceptionD(9), InceptionE(14, avg3()),
                                    InceptionE(12, nn.MaxPool2d(3, 1, 1), swap), nn.AvgPool2d(17, 17))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return torch.reshape(self.layers(img), [-1, 12])


class File(nn.Module):
    def __init__(self, swap: bool = False):
        super().__init__()
        self.net = InceptionV3(swap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def images(n: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_rebuild_folds_the_batch_norms_and_computes_the_files_features(tmp_path):
    path = tmp_path / "inception.pt"
    torch.jit.script(File()).save(str(path))
    script = torch.jit.load(str(path)).eval()
    net = rebuild(script)
    assert net is not None and not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(net(x.contiguous(memory_format=torch.channels_last)), script(x), atol=1e-5)
    plain, fast = InceptionFeatures(path, optimized=False), InceptionFeatures(path)
    assert fast.model.__class__.__name__ == "Sequential"  # the rebuild, not the TorchScript
    assert torch.allclose(fast(images()), plain(images()), atol=1e-5)


def test_a_network_the_rebuild_does_not_reproduce_keeps_the_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.jit.script(File(swap=True)).save(str(path))
    assert rebuild(torch.jit.load(str(path)).eval()) is None
    fast = InceptionFeatures(path)
    assert isinstance(fast.model, torch.jit.ScriptModule)  # the frozen file
    assert torch.allclose(fast(images()), InceptionFeatures(path, optimized=False)(images()), atol=1e-5)


@pytest.mark.skipif(not Path("data/evaluators/inception_default_1.pt").is_file(),
                    reason="needs `make inception` (the real Inception-v3 file, 87 MB)")
def test_the_real_file_is_rebuilt():
    script = torch.jit.load("data/evaluators/inception_default_1.pt").eval()
    assert rebuild(script) is not None  # rebuild itself checks the features against the file's
