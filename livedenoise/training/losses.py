"""Pixel losses for supervised training: L2 (Wang et al.), L1, and an optional SSIM term (CNNT)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _gaussian_window(size: int = 7, sigma: float = 1.5, device=None, dtype=None) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity of two [B, 1, H, W] tensors (Gaussian window 7, sigma 1.5), differentiable."""
    win = _gaussian_window(device=a.device, dtype=a.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = F.conv2d(a, win), F.conv2d(b, win)
    var_a = F.conv2d(a * a, win) - mu_a**2
    var_b = F.conv2d(b * b, win) - mu_b**2
    cov = F.conv2d(a * b, win) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean()


def supervised_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l2",
                    ssim_weight: float = 0.0) -> torch.Tensor:
    """L2 or L1 between prediction and clean target, plus ``ssim_weight * (1 - SSIM)`` when requested."""
    diff = pred - target
    loss = diff.abs().mean() if kind == "l1" else (diff * diff).mean()
    if ssim_weight > 0 and pred.shape[-1] >= 7 and pred.shape[-2] >= 7:
        rng = float(target.max() - target.min()) or 1.0
        p2 = pred.reshape(-1, 1, *pred.shape[-2:])
        t2 = target.reshape(-1, 1, *target.shape[-2:])
        loss = loss + ssim_weight * (1 - ssim(p2, t2, rng))
    return loss
