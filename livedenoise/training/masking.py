"""Noise2Self masking (Batson & Royer 2019), as used by Wang et al. for self-supervised fine-tuning.

A regular grid of pixels (1 in ``grid**2``) is hidden from the network's input and the loss is taken
only on those pixels. The phase of the grid cycles with the training step, so every pixel is a
target once per ``grid**2`` steps. A hidden pixel is replaced by the mean of its four direct
neighbours, which are never hidden themselves (grid >= 2), so a hidden pixel's own value cannot
reach the loss through the input: the network can only predict it from its surroundings, and
independent noise cannot be learned.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_NEIGHBOURS = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])


def grid_mask(height: int, width: int, grid: int, phase: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean (H, W) mask of the pixels with ``(y % grid, x % grid) == divmod(phase % grid**2, grid)``."""
    if grid < 2:
        raise ValueError(f"mask grid must be >= 2 so that a hidden pixel's neighbours stay visible, got {grid}")
    py, px = divmod(phase % (grid * grid), grid)
    ys = (torch.arange(height, device=device) % grid) == py
    xs = (torch.arange(width, device=device) % grid) == px
    return ys[:, None] & xs[None, :]


def masked_input(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` ([B, C, H, W]) with the masked pixels replaced by the mean of their 4 neighbours (reflect at borders)."""
    b, c, h, w = x.shape
    kernel = _NEIGHBOURS.to(x.device, x.dtype).expand(c, 1, 3, 3)
    mode = "reflect" if h > 1 and w > 1 else "replicate"
    interp = F.conv2d(F.pad(x, (1, 1, 1, 1), mode=mode), kernel, groups=c)
    return torch.where(mask, interp, x)


def noise2self_loss(model: torch.nn.Module, x: torch.Tensor, phase: int, grid: int, loss: str = "l2") -> torch.Tensor:
    """Loss of ``model`` predicting the hidden grid pixels of ``x`` from their surroundings."""
    mask = grid_mask(x.shape[-2], x.shape[-1], grid, phase, x.device)
    pred = model(masked_input(x, mask))
    diff = (pred - x)[..., mask]
    return diff.abs().mean() if loss == "l1" else (diff * diff).mean()
