"""What the user named (files, folders, datasets) expanded into inputs, each with its output name."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livedenoise.errors import InputDataError
from livedenoise.io.ndtiff import is_ndtiff_dataset
from livedenoise.io.omezarr import is_ome_zarr
from livedenoise.io.vendor import VENDOR_SUFFIXES

TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")


@dataclass(frozen=True)
class InputItem:
    """One dataset to process and where its output goes, relative to the output folder."""

    path: Path
    output_stem: str  # e.g. "cells" or "folder/cells"


def output_stem(path: Path) -> str:
    name = path.name
    for suffix in (*TIFF_SUFFIXES, *VENDOR_SUFFIXES, ".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def expand_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[InputItem]:
    """Files stay files, NDTiff folders stay datasets, other folders expand to their TIFF / ND2 / CZI / LIF files and
    NDTiff / OME-Zarr datasets (by name; each file is then read by its content)."""
    items: list[InputItem] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputDataError(f"{p}: no such file or folder.")
        if p.is_file() or is_ndtiff_dataset(p) or is_ome_zarr(p):
            items.append(InputItem(p, output_stem(p)))
            continue
        if not p.is_dir():
            raise InputDataError(f"{p}: not a regular file or folder (a device, pipe or socket); expected TIFF / "
                                 "OME-TIFF, ND2, CZI or LIF files, folders of them, NDTiff datasets or OME-Zarr "
                                 "images.")
        children = sorted(p.iterdir(), key=lambda c: _natural_key(c.name))
        found = [c for c in children
                 if (c.is_file() and c.name.lower().endswith((*TIFF_SUFFIXES, *VENDOR_SUFFIXES))
                     and not c.name.startswith("."))
                 or is_ndtiff_dataset(c) or is_ome_zarr(c)]
        if not found:
            raise InputDataError(f"{p}: folder holds no TIFF files (.tif, .tiff, .ome.tif), no ND2 / CZI / LIF files, "
                                 "no NDTiff datasets and no OME-Zarr images.")
        items.extend(InputItem(c, f"{p.name}/{output_stem(c)}") for c in found)
    if not items:
        raise InputDataError("No input given; expected TIFF / OME-TIFF, ND2, CZI or LIF files, folders of them, "
                             "NDTiff datasets or OME-Zarr images.")
    return items


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]
