"""Saved microscopy datasets as lazy arrays with named axes, and the writers of denoised copies.

Why this shape:

* **Lazy, plane-addressed readers.** A dataset may be many times larger than memory, so opening
  one reads only its metadata. Pixels are read plane by plane (a plane = one 2-D frame) through a
  small picklable array-like (:class:`PlaneArray`) that ``dask.array.from_array`` wraps with any
  chunking; a worker process re-opens the file itself instead of receiving pixel data.
* **Named axes, one letter each** (``P`` position, ``T`` time, ``C`` channel, ``Z`` focus,
  ``Y``/``X``, plus the other codes of :data:`AXES`), always ending in ``YX``, ``P`` first. The
  letters are what tifffile and OME use; NDTiff axis *names* (``position``, ``time``, ...) map to
  letters and are kept in ``metadata["axis_names"]`` so an NDTiff copy gets the same names back.
* **Outputs preallocated, then filled by positional writes.** :func:`create_ome_tiff` writes the
  complete OME-TIFF structure (every series, every IFD, the OME-XML with provenance) with no pixel
  data; the file is sparse, so this is instant. Blocks are then written with ``os.pwrite`` at
  their byte offsets. Unlike a memory map, positional writes keep no dirty pages mapped into the
  process (resident memory stays at one block) and are safe when several machines of a cluster
  write disjoint parts of one file on a shared file system. NDTiff (append-only, no random
  access) is assembled at the end from finished blocks kept as ``.npy`` files.
* **Corrupt or truncated files are refused when opened**, not discovered half-way: every series'
  pixel data must lie inside the file, and tifffile's complaints about broken page chains are
  errors.

Modules: :mod:`~livedenoise.io.formats` (which reader opens a path, by content), one reader per format
(:mod:`~livedenoise.io.tiff`, :mod:`~livedenoise.io.ndtiff`, :mod:`~livedenoise.io.omezarr`, and
:mod:`~livedenoise.io.vendor` for ND2 / CZI / LIF through bioio),
:mod:`~livedenoise.io.dataset` and :mod:`~livedenoise.io.planes` (what every reader returns),
:mod:`~livedenoise.io.axes`, :mod:`~livedenoise.io.inputs` (inputs and output names),
:mod:`~livedenoise.io.omexml` (OME-XML through ome-types), :mod:`~livedenoise.io.provenance` (reading it back from
any output) and :mod:`~livedenoise.io.writers`.
"""
from __future__ import annotations

from livedenoise.io.axes import AXES, NDTIFF_LETTERS, validate_axes
from livedenoise.io.dataset import ImageDataset, SourceSpec
from livedenoise.io.formats import READERS, Reader, open_dataset, reader_for
from livedenoise.io.inputs import TIFF_SUFFIXES, InputItem, expand_inputs, output_stem
from livedenoise.io.ndtiff import NDTiffPlanes, is_ndtiff_dataset, read_ndtiff
from livedenoise.io.omexml import PROVENANCE_NAMESPACE, ome_facts, ome_xml_with_provenance, read_provenance_xml
from livedenoise.io.omezarr import is_ome_zarr
from livedenoise.io.planes import PlaneArray, TiffPlanes, read_tiff
from livedenoise.io.provenance import read_provenance
from livedenoise.io.writers import (
    NpyBlockTarget,
    OmeTiffTarget,
    create_ome_tiff,
    ndtiff_coordinates,
    remove_path,
    update_ome_provenance,
    write_ndtiff,
)

__all__ = [
    "AXES",
    "NDTIFF_LETTERS",
    "PROVENANCE_NAMESPACE",
    "READERS",
    "TIFF_SUFFIXES",
    "ImageDataset",
    "InputItem",
    "NDTiffPlanes",
    "NpyBlockTarget",
    "OmeTiffTarget",
    "PlaneArray",
    "Reader",
    "SourceSpec",
    "TiffPlanes",
    "create_ome_tiff",
    "expand_inputs",
    "is_ndtiff_dataset",
    "is_ome_zarr",
    "ndtiff_coordinates",
    "ome_facts",
    "ome_xml_with_provenance",
    "open_dataset",
    "output_stem",
    "read_ndtiff",
    "read_provenance",
    "read_provenance_xml",
    "read_tiff",
    "reader_for",
    "remove_path",
    "update_ome_provenance",
    "validate_axes",
    "write_ndtiff",
]
