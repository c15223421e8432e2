"""The noise model of one saved dataset and channel, fitted before batch denoising.

Why per dataset and channel: two files (or two channels of one file) rarely share a camera gain,
a light level or an 8-bit contrast stretch, and a normaliser fitted on other data -- the backbone's
pretraining template, or the frames an adapted model was trained on -- throws away decibels or
returns images worse than the raw input. So the batch denoiser fits one here for every input and
channel, and records it in the output's provenance.

Which frames: with a time axis, up to ``MAX_FIELD_FRAMES`` consecutive time points of one field
(the middle z plane of the first position), so the noise comes from temporal differences
(independent of structure); otherwise up to ``MAX_SINGLE_FRAMES`` planes spread over the dataset,
each on its own (single-image estimate).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from livedenoise.noise_model import NoiseFit, fit_noise_model
from livedenoise.normalization import Normalizer

MAX_FIELD_FRAMES = 8
MAX_SINGLE_FRAMES = 4


def _lead_index(axes: str, shape: Sequence[int], fixed: dict[str, int]) -> list[int]:
    """Index over the leading (non-YX) axes: ``fixed`` letters set, P/T at 0, Z at the middle plane."""
    out = []
    for letter, n in zip(axes[:-2], shape[:-2], strict=True):
        if letter in fixed:
            out.append(int(fixed[letter]))
        elif letter == "Z":
            out.append(int(n) // 2)
        else:
            out.append(0)
    return out


def sample_field_frames(dataset: Any, channel: int | None) -> tuple[list[np.ndarray], bool]:
    """Frames to fit the noise on, and whether they are repeated acquisitions of one field."""
    axes, shape = dataset.axes, tuple(dataset.shape)
    fixed = {"C": channel} if channel is not None and "C" in axes[:-2] else {}
    n_t = dataset.size("T")
    if n_t >= 2:
        frames = [np.asarray(dataset.read_frame(_lead_index(axes, shape, {**fixed, "T": t})))
                  for t in range(min(n_t, MAX_FIELD_FRAMES))]
        return frames, True
    lead = [n for a, n in zip(axes[:-2], shape[:-2], strict=True) if a not in fixed]
    free = [a for a in axes[:-2] if a not in fixed]
    total = int(np.prod(lead, dtype=np.int64)) if lead else 1
    picks = np.unique(np.linspace(0, total - 1, num=min(MAX_SINGLE_FRAMES, total)).round().astype(np.int64))
    frames = []
    for flat in picks:
        sub = dict(zip(free, (int(i) for i in np.unravel_index(int(flat), lead)), strict=True)) if lead else {}
        index = [sub[a] if a in sub else fixed[a] for a in axes[:-2]]
        frames.append(np.asarray(dataset.read_frame(index)))
    return frames, False


def fit_dataset_noise(dataset: Any, channel: int | None, like: Normalizer, *, calibration: Any = None,
                      averaged: int = 1) -> tuple[NoiseFit, list[np.ndarray]]:
    """:func:`livedenoise.noise_model.fit_noise_model` on frames sampled from ``dataset`` (one channel).

    Returns the fit and the frames it was fitted on (the caller checks the denoiser on one of them).
    """
    frames, same_field = sample_field_frames(dataset, channel)
    fit = fit_noise_model(frames, like=like, calibration=calibration, same_field=same_field, averaged=averaged)
    return fit, frames
