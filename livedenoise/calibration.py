"""Renamed :mod:`livedenoise.camera_calibration` (the camera's per-pixel maps, as opposed to the live session's
calibration *pairs*); this path warns and goes away next release."""
from livedenoise._moved import moved_module

__getattr__ = moved_module(__name__, "livedenoise.camera_calibration")

__all__ = [  # the old module's public names, so `from old import *` still works (each one warns)
    "FORMAT", "CameraCalibration", "calibrate",
]
