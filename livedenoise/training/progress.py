"""Moved to :mod:`livedenoise.progress` (the one progress display); this path warns and goes away next release."""
from livedenoise._moved import moved_module

__getattr__ = moved_module(__name__, "livedenoise.progress")

__all__ = [  # the old module's public names, so `from old import *` still works (each one warns)
    "fit_progress",
]
