"""napari sample data: the simulated microscope's frames with their ground truth, to try the widgets without a
microscope. (A front end may use the simulator; the product never does.)"""
from __future__ import annotations

from typing import Any

import numpy as np

#: About 20 photons at the brightest structures in a 20 ms frame: the low-light regime livedenoise is for.
_LIGHT_POWER, _EXPOSURE_MS, _PEAK_RATE = 5.0, 20.0, 20000.0


def _frames(n: int, size: int, seed: int, motion: float) -> tuple[np.ndarray, np.ndarray]:
    from simulators.config import load_microscope_config
    from simulators.microscope import SimulatedMicroscope

    sample = {"peak_rate": _PEAK_RATE, "motion": motion, "seed": seed}
    cfg = load_microscope_config(roi_width=size, roi_height=size, light_power=_LIGHT_POWER, exposure_ms=_EXPOSURE_MS,
                                 sample=sample)
    scope = SimulatedMicroscope(cfg)
    frames = [scope.snap() for _ in range(n)]
    return np.stack([f.image for f in frames]), np.stack([f.truth for f in frames])


def _layers(noisy: np.ndarray, truth: np.ndarray, what: str) -> list[tuple[Any, dict, str]]:
    shown = {"contrast_limits": (float(np.percentile(truth, 0.5)), float(np.percentile(truth, 99.9)))}
    return [(truth, {"name": f"{what} (ground truth)", "visible": False, **shown}, "image"),
            (noisy, {"name": f"{what} (noisy)", **shown}, "image")]


def simulated_field(size: int = 256, seed: int = 0) -> list[tuple[Any, dict, str]]:
    """One low-light sCMOS frame of simulated cells (uint16 camera values) and its noise-free expectation."""
    noisy, truth = _frames(1, size, seed, motion=0.0)
    return _layers(noisy[0], truth[0], "simulated field")


def simulated_time_lapse(frames: int = 10, size: int = 256, seed: int = 0) -> list[tuple[Any, dict, str]]:
    """A low-light time-lapse (T, Y, X) of one field with slowly moving structures, and its expectation."""
    noisy, truth = _frames(frames, size, seed, motion=2.0)
    return _layers(noisy, truth, "simulated time-lapse")
