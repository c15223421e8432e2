"""OME-XML read and edited with ome-types: the OME schema's own models, not element trees walked by hand.

Three jobs, all on the OME-XML of an OME-TIFF:

* :func:`ome_facts` -- what the readers carry over (pixel sizes, time step, channel names) and the
  livedenoise provenance of a file livedenoise wrote, from one parse;
* :func:`ome_xml_with_provenance` -- the OME-XML of a denoised copy: the input's own document
  (instrument, channels, planes, annotations...) with the output's pixels description, plus provenance;
* :func:`replace_provenance` -- the same document with its provenance annotation replaced (final counts).

ome-types validates what it parses. An input whose OME-XML does not follow the schema is still
read (its pixels do not depend on it), but its metadata is not carried over: the log says so and
names the first schema error, rather than copying a document nobody can check.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from livedenoise.errors import InputDataError

if TYPE_CHECKING:
    from ome_types import OME

log = logging.getLogger("livedenoise")

#: ``Namespace`` of the OME MapAnnotation that holds livedenoise provenance.
PROVENANCE_NAMESPACE = "livedenoise/provenance/1"
PROVENANCE_ID = "Annotation:livedenoise.provenance"


def parse_ome(xml: str | bytes | None, what: str = "OME-XML") -> OME | None:
    """The OME model of ``xml``, or ``None`` (logged, naming ``what`` and the reason) when it is not valid OME."""
    if not xml:
        return None
    from ome_types import from_xml

    text = xml.decode("utf-8", "replace") if isinstance(xml, bytes) else xml
    try:
        with warnings.catch_warnings():  # xsdata warns of each bad value before the parse fails: said once below
            warnings.simplefilter("ignore")
            return from_xml(text)
    except Exception as exc:
        log.warning("%s: its OME-XML does not follow the OME schema (%s); its metadata is not carried over.",
                    what, _schema_error(exc))
        return None


def _schema_error(exc: Exception) -> str:
    """The first error of a failed parse in one line: which element, which field, what was expected."""
    lines = [" ".join(line.split()) for line in str(exc).strip().splitlines()[:3] if line.strip()]
    return ": ".join(lines)[:300] or exc.__class__.__name__


@dataclass
class OmeFacts:
    """What livedenoise takes from an OME-XML document (the keys the TIFF readers use for ImageJ files too)."""

    metadata: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None


def ome_facts(xml: str | bytes | None, what: str = "OME-XML") -> OmeFacts:
    """Pixel sizes, time step and channel names of the first image, and livedenoise provenance, from one parse.

    Cached per document: a file is opened several times in a job (planning, checks, each worker), and parsing
    the OME-XML of 20,000 planes takes ~1 s; each caller gets its own copy."""
    if not xml:
        return OmeFacts()
    text = xml.decode("utf-8", "replace") if isinstance(xml, bytes) else xml
    return copy.deepcopy(_ome_facts(text, what))


@functools.lru_cache(maxsize=16)
def _ome_facts(xml: str, what: str) -> OmeFacts:
    ome = parse_ome(xml, what)
    facts = OmeFacts()
    if ome is None or not ome.images:
        return facts
    facts.provenance = _provenance_of(ome)
    pixels = ome.images[0].pixels
    physical: dict[str, tuple[float, str]] = {}
    for axis in "XYZ":
        size = getattr(pixels, f"physical_size_{axis.lower()}")
        if size:
            physical[axis] = (float(size), getattr(pixels, f"physical_size_{axis.lower()}_unit").value)
    if physical:
        facts.metadata["physical_size"] = physical
    if pixels.time_increment:
        facts.metadata["time_increment"] = (float(pixels.time_increment), pixels.time_increment_unit.value)
    names = [c.name for c in pixels.channels]
    if names and len(names) == pixels.size_c and all(names):
        facts.metadata["channel_names"] = [str(n) for n in names]
    return facts


def read_provenance_xml(xml: str | bytes | None) -> dict[str, Any] | None:
    """The livedenoise provenance stored in an OME-XML document, or ``None``."""
    if not xml:
        return None
    text = xml.decode("utf-8", "replace") if isinstance(xml, bytes) else xml
    if PROVENANCE_NAMESPACE not in text:  # the common case, without parsing a document of 10^5 planes
        return None
    ome = parse_ome(text)
    return _provenance_of(ome) if ome is not None else None


def _provenance_of(ome: OME) -> dict[str, Any] | None:
    if ome.structured_annotations is None:
        return None
    for ann in ome.structured_annotations.map_annotations:
        if ann.namespace == PROVENANCE_NAMESPACE:
            for m in ann.value.ms:
                if m.k == "provenance_json" and m.value:
                    try:
                        prov = json.loads(m.value)
                    except json.JSONDecodeError:
                        return None
                    return prov if isinstance(prov, dict) else None
    return None


def _provenance_items(prov: dict[str, Any]) -> list[tuple[str, str]]:
    """The annotation's key/value pairs: a readable summary for OMERO / Fiji users, then the whole record."""
    model = prov.get("model") or {}
    models = model if isinstance(model, list) else [model]
    return [
        ("software", "livedenoise"),
        ("livedenoise_version", str(prov.get("livedenoise_version", ""))),
        ("date", str(prov.get("date", ""))),
        ("model_name", "; ".join(str(m.get("name", "")) for m in models)),
        ("model_path", "; ".join(str(m.get("path", "")) for m in models)),
        ("model_sha256", "; ".join(str(m.get("sha256", "")) for m in models)),
        ("normalizer", json.dumps([m.get("normalizer") for m in models] if len(models) > 1
                                  else models[0].get("normalizer"))),
        ("source", str((prov.get("input") or {}).get("path", ""))),
        ("axes", str(prov.get("axes", ""))),
        ("output_dtype", str(prov.get("output_dtype", ""))),
        ("provenance_json", json.dumps(prov, default=str)),
    ]


