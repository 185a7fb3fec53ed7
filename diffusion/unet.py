"""Class-conditional U-Net ε_θ(x_t, t, y); it knows nothing about the diffusion formulation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer position encoding of integer timesteps (Vaswani et al. 2017, §3.5): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


ACTIVATIONS = {"silu": F.silu, "relu": F.relu, "gelu": F.gelu}


def activation_fn(name: str):
    """The element-wise non-linearity called `name` (one of ACTIVATIONS)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class ResBlock(nn.Module):
    """conv→GN→act, + projected embedding (unless emb_dim is 0), conv→GN→act, plus a (1×1 when channels change)
    residual."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float,
                 activation: str = "silu") -> None:
        super().__init__()
        self.act = activation_fn(activation)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.emb = nn.Linear(emb_dim, c_out) if emb_dim else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = h + self.emb(emb)[:, :, None, None] if self.emb is not None else h
        h = self.act(self.norm2(self.conv2(self.dropout(h))))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention over the H·W positions, with a residual."""

    def __init__(self, channels: int, groups: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Level(nn.Module):
    """Residual blocks at one resolution, each optionally followed by self-attention (`attn_last=False`: between
    blocks only, ResBlock–attention–ResBlock)."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, emb_dim: int, groups: int, dropout: float, attn: bool,
                 activation: str = "silu", attn_last: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(c_in if i == 0 else c_out, c_out, emb_dim, groups, dropout, activation) for i in range(n_blocks)
        )
        self.attns = nn.ModuleList(SelfAttention(c_out, groups) if attn and (attn_last or i < n_blocks - 1)
                                   else nn.Identity() for i in range(n_blocks))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for block, attn in zip(self.blocks, self.attns):
            x = attn(block(x, emb))
        return x


def make_downsample(kind: str, channels: int) -> nn.Module:
    """Halve H and W: 'maxpool' (parameter-free) or 'conv' (3×3, stride 2)."""
    if kind == "maxpool":
        return nn.MaxPool2d(2, ceil_mode=True)  # an odd size rounds up (7 → 4), as the strided conv does
    if kind == "conv":
        return nn.Conv2d(channels, channels, 3, stride=2, padding=1)
    raise ValueError(f"downsample must be 'maxpool' or 'conv', got {kind!r}")


def make_upsample(kind: str, channels: int) -> nn.Module:
    """Double H and W: 'nearest' (parameter-free), 'nearest_conv' (+3×3 conv) or 'transposed' (2×2, stride 2)."""
    if kind == "nearest":
        return nn.Upsample(scale_factor=2, mode="nearest")
    if kind == "nearest_conv":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1))
    if kind == "transposed":
        return nn.ConvTranspose2d(channels, channels, 2, stride=2)
    raise ValueError(f"upsample must be 'nearest', 'nearest_conv' or 'transposed', got {kind!r}")


class UNet(nn.Module):
    """ε_θ(x_t, t, y): time and label embeddings summed, one skip per level, levels joined by down/up-sampling.

    `downsample_last` also down-samples after the last encoder level (the seed blog pools after each of its three
    blocks: bottleneck at 4×4 for 32×32 inputs); `label_activation` puts a SiLU between the label embedding and its
    projection (the seed blog's label MLP). Neither adds parameters. `condition="bottleneck"` adds the time and
    label embedding in the bottleneck blocks only; `condition="bottleneck_input"` adds their sum once to the
    bottleneck's input, h_mid + e_t + e_c (the seed report; needs channels[-1] == emb_dim), and `null_label="zero"`
    makes ∅'s label embedding zero instead of a learned row (the report's label dropout). `time_dim` is the width
    of the sinusoidal time encoding before the time MLP (default emb_dim; the seed notebook's is 128 → 256).
    `out_kernel` is the output convolution's size. Odd sizes are fine (28 → 14 → 7 → 4): down-sampling rounds up
    and each up-sampled map is cropped to its skip's size.
    The seed documentation page's layout needs the rest: `stem_channels` (the input convolution's width, default
    channels[0]), `up_channels` (each decoder level's width, deepest first; default the encoder's in reverse),
    `mid_attention="between"` (attention between the bottleneck blocks, not after each), `time_hidden` (the time
    MLP's hidden width, default emb_dim), `out_norm` (GroupNorm and activation before the output convolution) and
    `conditional=False` (no label embedding: y is ignored, guidance has no effect).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 32,
        channels: Sequence[int] = (32, 64, 128),
        blocks_per_level: int = 1,
        mid_channels: int = 256,
        mid_blocks: int = 1,
        attention_resolutions: Sequence[int] = (),
        emb_dim: int = 256,
        num_classes: int = 10,
        null_class: bool = True,
        dropout: float = 0.0,
        groups: int = 8,
        downsample: str = "maxpool",
        upsample: str = "nearest",
        downsample_last: bool = False,
        label_activation: bool = False,
        activation: str = "silu",
        condition: str = "all",
        out_kernel: int = 3,
        stem_channels: int | None = None,
        up_channels: Sequence[int] | None = None,
        mid_attention: str = "each",
        time_hidden: int | None = None,
        out_norm: bool = False,
        conditional: bool = True,
        time_dim: int | None = None,
        null_label: str = "learned",
    ) -> None:
        super().__init__()
        if mid_attention not in ("each", "between"):
            raise ValueError(f"mid_attention must be 'each' or 'between', got {mid_attention!r}")
        up_channels = list(reversed(channels)) if up_channels is None else list(up_channels)
        if len(up_channels) != len(channels):
            raise ValueError(f"up_channels needs one width per level ({len(channels)}), got {up_channels}")
        for name, width in (("stem_channels", stem_channels), ("time_hidden", time_hidden), ("time_dim", time_dim),
                            *(("up_channels", w) for w in up_channels)):
            if width is not None and (not isinstance(width, int) or width < 1):
                raise ValueError(f"{name} must be a positive integer, got {width!r}")
        if condition not in ("all", "bottleneck", "bottleneck_input"):
            raise ValueError(f"condition must be 'all', 'bottleneck' or 'bottleneck_input', got {condition!r}")
        if condition == "bottleneck_input" and channels[-1] != emb_dim:
            raise ValueError(f"condition=bottleneck_input adds the embedding to the bottleneck's input: channels[-1] "
                             f"({channels[-1]}) must equal emb_dim ({emb_dim})")
        if null_label not in ("learned", "zero"):
            raise ValueError(f"null_label must be 'learned' or 'zero', got {null_label!r}")
        if out_kernel not in (1, 3):
            raise ValueError(f"out_kernel must be 1 or 3, got {out_kernel!r}")
        self.num_classes, self.null_class, self.conditional = num_classes, null_class, conditional
        self.image_shape = (in_channels, image_size, image_size)  # (C, H, W) the network denoises
        self.emb_dim, self.act = emb_dim, activation_fn(activation)
        self.time_dim, self.condition = time_dim or emb_dim, condition
        self.zero_null = null_class and null_label == "zero"
        hidden = time_hidden or emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(self.time_dim, hidden), nn.SiLU(), nn.Linear(hidden, emb_dim))
        if conditional:
            # Row `num_classes` is the null label ∅ of classifier-free guidance (Ho & Salimans 2022, §3.2).
            self.label_emb = nn.Embedding(num_classes + int(null_class and not self.zero_null), emb_dim)
            self.label_act = nn.SiLU() if label_activation else nn.Identity()
            self.label_proj = nn.Linear(emb_dim, emb_dim)
        c = stem_channels or channels[0]
        self.inp = nn.Conv2d(in_channels, c, 3, padding=1)

        res, skips = image_size, []
        outer = emb_dim if condition == "all" else 0  # embedding width of the blocks outside the bottleneck
        inner = 0 if condition == "bottleneck_input" else emb_dim  # and of the bottleneck's blocks

        def level(c_in: int, c_out: int, n: int, attn: bool, emb: int = outer, attn_last: bool = True) -> Level:
            return Level(c_in, c_out, n, emb, groups, dropout, attn, activation, attn_last)

        self.down, self.pools = nn.ModuleList(), nn.ModuleList()
        for i, ch in enumerate(channels):
            self.down.append(level(c, ch, blocks_per_level, res in attention_resolutions))
            c = ch
            skips.append(ch)
            pool = i < len(channels) - 1 or downsample_last
            self.pools.append(make_downsample(downsample, ch) if pool else nn.Identity())
            res = res // 2 if pool else res
        self.mid = level(c, mid_channels, mid_blocks, res in attention_resolutions, inner, mid_attention == "each")
        c = mid_channels
        self.up, self.unpools = nn.ModuleList(), nn.ModuleList()
        for i, ch in enumerate(up_channels):
            unpool = i > 0 or downsample_last
            self.unpools.append(make_upsample(upsample, c) if unpool else nn.Identity())
            res = res * 2 if unpool else res
            self.up.append(level(c + skips.pop(), ch, blocks_per_level, res in attention_resolutions))
            c = ch
        self.out_norm = nn.GroupNorm(groups, c) if out_norm else None
        self.out = nn.Conv2d(c, in_channels, out_kernel, padding=out_kernel // 2)

    def parameter_parts(self) -> dict[str, int]:
        """Trainable parameters per part, in the seed documentation page's breakdown."""
        labels = (self.label_emb, self.label_proj) if self.conditional else ()
        parts = {"time and label embedding": (self.time_mlp, *labels),
                 "encoder": (self.inp, self.down, self.pools), "bottleneck": (self.mid,),
                 "decoder": (self.up, self.unpools), "output": (self.out, *filter(None, [self.out_norm]))}
        return {name: sum(p.numel() for m in mods for p in m.parameters() if p.requires_grad)
                for name, mods in parts.items()}

    def embed(self, t: Tensor, y: Tensor) -> Tensor:
        """e_t + e_c, the time and label embeddings (time only when not conditional; e_c = 0 for ∅ with
        null_label="zero"): (B,), (B,) -> (B, emb_dim)."""
        e = self.time_mlp(sinusoidal_embedding(t, self.time_dim))
        if self.conditional:
            known = y < self.num_classes
            e_c = self.label_proj(self.label_act(self.label_emb(y.clamp(max=self.num_classes - 1)
                                                                 if self.zero_null else y)))
            e = e + (e_c * known[:, None] if self.zero_null else e_c)
        return e

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Predict the noise in x (B, C, H, W) at integer steps t (B,) for labels y (B,)."""
        e = self.embed(t, y)
        emb = self.act(e)  # what each block's projection sees
        h, skips = self.inp(x), []
        for level, pool in zip(self.down, self.pools):
            h = level(h, emb)
            skips.append(h)
            h = pool(h)
        if self.condition == "bottleneck_input":
            h = h + e[:, :, None, None]  # h_mid + e_t + e_c, broadcast over the positions (the seed report)
        h = self.mid(h, emb)
        for level, unpool in zip(self.up, self.unpools):
            skip = skips.pop()
            h = level(torch.cat([unpool(h)[..., :skip.shape[-2], :skip.shape[-1]], skip], dim=1), emb)
        if self.out_norm is not None:
            h = self.act(self.out_norm(h))
        return self.out(h)
