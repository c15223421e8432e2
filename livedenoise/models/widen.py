"""Grow a trained U-Net into a wider one that computes exactly the same function (Net2Net-style, zero-init).

Why: on a CPU, training a large backbone from scratch takes days; starting it from a trained small one
(``fast`` -> ``standard``) keeps everything the small one learned and lets the extra channels learn what
it could not. Every old weight is copied into the leading channels of the wide layer; new output
channels get small random incoming weights and *zero* outgoing weights, so they change nothing until
training moves them (their outgoing weights get non-zero gradients at once). The wide network's output
equals the narrow one's to float rounding (tested).

The one non-trivial mapping is a decoder's first convolution, whose input is ``cat([upsampled, skip])``:
the old input channels ``[0, w)`` and ``[w, 2w)`` go to ``[0, w)`` and ``[W, W + w)`` of the new input
(``W`` the new width of that level).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from livedenoise.errors import ConfigError
from livedenoise.models.unet import UNet2D

#: Standard deviation of the new channels' incoming weights, relative to the layer's existing weights.
NEW_WEIGHT_SCALE = 0.1


def widen_unet(narrow: UNet2D, widths: Sequence[int], seed: int = 0) -> UNet2D:
    """A :class:`UNet2D` with ``widths`` (same depth, each >= the old width) computing ``narrow``'s function."""
    widths = tuple(int(w) for w in widths)
    old = tuple(narrow.widths)
    if len(widths) != len(old) or any(n < o for n, o in zip(widths, old, strict=True)):
        raise ConfigError(f"cannot grow a U-Net with widths {list(old)} into {list(widths)}: the depth must match and "
                          "no level may get narrower")
    if narrow.norm != "none":
        raise ConfigError(f"widening supports U-Nets without normalisation layers, not norm={narrow.norm!r}")
    wide = UNet2D(narrow.in_channels, narrow.out_channels, widths, residual=narrow.residual, norm=narrow.norm)
    gen = torch.Generator().manual_seed(seed)
    src = narrow.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, target in wide.state_dict().items():
        old_t = src[name]
        new_t = torch.zeros_like(target)
        if name.endswith("weight") and old_t.dim() == 4:
            transposed = name.startswith("ups.")  # ConvTranspose2d weights are (in, out, k, k)
            out_dim, in_dim = (1, 0) if transposed else (0, 1)
            # new output channels: small random incoming weights (their outgoing weights stay zero)
            spread = float(old_t.std()) * NEW_WEIGHT_SCALE or NEW_WEIGHT_SCALE
            new_t.normal_(0.0, spread, generator=gen)
            in_old_idx, in_new_idx = _input_map(name, old, widths, old_t.shape[in_dim], target.shape[in_dim])
            # every input channel that did not exist before feeds nothing: zero (function preserved)
            keep = torch.zeros(target.shape[in_dim], dtype=torch.bool)
            keep[in_new_idx] = True
            view = [1] * 4
            view[in_dim] = -1
            new_t = new_t * keep.view(view).to(new_t.dtype)
            index: list[slice | torch.Tensor] = [slice(None)] * 4
            index[out_dim] = slice(0, old_t.shape[out_dim])
            index[in_dim] = in_new_idx
            sel: list[slice | torch.Tensor] = [slice(None)] * 4
            sel[in_dim] = in_old_idx
            new_t[tuple(index)] = old_t[tuple(sel)]
        else:  # biases (new channels start at 0)
            new_t[: old_t.shape[0]] = old_t
        out[name] = new_t
    wide.load_state_dict(out)
    return wide


def _input_map(name: str, old: tuple[int, ...], new: tuple[int, ...], n_old: int, n_new: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Old input-channel indices and where they go in the wide layer."""
    if name.startswith("decoders.") and name.endswith(".0.weight"):
        level = len(old) - 2 - int(name.split(".")[1])  # decoders run from the deepest level up
        w, big_w = old[level], new[level]
        assert n_old == 2 * w and n_new == 2 * big_w, (name, n_old, n_new)
        old_idx = torch.arange(2 * w)
        new_idx = torch.cat([torch.arange(w), big_w + torch.arange(w)])
        return old_idx, new_idx
    return torch.arange(n_old), torch.arange(n_old)
