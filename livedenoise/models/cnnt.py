"""CNNT U-Net (Rehman, Xue et al.): a convolutional-transformer U-Net for 2-D + time.

Input ``[B, C, T, H, W]`` with any ``T`` (including 1) and any ``H, W``; output of the same
shape with ``out_channels``. Layout, as in the paper's Fig. 2:

- a 3x3 pre-convolution lifts ``C`` to ``channels``; a 3x3 post-convolution maps back; a long
  skip adds the input to the output (``residual=True``);
- a U-Net backbone with two down levels (2x2 stride-2 conv, channels x2) and two up levels
  (2x2 stride-2 transposed conv; concatenation with the matching down level); every level,
  bottleneck included, is a stack of ``cells_per_level`` CNNT cells (the paper uses 4; 1 keeps
  the model CPU-friendly);
- a CNNT cell: optional 1x1 input projection (channel change), then
  ``x + Attention(Norm(x))`` and ``x + Mixer(Norm(x))``. Attention: Q, K and V come from a 3x3
  convolution of every frame; ``heads`` heads attend across the ``T`` frames; a 1x1 conv mixes
  the heads. Mixer: 3x3 conv - GELU - 3x3 conv. Frames never mix spatially except through
  the convolutions, and all frames share weights, so any ``T`` works.

Deviations from the paper, both so that tiled inference equals whole-frame inference (see
:mod:`livedenoise.models.unet` for the reasoning): (1) attention scores are computed per pixel
(the query/key vectors of a head at one pixel, over T frames) instead of from whole flattened
frames, which would make every pixel depend on the entire tile; the 3x3 Q/K/V convolutions still
give each score a local spatial context; (2) the norm defaults to ``"layer"`` (LayerNorm over
channels at each pixel, as in Restormer) instead of InstanceNorm (available as
``norm="instance"``, not tile-safe). The pre-norm cell order (norm before attention/mixer) is the
standard, more stable form of the paper's "attention, InstanceNorm, mixer" cell.
"""
from __future__ import annotations

import torch
from torch import nn

from livedenoise.errors import ConfigError
from livedenoise.models.unet import TILE_SAFE_NORMS, check_norm, make_norm2d, pad_to_multiple


