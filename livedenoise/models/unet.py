"""The 2-D denoising U-Net of Wang et al. (Noise2Self transfer learning), made tile-safe.

Architecture (``widths=(32, 64, 128, 256)`` = the paper's 4 levels): each level is a block of
two 3x3 convolutions, each followed by a normalisation layer and LeakyReLU(0.1); down-sampling
by a 2x2 stride-2 convolution; up-sampling by a 2x2 stride-2 transposed convolution;
skip connections by concatenation; a 1x1 output convolution; with ``residual=True`` (and as
many output as input channels) the network predicts a correction: ``out = x + net(x)``.

Deviation from the paper, on purpose: the default ``norm="none"`` instead of InstanceNorm.
InstanceNorm normalises each feature map by statistics of the whole input, so the prediction
for a pixel depends on everything else in the tile: tiled inference (needed for large frames
and GPU memory) would show seams and differ from whole-frame inference. Without it, the network
is translation-equivariant (for shifts that are multiples of :attr:`UNet2D.size_multiple`) with
a finite receptive field (:meth:`UNet2D.receptive_field_radius`), so tiles with an overlap at
least that radius reproduce the whole-frame output exactly. The input scale InstanceNorm used to
take care of is fixed by :class:`~livedenoise.normalization.Normalizer` (variance-stabilised,
percentile-scaled input), and Noise2Noise's U-Net shows plain conv blocks train well.
``norm="layer"`` (per-pixel channel LayerNorm, also tile-safe), ``"batch"`` (tile-safe in eval)
and ``"instance"`` (paper-faithful, not tile-safe) are available.

Inputs of any height/width (odd sizes, 1xN strips) are padded internally at the bottom/right
to a multiple of ``2**(levels-1)`` and the output is cropped back.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from livedenoise.errors import ConfigError

NORMS: tuple[str, ...] = ("none", "layer", "instance", "batch")


def neighbour_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of each pixel's 4 direct neighbours (reflect at borders) of a [B, C, H, W] tensor, centre excluded.

    Used by blind-spot training (Noise2Self / Noise2Same masks) to hide a pixel's own value.
    """
    c = x.shape[1]
    kernel = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]], device=x.device, dtype=x.dtype)
    mode = "reflect" if x.shape[-2] > 1 and x.shape[-1] > 1 else "replicate"
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode=mode), kernel.expand(c, 1, 3, 3), groups=c)
#: Norms whose eval-mode output at a pixel depends only on a local neighbourhood.
TILE_SAFE_NORMS: frozenset[str] = frozenset({"none", "layer", "batch"})


def check_norm(norm: str) -> str:
    """Validate a norm name."""
    if norm not in NORMS:
        raise ConfigError(f"Normalisation layer {norm!r} is unknown; expected one of {', '.join(NORMS)}.")
    return norm


class ChannelLayerNorm(nn.Module):
    """LayerNorm across channels at every pixel of an ``[N, C, ...]`` tensor (local, tile-safe)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


def make_norm2d(norm: str, channels: int) -> nn.Module:
    """Norm layer for ``[N, C, H, W]`` feature maps."""
    check_norm(norm)
    if norm == "none":
        return nn.Identity()
    if norm == "layer":
        return ChannelLayerNorm(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.BatchNorm2d(channels)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Pad the last two dims at the bottom/right to a multiple of ``multiple``.

    Padding only at the bottom/right keeps the pixel grid's origin fixed, which is what lets
    tiles placed at multiples of ``multiple`` reproduce a whole-frame prediction exactly.
    Reflect padding where the dimension allows it (pad < size), else replicate (tiny strips).
    Returns the padded tensor and the original height and width.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = pad2d(x, 0, ph, 0, pw)
    return x, h, w


def pad2d(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Pad the last two dims: reflect where each pad is smaller than the size, else replicate."""
    if not (top or bottom or left or right):
        return x
    h, w = x.shape[-2:]
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, h, w)  # F.pad's reflect/replicate want (N, C, H, W)
    mode = "reflect" if max(top, bottom) < h and max(left, right) < w else "replicate"
    out = nn.functional.pad(flat, (left, right, top, bottom), mode=mode)
    return out.reshape(*lead, *out.shape[-2:])


