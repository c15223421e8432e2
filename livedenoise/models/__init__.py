"""Denoising networks and their registry.

Checkpoints store an architecture *name* and its keyword arguments (never pickled code), so
every network that can be saved must be buildable here with :func:`build_model`. Named
presets give the trade-offs a user chooses between (``standard``: the paper's widths;
``fast``: half the widths, ~4x cheaper, for real time on a CPU; ``temporal``: the fast U-Net on
every frame plus a learned motion-adaptive fusion over 5 frames (:mod:`livedenoise.models.temporal`);
``cnnt``: a small CNNT for 2-D + time, as in the CNNT paper).
"""
from __future__ import annotations

import inspect
import math
import weakref
from typing import Any

import torch
from torch import nn

from livedenoise.errors import ConfigError
from livedenoise.models.cnnt import CNNTUNet
from livedenoise.models.temporal import TemporalUNet
from livedenoise.models.unet import UNet2D

__all__ = [
    "ACTIVATION_BYTES_PER_PIXEL_CHANNEL", "ARCHITECTURES", "PRESETS", "CNNTUNet", "TemporalUNet", "UNet2D",
    "UnknownArchitectureError", "activation_bytes_per_pixel", "build_model", "build_preset",
    "empirical_receptive_field_radius", "is_tile_safe", "model_is_temporal", "receptive_field_radius", "size_multiple",
]

ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet2D, "cnnt": CNNTUNet, "unet-temporal": TemporalUNet}

#: name -> (arch, arch_kwargs). ``cnnt`` is kept small (16 base channels, 1 cell per level)
#: because a window of T frames costs T times a 2-D pass; ``temporal`` costs one 2-D pass per frame.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "standard": ("unet", {"widths": (32, 64, 128, 256)}),
    "fast": ("unet", {"widths": (16, 32, 64, 128)}),
    # 8 channels at full resolution and a fifth level: 44 against 118 ms per 512² frame for "fast" (2 threads, the
    # network alone), the same number of weights, most of them where the pixels are few
    "lite": ("unet", {"widths": (8, 16, 32, 64, 128)}),
    "temporal": ("unet-temporal", {"window": 5, "widths": (16, 32, 64, 128)}),
    "cnnt": ("cnnt", {"channels": 16, "cells_per_level": 1, "heads": 4}),
}


class UnknownArchitectureError(ConfigError, ValueError):
    """An architecture name that :func:`build_model` does not know (also a ``ValueError``)."""


def build_model(arch: str, **arch_kwargs: Any) -> nn.Module:
    """Build an untrained network: ``arch`` in ``ARCHITECTURES``, keyword arguments of its class.

    JSON round-trips turn tuples into lists; the constructors accept both.
    """
    cls = ARCHITECTURES.get(str(arch).lower())
    if cls is None:
        raise UnknownArchitectureError(
            f"Architecture {arch!r} is unknown; expected one of {', '.join(sorted(ARCHITECTURES))}."
        )
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(arch_kwargs) - set(params))
    if unknown:
        raise ConfigError(
            f"Architecture {arch!r} does not take option(s) {', '.join(unknown)}; expected some of {', '.join(params)}."
        )
    try:
        return cls(**arch_kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"Architecture {arch!r} cannot be built with {arch_kwargs!r}: {exc}.") from exc


def build_preset(name: str) -> tuple[nn.Module, str, dict[str, Any]]:
    """Build the named preset; returns ``(model, arch, arch_kwargs)`` ready for ``save_checkpoint``."""
    if name not in PRESETS:
        raise ConfigError(f"Model preset {name!r} is unknown; expected one of {', '.join(PRESETS)}.")
    arch, kwargs = PRESETS[name]
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    return build_model(arch, **kwargs), arch, kwargs


#: Working memory of a float32 inference pass, in bytes per input pixel and per first-layer channel. Measured
#: (``benchmarks/bench_memory.py``: growth of the peak resident memory during one whole-frame call, the call's
#: copies included; ``benchmarks/results/2026-12-03-memory``, two runs): fast U-Net (16 channels) 328-432 B/px,
#: standard (32) 648-689 B/px, i.e. 20-27 B/px/channel (the 1024² passes are the high end); 30 keeps a margin.
ACTIVATION_BYTES_PER_PIXEL_CHANNEL = 30


