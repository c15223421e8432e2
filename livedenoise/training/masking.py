"""Blind-spot masking: Noise2Self (Batson & Royer 2019, used by Wang et al.) and Noise2Same (Xie et al. 2020).

A regular grid of pixels (1 in ``grid**2``) is hidden from the network's input and the loss is taken
only on those pixels. The phase of the grid cycles with the training step, so every pixel is a
target once per ``grid**2`` steps. A hidden pixel is replaced by the mean of its four direct
neighbours, which are never hidden themselves (grid >= 2), so a hidden pixel's own value cannot
reach the loss through the input: the network can only predict it from its surroundings, and
independent noise cannot be learned.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from livedenoise.models.unet import neighbour_mean


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
    return torch.where(mask, neighbour_mean(x), x)


def noise2self_loss(model: torch.nn.Module, x: torch.Tensor, phase: int, grid: int, loss: str = "l2") -> torch.Tensor:
    """Loss of ``model`` predicting the hidden grid pixels of ``x`` from their surroundings."""
    mask = grid_mask(x.shape[-2], x.shape[-1], grid, phase, x.device)
    pred = model(masked_input(x, mask))
    diff = (pred - x)[..., mask]
    return diff.abs().mean() if loss == "l1" else (diff * diff).mean()


def _mixes_samples(model: torch.nn.Module) -> bool:
    """Whether ``model``'s output for one sample depends on the other samples of its batch (batch normalisation in
    training mode)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def stacked_forward(model: torch.nn.Module, *batches: torch.Tensor) -> list[torch.Tensor]:
    """``[model(b) for b in batches]`` from one forward pass over the batches stacked.

    Why: Noise2Same needs the network on the image and on its masked copies. Small patches leave oneDNN's
    convolutions short of work; one batch of 16 runs faster than two of 8 (bf16 fine-tuning of the fast backbone,
    8 patches of 64², 2 threads: 23.5 -> 19.5 ms per step with the decoder adapted). The result is the same as
    separate calls for every network whose samples do not see each other, so a network with batch normalisation
    in training mode gets separate calls.
    """
    if len(batches) > 1 and _mixes_samples(model):
        return [model(b) for b in batches]
    out = model(torch.cat(batches))
    return list(out.split([b.shape[0] for b in batches]))


def noise2same_loss(model: torch.nn.Module, x: torch.Tensor, phase: int, grid: int, noise_std: float) -> torch.Tensor:
    """Noise2Same (Xie et al. 2020) with known noise level: trains the full-image prediction itself.

    ``mean((f(x) - x)^2) + 2 * sigma * sqrt(mean_J((f(x) - f(x_J))^2))`` where ``x_J`` hides the grid pixels J.
    The first term alone would learn the identity; the second makes the prediction at J invariant to the value
    at J, so that, with ``sigma`` the noise standard deviation, the loss is (up to a constant) an upper bound of
    the error against the clean image. Unlike Noise2Self's masked-only loss, the full-image output used at
    inference is what is optimised, which matters for residual backbones pretrained on full images.
    """
    return mean_noise2same_loss(model, x, [phase], grid, noise_std)


def mean_noise2same_loss(model: torch.nn.Module, x: torch.Tensor, phases: Sequence[int], grid: int,
                         noise_std: float) -> torch.Tensor:
    """The mean of :func:`noise2same_loss` over several grid ``phases``, with the unmasked prediction computed once
    (a validation scores several phases of the same batch)."""
    masks = [grid_mask(x.shape[-2], x.shape[-1], grid, p, x.device) for p in phases]
    full, *blinds = stacked_forward(model, x, *(masked_input(x, m) for m in masks))
    rec = ((full - x) ** 2).mean()
    losses = [rec + 2.0 * noise_std * torch.sqrt(((full - blind)[..., m] ** 2).mean() + 1e-12)
              for blind, m in zip(blinds, masks, strict=True)]
    return torch.stack(losses).mean()