def _conv_block(cin: int, cout: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        make_norm2d(norm, cout),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        make_norm2d(norm, cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


class UNet2D(nn.Module):
    """2-D U-Net, input ``[B, C, H, W]`` of any ``H, W`` -> ``[B, out_channels, H, W]``."""

    is_temporal = False
    arch = "unet"

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256),
        residual: bool = True,
        norm: str = "none",
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or any(w < 1 for w in widths):
            raise ConfigError(f"U-Net widths {widths!r} are invalid; expected one or more positive channel counts.")
        if in_channels < 1 or out_channels < 1:
            raise ConfigError(f"U-Net channels in={in_channels}, out={out_channels} are invalid; expected >= 1.")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.widths = widths
        self.norm = check_norm(norm)
        #: The residual connection exists only when input and output have the same channels.
        self.residual = bool(residual) and in_channels == out_channels
        self.arch_kwargs = {
            "in_channels": self.in_channels, "out_channels": self.out_channels,
            "widths": list(widths), "residual": bool(residual), "norm": norm,
        }
        levels = len(widths)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, w in enumerate(widths):
            cin = in_channels if i == 0 else widths[i - 1]
            self.encoders.append(_conv_block(cin, w, norm))
            if i < levels - 1:
                self.downs.append(nn.Conv2d(w, w, kernel_size=2, stride=2))
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in range(levels - 2, -1, -1):
            self.ups.append(nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size=2, stride=2))
            self.decoders.append(_conv_block(2 * widths[i], widths[i], norm))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def to_reduced_precision(self, dtype: torch.dtype) -> UNet2D:
        """Cast the weights to ``dtype`` (bf16 on a CPU), except the first convolution's, in place.

        Why not that one: it reads the frame itself, and rounding the frame to bf16's 8 significant bits costs the
        most accuracy (in a probe on 256² crops of the dev pairs, the rms difference from fp32 was 7e-3 of the
        output range with the first block in bf16 and 3e-3 with it in fp32); at one input channel it is also the
        cheapest convolution. Until 2026-12-05 the whole first block stayed fp32; its second convolution (16 or 32
        channels at full resolution) took about 6 ms of the fast backbone's 58 per 512² frame in fp32 against 3 in
        bf16, and about 22 of the standard one's 203 ms against 8 (measured: 58 -> 55 and 203 -> 188 ms), and in bf16
        it costs no measurable accuracy
        (``benchmarks/bench_precision.py`` measures the result against fp32).
        ``forward`` casts the first convolution's activations once to the dtype of the rest (read from the weights,
        so ``.float()`` undoes all of this), and the residual sum stays in the input's dtype.
        """
        self.to(dtype)
        first = cast(nn.Sequential, self.encoders[0])
        first[0].float()
        first[1].float()  # its normalisation layer, if any
        return self

    @property
    def levels(self) -> int:
        return len(self.widths)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes are padded to, and tiles must be aligned on, multiples of this."""
        return 2 ** (self.levels - 1)

    @property
    def tile_safe(self) -> bool:
        """True when eval-mode output at a pixel depends only on its receptive field."""
        return self.norm in TILE_SAFE_NORMS

    def receptive_field_radius(self) -> int:
        """Upper bound (pixels) on how far an input pixel can influence an output pixel.

        Computed analytically along the deepest path: a 3x3 conv adds one step of the current
        pixel pitch ``j``; a stride-2 down- or up-sampling adds one fine-grid step (its 2x2
        footprint reaches at most half a coarse pixel, rounded up). The bound is checked against
        the measured gradient support in the tests.
        """
        r, j = 0, 1
        for i in range(self.levels):
            r += 2 * j  # two 3x3 convs
            if i < self.levels - 1:
                r += j  # 2x2 stride-2 conv
                j *= 2
        for _ in range(self.levels - 1):
            j //= 2
            r += j  # 2x2 stride-2 transposed conv
            r += 2 * j  # two 3x3 convs
        return r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"UNet2D expects [B, C, H, W], got shape {tuple(x.shape)}")
        padded, h, w = pad_to_multiple(x, self.size_multiple)
        skips = []
        y = padded
        for i, enc in enumerate(self.encoders):
            if i == 0:
                for j, layer in enumerate(cast(nn.Sequential, enc)):
                    if j == 3 and y.dtype != self.head.weight.dtype and not torch.is_autocast_enabled(y.device.type):
                        y = y.to(self.head.weight.dtype)  # a reduced-precision network's one switch: after the
                    y = layer(y)  # first convolution, its normalisation and activation (to_reduced_precision)
            else:
                y = enc(y)
            if i < self.levels - 1:
                skips.append(y)
                y = self.downs[i](y)
        for up, dec in zip(self.ups, self.decoders, strict=True):
            y = up(y)
            y = dec(torch.cat([y, skips.pop()], dim=1))
        y = self.head(y).to(padded.dtype)
        if self.residual:
            y = y + padded  # in the input's precision: a bf16 sum would round every output pixel to ~0.4 %
        return y[..., :h, :w]
