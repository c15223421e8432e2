"""The writers of denoised copies: preallocated OME-TIFF filled by positional writes, NDTiff, block staging."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import InputDataError, LivedenoiseError
from livedenoise.io.axes import NDTIFF_LETTERS
from livedenoise.io.dataset import ImageDataset
from livedenoise.io.ndtiff import NDTiffPlanes
from livedenoise.io.omexml import ome_xml_with_provenance, replace_provenance

#: Axes tifffile's OME writer accepts inside one image series (besides Y, X).
_OME_SERIES_AXES = set("TZCQRAHE")


def _pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    # an ndarray is a buffer; numpy's stubs declare __buffer__ for Python >= 3.12 only
    view = memoryview(np.ascontiguousarray(data)).cast("B")  # type: ignore[arg-type]
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:done + (1 << 30)], offset + done)
        if n <= 0:  # pragma: no cover - disk full is raised as OSError by the kernel
            raise OSError("short write")
        done += n


@dataclass(frozen=True)
class OmeTiffTarget:
    """A preallocated OME-TIFF: where each position's pixels start, so blocks can be written in place."""

    path: str
    axes: str
    shape: tuple[int, ...]
    dtype: str
    offsets: tuple[int, ...]  # byte offset of each series' pixel data

    @property
    def has_p(self) -> bool:
        return self.axes.startswith("P")

    def write_block(self, lead_slices: Sequence[slice], data: np.ndarray) -> None:
        """Write ``data`` (the block at ``lead_slices`` of the leading axes; contiguous in one series) and fsync."""
        lead_slices = list(lead_slices)
        p = 0
        if self.has_p:
            p = lead_slices.pop(0).start or 0
        series_lead = self.shape[1:-2] if self.has_p else self.shape[:-2]
        starts = tuple((s.start or 0) for s in lead_slices)
        first = int(np.ravel_multi_index(starts, series_lead)) if series_lead else 0
        frame_bytes = self.shape[-1] * self.shape[-2] * np.dtype(self.dtype).itemsize
        arr = np.ascontiguousarray(data, dtype=np.dtype(self.dtype))
        fd = os.open(self.path, os.O_WRONLY)
        try:
            _pwrite_all(fd, arr, self.offsets[p] + first * frame_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)

    def check(self) -> None:
        """Raise if the file on disk no longer has the layout this target was created with (for --resume)."""
        import tifffile

        try:
            with tifffile.TiffFile(self.path) as tif:
                offsets = tuple(int(s.dataoffset) if s.dataoffset is not None else -1 for s in tif.series)
        except Exception as exc:
            raise LivedenoiseError(
                f"{self.path}: the partial output cannot be read ({exc}); start again with --overwrite.") from None
        if offsets != self.offsets:
            raise LivedenoiseError(
                f"{self.path}: the partial output does not match its resume record; start again with --overwrite.")


