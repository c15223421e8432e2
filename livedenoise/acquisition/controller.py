"""Renamed :mod:`livedenoise.acquisition.session` (the live session); this path warns and goes away next release."""
from livedenoise._moved import moved_module

__getattr__ = moved_module(__name__, "livedenoise.acquisition.session")

__all__ = [  # the old module's public names, so `from old import *` still works (each one warns)
    "DISK_CHECK_S",
    "DISK_RESERVE_BYTES",
    "DISK_RESERVE_FRAMES",
    "SELF_HOLDOUT_FRAMES",
    "SELF_NOISE_FRAMES",
    "LiveSession",
    "SessionReport",
]
