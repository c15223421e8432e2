"""The TIFF / OME-TIFF reader: series, axes, corrupt or truncated files refused when opened."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import InputDataError
from livedenoise.io.axes import _SPARE_LETTERS, AXES, example_axes, validate_axes
from livedenoise.io.dataset import ImageDataset, SourceSpec
from livedenoise.io.omexml import ome_facts
from livedenoise.io.planes import PlaneArray, TiffPlanes, _open_tiff

log = logging.getLogger("livedenoise")

#: The first bytes of a TIFF (little / big endian) and a BigTIFF.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_tiff_file(path: Path) -> bool:
    """True for a regular file that starts with a TIFF or BigTIFF header, whatever its name."""
    try:
        with open(path, "rb") as fh:
            return path.is_file() and fh.read(4) in TIFF_MAGIC
    except OSError:
        return False


def open_tiff_dataset(path: Path, axes: str | None) -> ImageDataset:
    tif = _open_tiff(str(path))
    try:
        return _describe_tiff(path, tif, axes)
    finally:
        tif.close()


def _describe_tiff(path: Path, tif: Any, axes_override: str | None) -> ImageDataset:
    all_series = list(tif.series)
    if not all_series:
        raise InputDataError(f"{path}: the TIFF file contains no images.")
    first = all_series[0]
    same = [s for s in all_series if s.shape == first.shape and s.dtype == first.dtype and s.axes == first.axes]
    if len(same) != len(all_series):
        raise InputDataError(
            f"{path}: holds {len(all_series)} image series of different shapes "
            f"({', '.join(str(s.shape) for s in all_series[:3])}); expected positions of identical shape."
        )
    series_axes = first.axes
    lead_shape = tuple(first.shape[:-2])
    dtype = np.dtype(first.dtype)
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise InputDataError(
            f"{path}: pixel type {dtype} is not supported; expected integer or floating-point grey values.")
    if not series_axes.endswith("YX"):
        raise InputDataError(
            f"{path}: image series has axes {series_axes!r} (shape {first.shape}); expected grey-level planes ending "
            "in YX (RGB / multi-sample pixels are not supported)."
        )
    ome = ome_facts(tif.ome_metadata, str(path)) if tif.is_ome else None
    if not tif.is_ome and _looks_like_ome(tif):  # tifffile then reads it as a plain TIFF, silently
        log.warning("%s: its OME-XML cannot be parsed (truncated or malformed), so its axes and metadata are not used: "
                    "the planes read as axes %s%s.", path, series_axes,
                    "" if axes_override is not None else "; declare the real ones with --axes")
    provenance = ome.provenance if ome else None
    multi = len(all_series) > 1
    n_pages = int(np.prod(lead_shape, dtype=np.int64))
    if axes_override is not None:
        want = validate_axes(axes_override)
        series_want = want[1:] if (multi and want.startswith("P")) else want
        if multi and "P" in series_want:
            raise InputDataError(
                f"--axes {axes_override!r}: {path} stores positions as separate series; P must come first.")
        if len(series_want) != len(first.shape):
            raise InputDataError(
                f"--axes {axes_override!r} names {len(want)} axes but {path} has shape "
                f"{((len(all_series),) if multi else ()) + tuple(first.shape)} "
                f"(axes {('P' if multi else '') + series_axes})."
            )
        series_axes = series_want
    elif provenance and provenance.get("axes"):
        # a file written by livedenoise: restore the exact axes it was given (OME has no 'I' / P)
        want = str(provenance["axes"])
        shape = tuple(int(s) for s in provenance.get("shape", ()))
        if multi and want.startswith("P"):
            want, shape = want[1:], shape[1:]
        if shape and int(np.prod(shape[:-2], dtype=np.int64)) == n_pages and shape[-2:] == tuple(first.shape[-2:]):
            series_axes, lead_shape = want, shape[:-2]
    if series_axes[:-2].count("Q") > 1:
        # tifffile's 'Q' is a dimension no metadata names: one is a plain stack of frames, but two or more would get
        # invented letters that other viewers read as time points (the output's OME-XML must name real axes)
        raise InputDataError(
            f"{path}: has {series_axes[:-2].count('Q')} dimensions that its metadata does not name (shape "
            f"{tuple(first.shape)}, axes {series_axes!r}); declare them with --axes, e.g. --axes "
            f"{example_axes(len(series_axes))}.")
    series_axes = _normalise_tiff_axes(series_axes, path)
    axes = ("P" if multi else "") + series_axes
    validate_axes(axes, what=f"{path}: axes")
    shape = ((len(all_series),) if multi else ()) + lead_shape + tuple(first.shape[-2:])
    offsets: list[int | None] = []
    size = path.stat().st_size
    for s in all_series:
        offsets.append(_check_series_data(path, s, size))
    if "S" in first.axes[:-2] and None in offsets:
        raise InputDataError(f"{path}: grey frames stored as compressed colour samples cannot be read plane by plane; "
                             "re-save them as a grey-level stack.")
    frame_shape = tuple(first.shape[-2:])
    file_dtype = np.dtype(first.dtype).newbyteorder(tif.byteorder).str
    planes = TiffPlanes(str(path), [all_series.index(s) for s in all_series], lead_shape, frame_shape, dtype,
                        offsets, file_dtype, multi)
    fmt = "ome-tiff" if tif.is_ome else ("imagej-tiff" if tif.is_imagej else "tiff")
    metadata = _tiff_metadata(tif, all_series, axes, shape)
    if ome:  # pixel sizes, time step, channel names: from the OME model
        metadata.update(ome.metadata)
    if provenance:
        metadata["provenance"] = provenance
    return ImageDataset(SourceSpec(str(path), "tiff", axes_override), fmt, axes, shape, dtype,
                        PlaneArray(shape, dtype, planes), metadata)


def _normalise_tiff_axes(axes: str, path: Path) -> str:
    """tifffile's generic codes -> ours: 'S' (samples) refused, 'O'/'V'/... -> 'Q'."""
    if "S" in axes:
        raise InputDataError(
            f"{path}: is stored as colour / multi-sample images (axes {axes!r}); expected grey-level images. If these "
            "are grey frames saved as RGB (tifffile does this for 3 or 4 frames), declare their axes, e.g. --axes TYX."
        )
    # tifffile names every unknown dimension 'Q' (e.g. 'QQYX'): give repeats and unknown codes free letters
    spare = [c for c in dict.fromkeys("QI" + _SPARE_LETTERS) if c not in axes]
    out: list[str] = []
    for a in axes:
        if a not in AXES or a in out:
            if not spare:
                raise InputDataError(
                    f"{path}: axes {axes!r} cannot be mapped to distinct axis letters; declare them with --axes.")
            a = spare.pop(0)
        out.append(a)
    result = "".join(out)
    if len(set(result)) != len(result):
        raise InputDataError(
            f"{path}: axes {axes!r} cannot be mapped to distinct axis letters; declare them with --axes.")
    return result


