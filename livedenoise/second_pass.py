"""The temporal backbone's second pass: denoise the motion-compensated average of the raw frames once more.

Averaging ``n`` raw frames of a static scene gives a frame with ``n`` times the light: the same mean, ``1/n`` of
the noise variance. The 2-D network denoises such a frame far better than its ``n`` single-frame outputs average
out, because their errors are not independent (each output is smoothed the same way from the same structure).
So, after the fusion (:class:`~livedenoise.models.temporal.MotionAdaptiveFusion`) has decided, pixel by pixel,
which neighbours show the same thing as the frame being denoised, the *raw* frames are averaged with those
agreement weights (same registration, no learned trust: each agreeing frame counts fully), and the average is
denoised by the 2-D network (the backbone's: a fine-tuned model keeps it for this pass, ``TemporalUNet.averages``)
under the noise model of an ``n``-frame mean (:func:`averaged`: the variance
model divided by ``n``). Where fewer frames agree (a moving object, the first frames of a series) the average is
noisier than that model says, so the result is blended back towards the fusion's output there, in proportion to
how many frames were averaged.

Measured with ``benchmarks/bench_temporal.py`` (six simulated time-lapses, 5 to 100 photons, moving puncta and
drift; ``benchmarks/results/2026-12-04-temporal-second-pass``): against the fast 2-D network frame by frame,
+1.81 dB live (the fusion alone: +1.23) and +2.62 dB in batch (fusion alone: +1.72), with the moving puncta no
worse than the 2-D network's. Averaging in the variance-stabilised domain instead lost 1.7-3.1 dB at 5 photons in a
probe (the transform's bias at low counts does not average out), so the average is taken in linear units, in
photoelectrons: registration moves a neighbour's pixels onto other sensor pixels, so the camera's offset and gain
(per-pixel maps included) come out before averaging and the reference frame's go back after.

The cost is a second 2-D pass per frame: a live temporal frame costs about 2.1-2.5 fast 2-D frames instead of one
(``Denoiser(second_pass=False)``, ``[live] second_pass = false`` or ``--no-second-pass`` keep the fusion alone;
``Denoiser.push(..., second_pass=False)`` for one frame, which a display that fell behind the camera uses).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from livedenoise.models.temporal import Fused
from livedenoise.normalization import Normalizer

#: Below this many effectively averaged frames (the median over the frame) the fusion's output is kept as it is.
MIN_FRAMES = 1.5
#: Pixels sampled (evenly) for the median number of averaged frames.
_SAMPLES = 1 << 16


def averaged(normalizer: Normalizer, frames: float) -> Normalizer:
    """The noise model of the mean of ``frames`` frames taken under ``normalizer``'s: same offset and gain (maps
    included), the variance ``noise_a * E[e] + noise_b`` divided by ``frames``. The transform then grows by about
    ``sqrt(frames)``, so a ``shift`` (which keeps a bright dark level in the backbone's range) grows with it."""
    n = float(frames)
    if not (math.isfinite(n) and n >= 1.0):
        raise ValueError(f"frames={frames!r}: expected a finite count of at least 1")
    return normalizer.copy(noise_a=normalizer.noise_a / n, noise_b=normalizer.noise_b / n,
                           shift=normalizer.shift * math.sqrt(n))


def in_electrons(normalizer: Normalizer, inversion: str | None = None) -> Normalizer:
    """``normalizer`` for values already in photoelectrons (offset 0, gain 1, no per-pixel maps): an average of frames
    moved onto each other has left the sensor pixels the maps describe. ``inversion``: how the network's outputs are
    inverted where that is not ``normalizer.inversion`` (``TemporalUNet.averages_inversion``)."""
    return normalizer.copy(offset=0.0, gain=1.0, pixel_offset=None, pixel_gain=None,
                           inversion=inversion or normalizer.inversion)


def frames_averaged(frames: torch.Tensor) -> float:
    """The typical number of frames averaged over one frame's pixels (the median of a sample, at least 1)."""
    flat = frames.reshape(-1)
    step = max(1, flat.numel() // _SAMPLES)
    return max(1.0, float(torch.median(flat[::step].float())))


def second_pass(result: Fused, normalizer: Normalizer,
                denoise: Callable[[torch.Tensor], torch.Tensor], inversion: str | None = None) -> torch.Tensor:
    """Frames [N, H, W] in the input units (ADU): ``result.fused`` where nothing was averaged, else the
    denoised average blended with it by the number of frames each pixel's average holds.

    ``result`` must carry the average of the raw frames in electrons (``MotionAdaptiveFusion.fuse(..., raw=
    normalizer.electrons_torch(frames))``): registration moves a neighbour's pixels onto other sensor pixels, so
    the camera's per-pixel offset and gain are taken out before averaging, and the output, like every output, is
    in the ADU of a camera without the fixed pattern (:meth:`Normalizer.inverse_torch`). ``denoise`` maps network
    inputs [M, H, W] to the 2-D network's outputs [M, H, W] (the Denoiser's tiled pass); ``inversion``: how its
    outputs are inverted where that is not ``normalizer.inversion`` (a fine-tuned model whose second pass keeps the
    backbone's 2-D stage: ``TemporalUNet.averages_inversion``).
    """
    fused = normalizer.inverse_torch(result.fused)
    if result.average is None or result.frames is None:
        return fused
    counts = [frames_averaged(f) for f in result.frames]
    todo = [i for i, n in enumerate(counts) if n >= MIN_FRAMES]
    if not todo:
        return fused
    electrons_model = in_electrons(normalizer, inversion)
    models = {i: averaged(electrons_model, counts[i]) for i in todo}
    y = denoise(torch.stack([models[i].forward_torch(result.average[i]) for i in todo]))
    out = fused.clone()
    for j, i in enumerate(todo):
        share = torch.clamp((result.frames[i] - 1.0) / (counts[i] - 1.0), 0.0, 1.0)
        again = normalizer.output_from_electrons_torch(models[i].inverse_torch(y[j]))
        out[i] = share * again + (1.0 - share) * fused[i]
    return out
