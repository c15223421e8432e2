"""Moved to :mod:`livedenoise.io.omezarr`; this path warns and goes away next release."""
from livedenoise._moved import moved_module

__getattr__ = moved_module(__name__, "livedenoise.io.omezarr")

__all__ = [  # the old module's public names, so `from old import *` still works (each one warns)
    "MAX_OPEN",
    "OmeZarrTarget",
    "ZarrPlanes",
    "create_ome_zarr",
    "forget_open_arrays",
    "is_ome_zarr",
    "ngff_order",
    "open_ome_zarr",
    "update_zarr_provenance",
]
