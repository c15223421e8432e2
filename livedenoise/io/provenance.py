"""livedenoise provenance of an output, read back from any of its formats (OME-TIFF, NDTiff, OME-Zarr).

In OME-TIFFs it is an OME MapAnnotation, read and written through ome-types (:mod:`livedenoise.io.omexml`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from livedenoise.io.ndtiff import _open_ndstorage, is_ndtiff_dataset
from livedenoise.io.omexml import read_provenance_xml


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Provenance of a livedenoise output (OME-TIFF file, NDTiff or OME-Zarr folder), or ``None``."""
    p = Path(path)
    if p.is_dir() and (p / "zarr.json").is_file():  # OME-Zarr: the root group's "livedenoise" attribute
        try:
            prov = json.loads((p / "zarr.json").read_text()).get("attributes", {}).get("livedenoise")
        except (OSError, json.JSONDecodeError):
            return None
        return prov if isinstance(prov, dict) else None
    if is_ndtiff_dataset(p):
        ds = _open_ndstorage(str(p))
        try:
            prov = (ds.summary_metadata or {}).get("livedenoise")
        finally:
            ds.close()
        return prov if isinstance(prov, dict) else None
    import tifffile

    with tifffile.TiffFile(p) as tif:
        return read_provenance_xml(tif.ome_metadata) if tif.is_ome else None