def _set_provenance(ome: OME, provenance: dict[str, Any], *, update: bool) -> None:
    """Replace the livedenoise annotation of ``ome`` by ``provenance``, linked from every image.

    A new copy (``update=False``) keeps the record it replaces under ``previous``: a denoised copy
    denoised again says what came before. An update of the same copy's record (final counts) keeps
    what that record said came before. ``provenance``'s own ``previous`` wins in both cases.
    """
    from ome_types.model import AnnotationRef, Map, MapAnnotation, StructuredAnnotations

    replaced = _provenance_of(ome)
    if ome.structured_annotations is None:
        ome.structured_annotations = StructuredAnnotations()
    sa = ome.structured_annotations
    old_ids = {a.id for a in sa.map_annotations if a.namespace == PROVENANCE_NAMESPACE}
    sa.map_annotations = [a for a in sa.map_annotations if a.namespace != PROVENANCE_NAMESPACE]
    prov = dict(provenance)
    before = (replaced or {}).get("previous") if update else replaced
    if before is not None and "previous" not in prov:
        prov["previous"] = before
    sa.map_annotations.append(MapAnnotation(
        id=PROVENANCE_ID, namespace=PROVENANCE_NAMESPACE,
        value=Map(ms=[Map.M(k=k, value=v) for k, v in _provenance_items(prov)])))
    for image in ome.images:
        image.annotation_refs = [r for r in image.annotation_refs if r.id not in old_ids]
        image.annotation_refs.append(AnnotationRef(id=PROVENANCE_ID))


def _to_xml(ome: OME) -> str:
    from ome_types import to_xml

    from livedenoise import __version__

    ome.creator = f"livedenoise {__version__}"
    return str(to_xml(ome))


def ome_xml_with_provenance(written_xml: str, template_xml: str | None, provenance: dict[str, Any],
                            what: str = "the input") -> str:
    """The OME-XML to store: the input's own OME-XML (when it had one) adapted to the new pixels, plus provenance.

    From ``written_xml`` (what tifffile wrote for the output) come the pixel type, dimension order,
    sizes, TiffData blocks and UUID; everything else (instrument, channels, planes, annotations, ...)
    comes from ``template_xml``. A previous livedenoise provenance annotation is replaced (its
    content is kept under ``previous`` in the new one).
    """
    from ome_types import from_xml

    try:
        written = from_xml(written_xml)
    except Exception as exc:  # metadata carried over from the input that OME does not accept
        raise InputDataError(f"{what}: its metadata cannot be written as valid OME-XML ({_schema_error(exc)}); "
                             "try --format ndtiff or ome-zarr.") from None
    ome = written
    template = parse_ome(template_xml, what) if template_xml else None
    if template is not None:
        if len(template.images) == len(written.images):
            for t_img, w_img in zip(template.images, written.images, strict=True):
                t_pix, w_pix = t_img.pixels, w_img.pixels
                for name in ("type", "dimension_order", "size_x", "size_y", "size_z", "size_c", "size_t",
                             "big_endian", "interleaved", "significant_bits", "tiff_data_blocks"):
                    setattr(t_pix, name, getattr(w_pix, name))
                t_pix.bin_data_blocks = []
                t_pix.metadata_only = None
            template.uuid = written.uuid
            ome = template
        else:
            log.info("OME-XML of the input has %d images, the output %d: writing fresh OME-XML.",
                     len(template.images), len(written.images))
    _set_provenance(ome, provenance, update=False)
    return _to_xml(ome)


def replace_provenance(xml: str, provenance: dict[str, Any]) -> str:
    """``xml`` (an OME-XML livedenoise wrote) with its provenance annotation replaced by ``provenance``."""
    from ome_types import from_xml

    ome = from_xml(xml)
    _set_provenance(ome, provenance, update=True)
    return _to_xml(ome)
