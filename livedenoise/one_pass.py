"""A live temporal frame in one 2-D pass: the new raw frame averaged with the frames before it, denoised once.

The temporal backbone's live frame (:mod:`livedenoise.second_pass`) runs the 2-D network twice: on the new frame
(whose result the fusion compares with its neighbours' to find what moved) and on the motion-compensated average
of the raw frames. That costs about 2.1 fast 2-D frames at 512² on a CPU. Here the first pass is left out. A causal
stream has already denoised the frames before the new one, so their *outputs* are the references: each is
registered onto the new frame, and where it agrees with the new *noisy* frame (the local mean of their squared
difference, in noise standard deviations, is no more than the noise's own 1) its raw frame is averaged in, weighted
by the fusion's learned trust in that lag. The average is denoised once, under the noise model of an ``n``-frame
mean (``n``: the median over the frame of the effective number of frames averaged, as the second pass). Where no
neighbour agrees (a moving object) the new frame counts alone.

Measured (``benchmarks/results/2026-12-06-temporal-onepass-probe`` and
``benchmarks/results/2026-12-06-live-one-pass``): at about the fusion alone's cost, ahead of the fusion alone, with
moving puncta better than the 2-D network's; 0.33 dB below the two passes on the simulator's time-lapses, as good as
them on real structure, and 0.82 dB below them as displayed in the quick start's 256² session, where the CPU keeps
up with the two passes (the learned trust per lag averages about 3 frames' worth of a static scene where the second
pass averages up to 5). Hence an option for frames the two passes cannot keep up with. The comparison with a
noisy frame needs a wider neighbourhood than the fusion's comparison of two denoised frames (``SIGMA`` 2 px against
1 px), and a noise model per pixel (the transform's variance over ``n(x)``) made the network see contrast that is
not there (worse than no temporal help at all): hence one ``n`` per frame.

``Denoiser.push(..., one_pass=True)``, ``[live] one_pass = true``, ``live``/``demo --one-pass``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from livedenoise.models.temporal import GaussianBlur, MotionAdaptiveFusion, shift_between, shift_frame
from livedenoise.normalization import Normalizer
from livedenoise.second_pass import MIN_FRAMES, averaged, frames_averaged, in_electrons

#: Width (pixels) of the Gaussian over which a neighbour's agreement with the new noisy frame is measured.
SIGMA = 2.0
#: Agreement scale, in noise standard deviations of the mean squared difference above the noise's own.
AGREEMENT_H = 1.0


@dataclass
class Neighbour:
    """What a causal stream keeps of a frame it denoised in one pass: its raw values in electrons (camera pattern
    out), its output in the network's single-frame units as the mean of the transform of a noisy frame would be
    (:meth:`Normalizer.expected_gat_torch`: comparable with a new noisy frame without the transform's bias), and that
    output's registration spectrum (None without alignment)."""

    electrons: torch.Tensor
    expected: torch.Tensor
    spectrum: torch.Tensor | None


_blur = GaussianBlur(SIGMA)


def lag_trust(fusion: MotionAdaptiveFusion) -> list[float]:
    """The fusion's learned trust in a frame at each lag (1..lags), as numbers."""
    return torch.sigmoid(fusion.trust.detach()).tolist()


def neighbour_from_result(units: torch.Tensor, electrons: torch.Tensor, normalizer: Normalizer,
                          fusion: MotionAdaptiveFusion) -> Neighbour:
    """What one pass keeps of a frame the two passes denoised (a display that changes way): its raw values in
    electrons and its 2-D result ``units`` [H, W] (network units), inverted as the model's outputs are and read as
    the mean of a noisy frame's transform, as :func:`one_pass` keeps its own outputs."""
    single = in_electrons(normalizer)
    expected = single.expected_gat_torch(single.forward_torch(single.inverse_torch(units)))
    return Neighbour(electrons, expected, fusion.spectra(expected))


def one_pass(raw: torch.Tensor, past: Sequence[Neighbour], normalizer: Normalizer, fusion: MotionAdaptiveFusion,
             denoise_frame: Callable[[torch.Tensor], torch.Tensor],
             denoise_average: Callable[[torch.Tensor], torch.Tensor],
             average_inversion: str | None = None,
             trust: Sequence[float] | None = None) -> tuple[torch.Tensor, Neighbour]:
    """The new frame ``raw`` [H, W] (ADU) denoised with the frames before it (``past``, oldest first, at most
    ``fusion.lags`` used): its output in ADU (a camera without the fixed pattern, as every output) and what the
    stream keeps of it for the frames after it.

    ``denoise_frame`` / ``denoise_average`` map network inputs [N, H, W] to the 2-D network's outputs: the first for
    a frame that nothing was averaged with (the first of a series, or a scene that changed), the second for an average
    (a fine-tuned model keeps the backbone's 2-D stage for averages: ``TemporalUNet.averages``, whose outputs are
    inverted the ``average_inversion`` way). The normaliser must apply the variance-stabilising transform.
    ``trust``: the fusion's trust per lag as numbers (:func:`lag_trust`; a caller that keeps them saves a device sync
    per frame).
    """
    scale = normalizer.scale
    electrons = normalizer.electrons_torch(raw)
    single = in_electrons(normalizer)
    noisy = single.forward_torch(electrons)  # network units (noise standard deviation 1 / scale), as forward_torch(raw)
    num, den, sq = electrons.clone(), torch.ones_like(electrons), torch.ones_like(electrons)
    lags = min(len(past), fusion.lags)
    if lags:
        reference = fusion.spectra(noisy)
        trust = lag_trust(fusion) if trust is None else trust
        for lag, old in enumerate(reversed(past[-lags:]), start=1):
            dy, dx = (0, 0) if reference is None or old.spectrum is None else shift_between(
                old.spectrum, reference, (noisy.shape[0], noisy.shape[1]), fusion.max_shift)
            expected, valid = shift_frame(old.expected, dy, dx) if (dy or dx) else (old.expected, None)
            old_electrons = shift_frame(old.electrons, dy, dx)[0] if (dy or dx) else old.electrons
            diff = (noisy - expected).mul_(scale)
            # the local mean squared difference, less the noise's own
            excess = _blur(diff.mul_(diff)[None])[0].sub_(1.0).clamp_(min=0.0)
            w = excess.mul_(-1.0 / AGREEMENT_H**2).exp_().mul_(trust[lag - 1])
            if valid is not None:
                w.mul_(valid)
            num.addcmul_(w, old_electrons)
            den.add_(w)
            sq.addcmul_(w, w)
    frames = frames_averaged(den * den / sq)
    if frames < MIN_FRAMES:  # nothing (much) to average: the 2-D network on the frame, as a 2-D model would
        model = single
        y = denoise_frame(noisy[None])[0]
    else:
        model = averaged(in_electrons(normalizer, average_inversion), frames)
        y = denoise_average(model.forward_torch(num / den)[None])[0]
    out_electrons = model.inverse_torch(y)
    expected = single.expected_gat_torch(single.forward_torch(out_electrons))
    kept = Neighbour(electrons, expected, fusion.spectra(expected))
    return normalizer.output_from_electrons_torch(out_electrons), kept