def _check_series_data(path: Path, series: Any, size: int) -> int | None:
    """Data offset of a contiguous series, after checking that every pixel lies inside the file."""
    nbytes = int(np.prod(series.shape, dtype=np.int64)) * np.dtype(series.dtype).itemsize
    offset = series.dataoffset
    if offset is not None:
        if offset + nbytes > size:
            raise InputDataError(
                f"{path}: truncated: its pixel data need {offset + nbytes} bytes but the file has {size}."
            )
        return int(offset)
    pages = list(series.pages)
    if any(p is None for p in pages):
        raise InputDataError(
            f"{path}: some image planes are missing from the TIFF structure (truncated or corrupt file).")
    for page in pages:
        offs, counts = getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())
        if any(o + c > size for o, c in zip(offs, counts, strict=False)):
            raise InputDataError(f"{path}: truncated: image data of page {page.index} lie beyond the end of the file.")
    return None


#: How ImageJ and others spell lengths (lower case, micro sign) -> the OME symbol (OME-XML accepts only its own).
_LENGTH_UNITS = {"um": "µm", "µm": "µm", "micron": "µm", "microns": "µm", "micrometer": "µm", "nm": "nm",
                 "nanometer": "nm", "mm": "mm", "millimeter": "mm", "cm": "cm", "m": "m", "pixel": "pixel"}


def ome_length_unit(unit: str) -> str | None:
    """The OME symbol of a length unit as ImageJ writes it (``um``, ``micron``, ``\\u00B5m``), or ``None`` when unknown.

    An unknown unit leaves the pixel size out rather than writing OME-XML that no OME reader accepts.
    """
    key = unit.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").lower().replace("\u03bc", "µ")
    return _LENGTH_UNITS.get(key)


def _tiff_metadata(tif: Any, series: list[Any], axes: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """Metadata to carry over: the OME-XML itself, or ImageJ / resolution facts mapped to OME terms."""
    meta: dict[str, Any] = {"series_names": [s.name or f"Pos{i}" for i, s in enumerate(series)]}
    page = tif.pages[0]
    if tif.is_ome:
        meta["ome_xml"] = tif.ome_metadata
        return meta
    try:
        res = page.resolution
        unit = int(page.resolutionunit)
    except Exception:  # pragma: no cover - unusual tags
        res, unit = None, 1
    if res and all(r > 0 for r in res):
        meta["resolution"] = (float(res[0]), float(res[1]), unit)
    physical: dict[str, tuple[float, str]] = {}
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij:
        meta["imagej"] = {k: v for k, v in ij.items() if isinstance(v, (str, int, float, bool))}
        ij_unit = ome_length_unit(str(ij.get("unit", "")))
        if res and ij_unit:
            physical["X"] = (1.0 / res[0], ij_unit)
            physical["Y"] = (1.0 / res[1], ij_unit)
        if ij.get("spacing") and ij_unit:
            physical["Z"] = (float(ij["spacing"]), ij_unit)
        if ij.get("finterval"):
            meta["time_increment"] = (float(ij["finterval"]), "s")
        labels = ij.get("Labels")
        if isinstance(labels, (list, tuple)) and "C" in axes and len(labels) == shape[axes.index("C")]:
            meta["channel_names"] = [str(x) for x in labels]
    elif res and unit in (2, 3):
        per_um = {2: 25400.0, 3: 10000.0}[unit]
        physical["X"] = (per_um / res[0], "µm")
        physical["Y"] = (per_um / res[1], "µm")
    if physical:
        meta["physical_size"] = physical
    desc = page.description
    if desc and not tif.is_imagej:
        meta["description"] = desc[:10000]
    if tif.is_shaped:
        meta["shaped"] = True
    return meta


def _looks_like_ome(tif: Any) -> bool:
    """Whether the first page's description is meant as OME-XML (an XML document naming OME), parsed or not."""
    try:
        text = str(tif.pages.first.description or "")[:4096]
    except Exception:  # noqa: BLE001 - no first page or an unreadable tag: nothing to say about its metadata
        return False
    return text.lstrip().startswith("<") and "<OME" in text
