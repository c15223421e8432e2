"""What to acquire: calibration pairs and the live series, independent of the acquisition library."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Illumination:
    """Exposure (ms) and light power (percent, ``None`` = leave the light source as it is)."""

    exposure_ms: float
    power: float | None = None


@dataclass(frozen=True)
class PairPlan:
    """Calibration pairs: at each stage position a low-SNR frame (the live settings) and a high-SNR reference."""

    positions: list[tuple[float, float]]
    low: Illumination
    high: Illumination
    reference: Literal["exposure", "power", "average"] = "exposure"
    average: int = 16


@dataclass(frozen=True)
class LivePlan:
    """The live series: illumination, minimum interval between frames, and the stage position."""

    illumination: Illumination
    interval_ms: float = 0.0
    position: tuple[float, float] | None = None


@dataclass
class CalibrationPair:
    """A low-SNR frame and its high-SNR reference at one position (raw camera values)."""

    position: int
    low: np.ndarray
    high: np.ndarray
    info: dict = field(default_factory=dict)