def _ome_series_axes(axes: str, lead_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """Axes/shape tifffile's OME writer accepts for one series (unsupported leading axes fold into Q)."""
    if all(a in _OME_SERIES_AXES for a in axes[:-2]):
        return axes, lead_shape
    return "QYX", (int(np.prod(lead_shape, dtype=np.int64)),)


def create_ome_tiff(path: str | os.PathLike[str], dataset: ImageDataset, dtype: np.dtype | str,
                    provenance: dict[str, Any]) -> OmeTiffTarget:
    """Create an OME-TIFF with ``dataset``'s axes, shape and metadata, pixel type ``dtype``, no pixels yet.

    P (positions) become separate OME image series. The file is sparse until written.
    """
    import tifffile
    from tifffile import OmeXmlError

    path = str(path)
    dtype = np.dtype(dtype)
    axes, shape, meta = dataset.axes, dataset.shape, dataset.metadata
    has_p = axes.startswith("P")
    n_series = shape[0] if has_p else 1
    s_axes = axes[1:] if has_p else axes
    s_shape = shape[1:] if has_p else shape
    ome_axes, ome_lead = _ome_series_axes(s_axes, tuple(s_shape[:-2]))
    ome_shape = ome_lead + tuple(s_shape[-2:])
    total = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    names = meta.get("series_names") or [f"Pos{i}" for i in range(n_series)]
    kwargs: dict[str, Any] = {"photometric": "minisblack"}
    res = meta.get("resolution")
    if res:
        kwargs["resolution"] = (res[0], res[1])
        kwargs["resolutionunit"] = res[2]
    image_meta: dict[str, Any] = {"axes": ome_axes}
    for ax, (value, unit) in (meta.get("physical_size") or {}).items():
        image_meta[f"PhysicalSize{ax}"] = value
        image_meta[f"PhysicalSize{ax}Unit"] = unit
    if meta.get("time_increment"):
        image_meta["TimeIncrement"], image_meta["TimeIncrementUnit"] = meta["time_increment"]
    chans = meta.get("channel_names")
    if chans and "C" in ome_axes and len(chans) == ome_shape[ome_axes.index("C")]:
        image_meta["Channel"] = {"Name": list(chans)}
    try:
        with tifffile.TiffWriter(path, bigtiff=total > 2**32 - 2**26, ome=True) as tw:
            for i in range(n_series):
                tw.write(shape=ome_shape, dtype=dtype,
                         metadata={**image_meta, "Name": str(names[i] if i < len(names) else f"Pos{i}")}, **kwargs)
    except (OmeXmlError, ValueError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise InputDataError(f"{dataset.path}: cannot be stored as OME-TIFF with axes {axes} ({exc}); "
                             "try --format ndtiff or declare other --axes.") from None
    with tifffile.TiffFile(path) as tif:
        written_xml = tif.ome_metadata
        offsets = tuple(int(s.dataoffset) for s in tif.series)
    xml = ome_xml_with_provenance(written_xml, meta.get("ome_xml"), provenance, what=str(dataset.path))
    tifffile.tiffcomment(path, xml.encode("utf-8"))
    target = OmeTiffTarget(path, axes, tuple(shape), dtype.str, offsets)
    target.check()
    return target


def update_ome_provenance(path: str | os.PathLike[str], provenance: dict[str, Any]) -> None:
    """Replace the provenance annotation of a livedenoise OME-TIFF (e.g. to add final counts)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    tifffile.tiffcomment(path, replace_provenance(xml, provenance).encode("utf-8"))


@dataclass(frozen=True)
class NpyBlockTarget:
    """Finished blocks as ``.npy`` files (written atomically): the staging area of an NDTiff output."""

    folder: str
    dtype: str

    def block_path(self, index: int) -> Path:
        return Path(self.folder) / f"block-{index:07d}.npy"

    def write_block(self, index: int, data: np.ndarray) -> None:
        final = self.block_path(index)
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(data, dtype=np.dtype(self.dtype)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)


def ndtiff_coordinates(dataset: ImageDataset) -> tuple[list[str], list[list[Any]]]:
    """NDTiff axis names and values for the leading axes of ``dataset`` (originals for NDTiff inputs)."""
    names_map = dataset.metadata.get("axis_names") or {}
    values_map = dataset.metadata.get("axis_values") or {}
    default = {v: k for k, v in NDTIFF_LETTERS.items()}
    names, values = [], []
    for i, a in enumerate(dataset.axes[:-2]):
        names.append(names_map.get(a) or default.get(a) or a.lower())
        if a in values_map:
            values.append(list(values_map[a]))
        elif a == "C" and dataset.metadata.get("channel_names"):
            values.append(list(dataset.metadata["channel_names"]))
        else:
            values.append(list(range(dataset.shape[i])))
    return names, values


def write_ndtiff(folder: str | os.PathLike[str], dataset: ImageDataset,
                 frames: Iterator[tuple[tuple[int, ...], np.ndarray]], provenance: dict[str, Any]) -> None:
    """Write an NDTiff dataset into ``folder`` (created) from ``(leading index, 2-D frame)`` pairs.

    Only images present in an NDTiff input are written (an interrupted acquisition stays sparse);
    per-image metadata of NDTiff inputs is copied, the summary metadata gains ``"livedenoise"``.
    """
    from ndstorage import NDTiffDataset

    folder = Path(folder)
    folder.mkdir(parents=True)
    names, values = ndtiff_coordinates(dataset)
    summary = dict(dataset.metadata.get("ndtiff_summary") or {})
    summary["livedenoise"] = provenance
    planes = dataset.reader.planes if isinstance(dataset.reader.planes, NDTiffPlanes) else None
    out = NDTiffDataset(str(folder), writable=True)
    out.initialize(json.loads(json.dumps(summary, default=str)))
    try:
        for index, frame in frames:
            coords = {n: (int(v[i]) if isinstance(v[i], (int, np.integer)) else v[i])
                      for n, v, i in zip(names, values, index, strict=True)}
            if planes is not None:
                meta = planes.read_metadata(index)
                if meta is None:
                    continue
            else:
                meta = {"Width": int(frame.shape[1]), "Height": int(frame.shape[0]),
                        "PixelType": "GRAY8" if frame.dtype == np.uint8 else "GRAY16"}
            out.put_image(coords, np.ascontiguousarray(frame), meta)
    finally:
        out.finish()
        out.close()


def remove_path(path: str | os.PathLike[str]) -> None:
    """Delete a file or folder we created (missing is fine)."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
