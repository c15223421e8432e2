"""What a fine-tune trains on and what decides its swap, from calibration pairs: one recipe for every front end.

The live session (:meth:`LiveSession.finetune_on`) and an attached acquisition's calibration
(:meth:`AttachedDenoiser.adapt_from_calibration`, napari's *Calibrate*) take the same pairs the same way:

* the camera's fixed pattern is taken out of the averaged references (:mod:`livedenoise.training.fixed_pattern`),
  unless the caller says not to (a camera calibration whose per-pixel maps fit the frames already does it);
* for a temporal model, the last field is held out as a live window: its low frame and first reference frames
  (all at the live settings) fused as the display shows them, scored against the mean of its *other* reference
  frames, with the pattern estimated from the other fields only, so the scored frames shape neither their target
  nor its pattern. It needs ``MIN_FIELDS + 1`` fields when the pattern is removed (3 otherwise) and references of
  at least ``HEAD_FRAMES + 2`` frames; without them the caller's usual held-out choice applies
  (:func:`livedenoise.swap_check.split_held_out`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from livedenoise.acquisition.plans import CalibrationPair
from livedenoise.training.fixed_pattern import MIN_FIELDS, remove_fixed_pattern

#: What the swap is scored on when a temporal model's last field is held out as a live window.
FUSED_SOURCE = ("the last calibration field, fused over 5 live-setting frames as the display shows it, against the "
                "mean of its other reference frames")


@dataclass
class CalibrationSet:
    """Frames to fine-tune on, the held-out pairs to decide the swap on (None: the caller's usual choice), where
    those came from, and what was done to the references' fixed pattern (``FixedPatternRemoval.describe()``)."""

    noisy: list[np.ndarray]
    clean: list[np.ndarray]
    held_out: list[tuple[np.ndarray, np.ndarray]] | None
    source: str | None
    fixed_pattern: dict


def calibration_set(pairs: Sequence[CalibrationPair], *, temporal: bool, remove_pattern: bool,
                    saturation: float | None = None, kept_because: str = "") -> CalibrationSet:
    """The training frames and swap check for ``pairs`` (see the module docstring). ``kept_because``: why the
    pattern is not removed (reported when ``remove_pattern`` is False)."""
    pairs = list(pairs)
    window = None
    if temporal and len(pairs) >= (MIN_FIELDS + 1 if remove_pattern else 3):
        window = pairs[-1].sequence_and_rest()
    train = pairs[:-1] if window is not None else pairs
    highs = [np.asarray(p.high, np.float32) for p in train]
    also = [] if window is None else [window[1]]
    if remove_pattern:
        removal = remove_fixed_pattern(highs, also=also, saturation=saturation)
        references, info = removal.references, removal.describe()
    else:
        references = highs + also
        info = {"removed": False, "fields": len(highs), "note": f"kept: {kept_because or 'not asked to remove it'}",
                "pattern_sd_adu": None}
    held_out = None if window is None else [(window[0], references[-1])]
    return CalibrationSet([p.low for p in train], references[:len(highs)], held_out,
                          None if window is None else FUSED_SOURCE, info)
