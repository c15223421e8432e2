"""Which reader opens a path, decided by what the path holds, not by its name (nd2's reader protocol).

Every format is one :class:`Reader` in :data:`READERS`: it says whether it *claims* a path (a TIFF
header in the file's first bytes, an ``NDTiff.index`` in the folder, OME-Zarr group metadata) and
opens what it claims lazily, as an :class:`~livedenoise.io.dataset.ImageDataset`. :func:`open_dataset`
asks them in order, so a ``.tif`` that is really a PNG is named as such instead of failing deep in a
parser, and a new format is one more entry here, not another branch elsewhere (the Nikon ND2, Zeiss CZI
and Leica LIF readers, through bioio, are one such entry: :mod:`~livedenoise.io.vendor`).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from livedenoise.errors import InputDataError
from livedenoise.io.dataset import ImageDataset
from livedenoise.io.ndtiff import is_ndtiff_dataset, open_ndtiff_dataset
from livedenoise.io.omezarr import is_ome_zarr, open_ome_zarr
from livedenoise.io.tiff import is_tiff_file, open_tiff_dataset
from livedenoise.io.vendor import is_vendor_file, open_vendor_dataset


class Reader(Protocol):
    """One input format: whether it claims a path (by content) and how it opens it."""

    @property
    def name(self) -> str: ...

    @property
    def takes_axes(self) -> bool:
        """Whether ``--axes`` may declare the axes (formats that store their own axes refuse it)."""
        ...

    def claims(self, path: Path) -> bool: ...

    def open(self, path: Path, axes: str | None) -> ImageDataset: ...


@dataclass(frozen=True)
class FormatReader:
    """A :class:`Reader` made of two functions."""

    name: str
    takes_axes: bool
    _claims: Callable[[Path], bool]
    _open: Callable[[Path, str | None], ImageDataset]

    def claims(self, path: Path) -> bool:
        return self._claims(path)

    def open(self, path: Path, axes: str | None) -> ImageDataset:
        return self._open(path, axes)


#: The formats livedenoise reads, asked in this order.
READERS: list[Reader] = [
    FormatReader("OME-Zarr", False, is_ome_zarr, lambda path, axes: open_ome_zarr(path)),
    FormatReader("NDTiff", False, is_ndtiff_dataset, lambda path, axes: open_ndtiff_dataset(path)),
    FormatReader("TIFF", True, is_tiff_file, open_tiff_dataset),
    # recognised without bioio, so a missing [formats] extra is named instead of "not a TIFF"
    FormatReader("ND2/CZI/LIF (bioio)", False, is_vendor_file, lambda path, axes: open_vendor_dataset(path)),
]


def reader_for(path: str | os.PathLike[str]) -> Reader:
    """The reader that claims ``path``, or one :class:`InputDataError` saying what the path is and what is read."""
    p = Path(path)
    if not p.exists():
        raise InputDataError(f"{p}: no such file or folder.")
    for reader in READERS:
        if reader.claims(p):
            return reader
    if p.is_dir():
        raise InputDataError(f"{p}: a folder that is neither an NDTiff dataset (no NDTiff.index) nor an OME-Zarr; "
                             "pass its image files or the folder to `livedenoise denoise` to process them one by one.")
    if not p.is_file():
        raise InputDataError(f"{p}: not a regular file or folder (a device, pipe or socket); expected TIFF / OME-TIFF, "
                             "ND2, CZI or LIF files, NDTiff or OME-Zarr folders.")
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise InputDataError(f"{p}: cannot be read ({exc.strerror or exc}).") from None
    what = ("the file is empty" if not head
            else f"it starts with {head[:4]!r}, not a TIFF, Nikon ND2, Zeiss CZI or Leica LIF header")
    raise InputDataError(f"{p}: not a readable TIFF file ({what}); livedenoise reads TIFF / OME-TIFF files, "
                         "ND2 / CZI / LIF files (with the [formats] extra) and NDTiff or OME-Zarr folders.")


def open_dataset(path: str | os.PathLike[str], axes: str | None = None) -> ImageDataset:
    """Open a TIFF / OME-TIFF, ND2, CZI or LIF file, an NDTiff dataset folder or an OME-Zarr lazily (metadata only).

    ``axes`` declares (or overrides) the axis letters of a TIFF's image series, e.g. ``"TZCYX"``
    for a plain multi-page file written as a hyperstack; it must name every dimension.
    """
    p = Path(path)
    reader = reader_for(p)
    if axes is not None and not reader.takes_axes:
        raise InputDataError(f"{p}: --axes applies to TIFF files; {reader.name} datasets declare their own axes.")
    return reader.open(p, axes)
