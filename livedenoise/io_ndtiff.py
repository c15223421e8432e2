"""Moved to :mod:`livedenoise.io.ndtiff`; this path warns and goes away next release."""
from livedenoise._moved import moved_module

__getattr__ = moved_module(__name__, "livedenoise.io.ndtiff")

__all__ = [  # the old module's public names, so `from old import *` still works (each one warns)
    "AxisValue",
    "NDTiffArray",
    "dataset_axes",
    "iter_images",
    "open_ndtiff",
    "read_ndtiff",
]