def activation_bytes_per_pixel(model: nn.Module) -> int:
    """Estimated working memory of one inference pass per input pixel (see ``ACTIVATION_BYTES_PER_PIXEL_CHANNEL``).

    Our networks' activations scale with their first level's width (each deeper level has twice the
    channels on a quarter of the pixels); other networks count their first convolution's outputs, times
    their ``activation_factor`` (a network with attention keeps more per pixel: CNNT's is measured).
    """
    widths = getattr(model, "widths", None)
    if widths:
        first = int(widths[0])
    else:
        conv = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
        first = int(conv.out_channels) if conv is not None else 32
    factor = float(getattr(model, "activation_factor", 1.0))
    return math.ceil(ACTIVATION_BYTES_PER_PIXEL_CHANNEL * max(1, first) * factor)


def model_is_temporal(model: nn.Module) -> bool:
    """True for networks that take ``[B, C, T, H, W]`` (frames over time)."""
    return bool(getattr(model, "is_temporal", False))


def size_multiple(model: nn.Module) -> int:
    """Spatial alignment the network needs (tiles start at multiples of it)."""
    return int(getattr(model, "size_multiple", 1))


def is_tile_safe(model: nn.Module) -> bool:
    """True when tiled inference reproduces whole-frame inference (local, equivariant network)."""
    return bool(getattr(model, "tile_safe", True))


_RF_CACHE: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()


def receptive_field_radius(model: nn.Module) -> int:
    """Receptive-field radius in pixels: analytic bound for our networks, measured otherwise (cached)."""
    method = getattr(model, "receptive_field_radius", None)
    if callable(method):
        return int(method())
    if model not in _RF_CACHE:
        _RF_CACHE[model] = empirical_receptive_field_radius(model)
    return _RF_CACHE[model]


def empirical_receptive_field_radius(model: nn.Module, start_size: int = 64, max_size: int = 1024) -> int:
    """Measure the radius from the gradient of a central block of outputs w.r.t. the input.

    The block spans one alignment period (``size_multiple``) so every sub-pixel phase of the
    strided layers is covered; the input is seeded noise (a zero image can hide paths behind
    exact-zero ReLU gradients). The image doubles in size until the gradient support stops
    short of its border (a network with an analytic bound starts just above it). Runs on the model's device, in
    eval mode, restoring every submodule's own mode after (a wrapper in training mode around a network in
    inference mode, say, must not switch the network's batch normalisation to batch statistics).
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        channels = int(getattr(model, "in_channels", 1))
        block = size_multiple(model)
        gen = torch.Generator().manual_seed(0)
        size = start_size
        analytic = getattr(model, "receptive_field_radius", None)
        if callable(analytic):  # only sizes the probe image; the support is still measured
            size = int(math.ceil((2 * analytic() + 3 * block) / block) * block)
        while True:
            size = max(size, 4 * block)
            shape = (1, channels, 2, size, size) if model_is_temporal(model) else (1, channels, size, size)
            x = torch.rand(shape, generator=gen).to(device).requires_grad_(True)
            out = model(x)
            c0 = (size // 2 // block) * block
            out[..., c0:c0 + block, c0:c0 + block].sum().backward()
            assert x.grad is not None  # x requires grad and the output depends on it
            grad = x.grad.detach().abs().reshape(-1, size, size).amax(dim=0)
            rows = torch.nonzero(grad.amax(dim=1) > 0).flatten()
            cols = torch.nonzero(grad.amax(dim=0) > 0).flatten()
            if rows.numel() == 0:  # the block ignores its input here (a network saturated at this level)
                return 0
            lo = int(min(rows.min(), cols.min()))
            hi = int(max(rows.max(), cols.max()))
            if (lo > 0 and hi < size - 1) or size >= max_size:
                return max(c0 - lo, hi - (c0 + block - 1), 0)
            size *= 2
    finally:
        for m, training in modes:
            m.training = training
