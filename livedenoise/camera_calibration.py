"""Camera calibration: per-pixel offset, read-noise variance and gain of an sCMOS camera.

Method (Huang et al. 2013, Nat. Methods 10:653): with the shutter closed, the per-pixel mean of many
dark frames is the offset and their variance the read-noise variance. Under uniform illumination at
several intensities k, each pixel's temporal variance grows linearly with its mean::

    var_k - read_var = gain * (mean_k - offset)

so the gain is the least-squares slope through the origin over the intensities. Knowing the three maps
turns ADU into photoelectrons, which is what lets the denoiser see noise of known scale on any camera.
Calibrations are stored as safetensors (numpy arrays + JSON metadata; nothing is unpickled).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import InputDataError, LivedenoiseError

FORMAT = "livedenoise-camera-calibration/1"


@dataclass
class CameraCalibration:
    """Per-pixel maps of one camera (ROI) in ADU; ``gain`` in ADU per photoelectron."""

    offset: np.ndarray
    read_var: np.ndarray
    gain: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.offset.shape

    def summary(self) -> dict[str, float]:
        """Median values a normaliser can use when per-pixel maps do not match the frame (other ROI)."""
        return {
            "offset": float(np.median(self.offset)),
            "read_var": float(np.median(self.read_var)),
            "gain": float(np.median(self.gain)),
            "read_noise_e": float(np.median(np.sqrt(self.read_var) / self.gain)),
        }

    def _maps_for(self, image: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
        if image.shape[-2:] == self.shape:
            return self.offset, self.gain
        s = self.summary()  # a different ROI or binning: fall back to the medians
        return s["offset"], s["gain"]

    def to_electrons(self, adu: np.ndarray) -> np.ndarray:
        """ADU -> photoelectrons: (ADU - offset) / gain, per pixel when the frame matches the calibrated sensor."""
        offset, gain = self._maps_for(adu)
        return ((np.asarray(adu, np.float32) - offset) / gain).astype(np.float32)

    def to_adu(self, electrons: np.ndarray) -> np.ndarray:
        """Photoelectrons -> ADU (inverse of :meth:`to_electrons`, without rounding)."""
        offset, gain = self._maps_for(electrons)
        return (np.asarray(electrons, np.float32) * gain + offset).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write a ``.safetensors`` file with the three maps and JSON metadata."""
        from safetensors.numpy import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        meta = {"format": FORMAT, "info": json.dumps(self.info), "summary": json.dumps(self.summary())}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"offset": self.offset.astype(np.float32), "read_var": self.read_var.astype(np.float32),
                       "gain": self.gain.astype(np.float32)}, str(tmp), metadata=meta)
            os.chmod(tmp, 0o644)  # safetensors writes 0600; a calibration is shared (a core's users, cluster workers)
            tmp.replace(path)
        except Exception as exc:  # OSError, or safetensors' own I/O error (a full disk)
            if tmp.parent.is_dir():
                tmp.unlink(missing_ok=True)
            raise LivedenoiseError(f"Cannot write the camera calibration {path}: "
                                   f"{getattr(exc, 'strerror', None) or exc}; "
                                   "choose a writable path with -o.") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> CameraCalibration:
        """Read a calibration written by :meth:`save`, with a clear error for missing or corrupt files."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InputDataError(f"{path}: camera calibration file not found "
                                 "(make one with `livedenoise calibrate-camera`)")
        try:
            with safe_open(str(path), framework="numpy") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise InputDataError(f"{path}: not a livedenoise camera calibration of this version (its format "
                                         f"is {meta.get('format')!r}, expected {FORMAT!r}); expected the file "
                                         "`livedenoise calibrate-camera` writes")
                maps = {k: fh.get_tensor(k) for k in ("offset", "read_var", "gain")}
        except InputDataError:
            raise
        except Exception as exc:  # safetensors raises several types for truncated/corrupt headers
            raise InputDataError(f"{path}: unreadable camera calibration ({exc}); expected the .safetensors file "
                                 "`livedenoise calibrate-camera` writes") from None
        return cls(info=json.loads(meta.get("info", "{}")), **maps)


def _check_stack(stack: np.ndarray, what: str, min_frames: int = 2) -> np.ndarray:
    arr = np.asarray(stack)
    if arr.ndim != 3:
        raise InputDataError(f"{what}: expected a stack of frames (N, Y, X), got {arr.ndim} dimensions {arr.shape}")
    if arr.shape[0] < min_frames:
        raise InputDataError(f"{what}: need at least {min_frames} frames to estimate variance, got {arr.shape[0]}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputDataError(f"{what}: expected numeric pixels, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputDataError(f"{what}: contains NaN or infinite pixels")
    return arr


def _mean_var(stack: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and unbiased variance, accumulated in float64 chunks to bound memory."""
    n = stack.shape[0]
    s = np.zeros(stack.shape[1:], np.float64)
    s2 = np.zeros_like(s)
    ref = stack[0].astype(np.float64)  # shift for numerical stability
    for i in range(0, n, chunk):
        block = stack[i:i + chunk].astype(np.float64) - ref
        s += block.sum(0)
        s2 += (block * block).sum(0)
    mean = s / n
    var = (s2 - n * mean * mean) / (n - 1)
    return mean + ref, var


def calibrate(dark: np.ndarray, flats: Sequence[np.ndarray], *,
              info: dict[str, Any] | None = None) -> CameraCalibration:
    """Estimate offset, read variance and gain maps from a dark stack and flat stacks at several intensities.

    ``flats`` is a list of (N, Y, X) stacks, each at one uniform illumination level; at least two levels
    (more is better) spanning a good part of the dynamic range without saturating.
    """
    # the files the stacks came from (info's "dark" and "flats", as calibrate-camera records them) name them in errors
    flat_files = list((info or {}).get("flats") or [])
    dark_name = f"dark frames {(info or {}).get('dark')}" if (info or {}).get("dark") else "dark frames"
    dark = _check_stack(dark, dark_name)
    if len(flats) < 1:
        raise InputDataError("flat frames: need stacks at one or more illumination levels (ideally 3-8)")
    offset, read_var = _mean_var(dark)
    num = np.zeros_like(offset)
    den = np.zeros_like(offset)
    levels = []
    for k, flat in enumerate(flats):
        name = f"flat stack {flat_files[k]}" if k < len(flat_files) else f"flat stack {k}"
        flat = _check_stack(flat, name)
        if flat.shape[1:] != dark.shape[1:]:
            raise InputDataError(f"{name}: frame size {flat.shape[1:]} differs from the dark frames "
                                 f"{dark.shape[1:]}")
        mean, var = _mean_var(flat)
        signal = mean - offset
        num += (var - read_var) * signal
        den += signal * signal
        levels.append(float(np.median(signal)))
    if min(levels) <= 0:
        k = int(np.argmin(levels))
        which = flat_files[k] if k < len(flat_files) else f"level {k}"
        raise InputDataError(f"flat frames: {which} is not brighter than the dark frames "
                             f"(median signal per level: {[round(v, 2) for v in levels]} ADU)")
    gain = num / den
    bad = ~np.isfinite(gain) | (gain <= 0)
    if bad.any():  # dead/saturated pixels: use the median so conversions stay finite
        gain[bad] = np.median(gain[~bad]) if (~bad).any() else 1.0
    meta = {"dark_frames": int(dark.shape[0]), "flat_levels_adu": levels,
            "flat_frames": [int(np.shape(f)[0]) for f in flats]}
    meta.update(info or {})
    return CameraCalibration(offset.astype(np.float32), read_var.astype(np.float32), gain.astype(np.float32), meta)
