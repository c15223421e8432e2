"""May an adapted model replace the one on display? Held-out frames, and a full-frame score on them.

Shared by the live session (:mod:`livedenoise.acquisition.session`) and denoisers attached to the
user's own acquisition (:mod:`livedenoise.attach`): both fine-tune in the background and hot-swap, and
both must only ever swap in a model that is measurably better on *full frames* the fine-tune never
trained on. The fit's own masked/patch validation loss is not enough: it has improved in runs whose
full-image PSNR fell (5 photons: 21.67 -> 21.07 dB).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livedenoise.checkpoint import Checkpoint
from livedenoise.inference import Denoiser
from livedenoise.normalization import Normalizer

SWAP_MARGIN = 0.01
"""Relative margin by which the adapted model's held-out full-frame MSE must beat the backbone's to be swapped in.

The held-out scores are estimates from a few frames, and a swap is not free (the user sees the display change,
and an adapted model that is merely "as good" risks being worse on parts of the sample it never saw), so a tie
or a 0.1 % gain keeps the backbone. Both models are scored against the *same* targets, so the targets' noise
largely cancels in the comparison; 1 % is far below what a useful fine-tune achieves (tens of percent).
"""
#: Self mode: consecutive held-out frame pairs (Noise2Noise targets) scored at most.
SELF_HOLDOUT_PAIRS = 4


@dataclass
class HeldOut:
    """The frames a fine-tune trains on, the (input, target) pairs it never sees, and where those came from."""

    noisy: list[np.ndarray]
    clean: list[np.ndarray] | None
    pairs: list[tuple[np.ndarray, np.ndarray]]
    source: str


def held_out_strips(noisy: list[np.ndarray], clean: list[np.ndarray], fraction: float
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The validation strips :func:`~livedenoise.training.data.split_strips` keeps out of training, as pairs."""
    from livedenoise.training.data import split_strips

    _, val_n = split_strips(list(noisy), fraction)
    _, val_c = split_strips(list(clean), fraction)
    return list(zip(val_n, val_c, strict=False))  # unequal lists: left to the fine-tune's "pairs must match" error


def split_held_out(noisy: list[np.ndarray], clean: list[np.ndarray] | None, validation_fraction: float) -> HeldOut:
    """Choose what to score a fine-tune on when the caller has no separate held-out frames.

    With 3 or more pairs the last pair is kept out of training; with fewer, the bottom rows of each pair,
    which the fine-tune holds out as its validation strips and never trains on; without references
    (self-supervised) consecutive training frames of the same field, each the next one's target.
    """
    noisy = list(noisy)
    if clean is not None and len(noisy) >= 3:
        clean = list(clean)
        return HeldOut(noisy[:-1], clean[:-1], [(noisy[-1], clean[-1])], "calibration pair not used for training")
    if clean is not None:
        return HeldOut(noisy, list(clean), held_out_strips(noisy, list(clean), validation_fraction),
                       "held-out bottom rows of the calibration pairs (fewer than 3 pairs)")
    pairs = [(noisy[i], noisy[i + 1]) for i in range(min(len(noisy) - 1, SELF_HOLDOUT_PAIRS))]
    return HeldOut(noisy, None, pairs, "consecutive training frames (no held-out frames given)")


def held_out_mse(ckpt: Checkpoint, pairs: list[tuple[np.ndarray, np.ndarray]], norm: Normalizer, *,
                 device: str = "auto", second_pass: bool = True, noisy_targets: bool = False) -> float:
    """Mean MSE between ``ckpt``'s full-frame output for each input and its target, both in ``norm``'s
    variance-stabilised units (noise sd 1); saturated pixels are left out.

    An input may be a short sequence [T, H, W] of consecutive frames of one field (oldest first): the output
    scored is then the last frame's as a live display shows it, fused with the frames before it by a temporal
    model (a fresh window; with its ``second_pass`` as the display runs it), denoised alone by a 2-D one.

    With targets whose noise is independent of the input (an average of frames at the same settings, or the
    next frame of the same field), the expected value is the MSE to the truth plus a constant that is the same
    for every model (Noise2Noise), so it ranks models by their error to the truth.

    ``noisy_targets``: each target is one noisy frame (self-supervised mode), whose mean in the stabilised domain is
    the mean of the *transformed* noisy values, below the transform of the mean by the transform's bias (0.14-0.19
    noise sd at 1-3 photoelectrons). Every output estimates the mean, so it is read as the transformed noisy value
    it implies (:meth:`~livedenoise.normalization.Normalizer.expected_gat_torch`) before it is compared; otherwise
    an output that passes noise through, or sits on the biased level, is favoured over one that estimates the mean.
    Averaged references (pairs) are compared as they are (their noise, and with it the bias, is N times smaller).
    """
    if not pairs:
        raise ValueError("no held-out frames to score on")
    den = Denoiser(ckpt, device=device, second_pass=second_pass)
    errors = []
    for i, (x, target) in enumerate(pairs):
        if x.ndim == 3:  # a sequence: the newest frame as shown live
            stream = f"held-out {i}"
            out = [den.push(f, stream=stream) for f in x][-1] if den.is_temporal else den.denoise(x[-1])
            den.drop_stream(stream)
            x = x[-1]
        else:
            out = den.denoise(x)
        predicted = norm.to_stabilised_output(out)  # outputs carry no fixed pattern
        if noisy_targets:
            predicted = _as_noisy_mean(predicted, norm)
        d = predicted - norm.to_stabilised(target)
        sat = norm.saturated_mask(x)
        if sat is not None:
            sat = sat | norm.saturated_mask(target)
            d = d[~sat]
        if d.size:
            errors.append(float(np.mean(d * d)))
    if not errors:
        raise ValueError("every held-out pixel is saturated")
    return float(np.mean(errors))


def _as_noisy_mean(stabilised: np.ndarray, norm: Normalizer) -> np.ndarray:
    """Stabilised values of estimated means (``Normalizer.to_stabilised`` units) -> the mean transformed noisy value
    each implies, in the same units."""
    import torch

    y = torch.from_numpy(np.asarray(stabilised, np.float64) / norm.scale)
    return norm.expected_gat_torch(y).numpy() * norm.scale


def swap_scores(backbone: Checkpoint, adapted: Checkpoint, pairs: list[tuple[np.ndarray, np.ndarray]], *,
                device: str = "auto", second_pass: bool = True, noisy_targets: bool = False
                ) -> tuple[float, float, bool]:
    """(backbone MSE, adapted MSE, swap?) on ``pairs`` in the backbone's stabilised units (its fitted normaliser);
    ``noisy_targets``: see :func:`held_out_mse`."""
    norm = backbone.normalizer
    b = held_out_mse(backbone, pairs, norm, device=device, second_pass=second_pass, noisy_targets=noisy_targets)
    a = held_out_mse(adapted, pairs, norm, device=device, second_pass=second_pass, noisy_targets=noisy_targets)
    return b, a, bool(a < b * (1.0 - SWAP_MARGIN))
