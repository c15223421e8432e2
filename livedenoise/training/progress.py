"""Moved to :mod:`livedenoise.progress` (the one progress display); this path warns and goes away next release."""
from livedenoise._moved import moved_module

__getattr__ = moved_module(__name__, "livedenoise.progress")