class ConvTemporalAttention(nn.Module):
    """Multi-head attention across frames with convolutional Q, K, V (scores per pixel).

    Works on frames folded into the batch, ``[B*T, C, H, W]`` with frames of one sample
    consecutive, so every convolution is a plain 2-D one and no transposes are needed.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"CNNT channels ({channels}) must be divisible by heads ({heads}).")
        self.heads = heads
        self.qkv = nn.Conv2d(channels, 3 * channels, 3, padding=1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        d = c // self.heads
        qkv = self.qkv(x).view(bt // t, t, 3, self.heads, d, h, w)
        q, k, v = qkv[:, :, 0] * d**-0.5, qkv[:, :, 1], qkv[:, :, 2]  # [B, T, heads, d, H, W]
        # Scores per pixel are tiny T x T matrices at every pixel; batched matmul over millions
        # of them is slow on CPUs, so loop over the (short) key axis with elementwise products:
        # the work stays vectorised over heads, channels and pixels.
        scores = torch.stack([(q * k[:, s:s + 1]).sum(dim=3) for s in range(t)], dim=2)  # [B, Tq, Tk, heads, H, W]
        weights = scores.softmax(dim=2)
        out = sum(weights[:, :, s].unsqueeze(3) * v[:, s:s + 1] for s in range(t))  # [B, T, heads, d, H, W]
        return self.out(out.reshape(bt, c, h, w))


def _norm(norm: str, channels: int) -> nn.Module:
    """Norm layer for frames folded into the batch (``"instance"`` is per frame, as in the paper)."""
    if norm == "batch":  # statistics over batch, frames and pixels, as BatchNorm3d would
        return nn.BatchNorm2d(channels)
    return make_norm2d(norm, channels)


class CNNTCell(nn.Module):
    """Projection -> x + attention(norm(x)) -> x + mixer(norm(x)), on ``[B*T, C, H, W]``."""

    def __init__(self, in_channels: int, channels: int, heads: int, norm: str) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, channels, 1) if in_channels != channels else nn.Identity()
        self.norm1 = _norm(norm, channels)
        self.attention = ConvTemporalAttention(channels, heads)
        self.norm2 = _norm(norm, channels)
        self.mixer = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        x = self.proj(x)
        x = x + self.attention(self.norm1(x), t)
        return x + self.mixer(self.norm2(x))


class _Stack(nn.ModuleList):
    """``cells_per_level`` CNNT cells applied in order."""

    def __init__(self, in_channels: int, channels: int, n: int, heads: int, norm: str) -> None:
        super().__init__([CNNTCell(in_channels if i == 0 else channels, channels, heads, norm) for i in range(n)])

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        for cell in self:
            x = cell(x, t)
        return x


class CNNTUNet(nn.Module):
    """CNNT U-Net, input ``[B, C, T, H, W]`` -> ``[B, out_channels, T, H, W]``."""

    is_temporal = True
    arch = "cnnt"
    size_multiple = 4  # two stride-2 levels
    #: Working memory per pixel relative to a U-Net of its first width: its attention keeps more
    #: (``benchmarks/results/2026-12-03-memory``: 874-970 B/px for 16 channels, 2.3-2.5x the U-Net figure).
    activation_factor = 3.0

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 32,
        cells_per_level: int = 1,
        heads: int = 4,
        residual: bool = True,
        norm: str = "layer",
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, channels, cells_per_level, heads) < 1:
            raise ConfigError(
                f"CNNT settings in={in_channels}, out={out_channels}, channels={channels}, "
                f"cells_per_level={cells_per_level}, heads={heads} are invalid; expected positive integers."
            )
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.channels, self.cells_per_level, self.heads = int(channels), int(cells_per_level), int(heads)
        self.norm = check_norm(norm)
        self.residual = bool(residual) and in_channels == out_channels
        self.arch_kwargs = {
            "in_channels": self.in_channels, "out_channels": self.out_channels, "channels": self.channels,
            "cells_per_level": self.cells_per_level, "heads": self.heads, "residual": bool(residual), "norm": norm,
        }
        c, n = self.channels, self.cells_per_level
        self.pre = nn.Conv2d(in_channels, c, 3, padding=1)
        self.enc0 = _Stack(c, c, n, heads, norm)
        self.down0 = nn.Conv2d(c, 2 * c, 2, stride=2)
        self.enc1 = _Stack(2 * c, 2 * c, n, heads, norm)
        self.down1 = nn.Conv2d(2 * c, 4 * c, 2, stride=2)
        self.bottleneck = _Stack(4 * c, 4 * c, n, heads, norm)
        self.up1 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec1 = _Stack(4 * c, 2 * c, n, heads, norm)
        self.up0 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.dec0 = _Stack(2 * c, c, n, heads, norm)
        self.post = nn.Conv2d(c, out_channels, 3, padding=1)

    @property
    def tile_safe(self) -> bool:
        return self.norm in TILE_SAFE_NORMS

    def receptive_field_radius(self) -> int:
        """Spatial upper bound in pixels (every output frame sees all ``T`` input frames).

        A cell adds 3 steps of its pixel pitch (3x3 Q/K/V conv + two 3x3 mixer convs); the
        pre/post convs add 1 each; each stride-2 resampling adds one fine-grid step.
        """
        n = self.cells_per_level
        r = 1  # pre-conv
        r += 3 * n * 1 + 1  # enc0, down0
        r += 3 * n * 2 + 2  # enc1, down1
        r += 3 * n * 4  # bottleneck
        r += 2 + 3 * n * 2  # up1, dec1
        r += 1 + 3 * n * 1  # up0, dec0
        return r + 1  # post-conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"CNNTUNet expects [B, C, T, H, W], got shape {tuple(x.shape)}")
        padded, h, w = pad_to_multiple(x, self.size_multiple)
        b, c, t, hp, wp = padded.shape
        frames = padded.transpose(1, 2).reshape(b * t, c, hp, wp)  # frames folded into the batch
        s0 = self.enc0(self.pre(frames), t)
        s1 = self.enc1(self.down0(s0), t)
        y = self.bottleneck(self.down1(s1), t)
        y = self.dec1(torch.cat([self.up1(y), s1], dim=1), t)
        y = self.dec0(torch.cat([self.up0(y), s0], dim=1), t)
        y = self.post(y).reshape(b, t, self.out_channels, hp, wp).transpose(1, 2)
        if self.residual:
            y = y + padded
        return y[..., :h, :w]
