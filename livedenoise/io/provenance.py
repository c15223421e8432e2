"""livedenoise provenance inside OME-XML: written as a MapAnnotation, read back from any OME-TIFF."""
from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from livedenoise.io.ndtiff import _open_ndstorage, is_ndtiff_dataset

log = logging.getLogger("livedenoise")


OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
#: ``Namespace`` of the OME MapAnnotation that holds livedenoise provenance.
PROVENANCE_NAMESPACE = "livedenoise/provenance/1"
PROVENANCE_ID = "Annotation:livedenoise.provenance"


def _ns(tag: str) -> str:
    return tag[1:].split("}")[0] if tag.startswith("{") else ""


def read_provenance_xml(xml: str | None) -> dict[str, Any] | None:
    """The livedenoise provenance stored in an OME-XML document, or ``None``."""
    if not xml:
        return None
    try:
        root = ET.fromstring(xml.encode("utf-8") if isinstance(xml, str) else xml)
    except ET.ParseError:
        return None
    for ann in root.iter():
        if ann.tag.endswith("MapAnnotation") and ann.get("Namespace") == PROVENANCE_NAMESPACE:
            for m in ann.iter():
                if m.tag.endswith("}M") or m.tag == "M":
                    if m.get("K") == "provenance_json" and m.text:
                        try:
                            return json.loads(m.text)
                        except json.JSONDecodeError:
                            return None
    return None


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


def _provenance_items(prov: dict[str, Any]) -> list[tuple[str, str]]:
    model = prov.get("model") or {}
    models = model if isinstance(model, list) else [model]
    items = [
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
    return items


def ome_xml_with_provenance(written_xml: str, template_xml: str | None, provenance: dict[str, Any]) -> str:
    """The OME-XML to store: the input's own OME-XML (when it had one) adapted to the new pixels, plus provenance.

    From ``written_xml`` (what tifffile wrote for the output) come the pixel type, dimension order,
    sizes, TiffData blocks and UUID; everything else (instrument, channels, planes, annotations, ...)
    comes from ``template_xml``. A previous livedenoise provenance annotation is replaced (its
    content is kept under ``previous`` in the new one).
    """
    written = ET.fromstring(written_xml.encode("utf-8"))
    root = written
    ns = _ns(written.tag)
    if template_xml:
        try:
            template = ET.fromstring(template_xml.encode("utf-8") if isinstance(template_xml, str) else template_xml)
        except ET.ParseError:
            template = None
        if template is not None and _ns(template.tag) == ns:
            t_images = template.findall(f"{{{ns}}}Image")
            w_images = written.findall(f"{{{ns}}}Image")
            if len(t_images) == len(w_images):
                for t_img, w_img in zip(t_images, w_images, strict=True):
                    _adapt_pixels(t_img.find(f"{{{ns}}}Pixels"), w_img.find(f"{{{ns}}}Pixels"), ns)
                for key in ("UUID", "Creator"):
                    value = written.get(key)
                    if value:
                        template.set(key, value)
                root = template
            else:
                log.info("OME-XML of the input has %d images, the output %d: writing fresh OME-XML.",
                         len(t_images), len(w_images))
    _set_provenance(root, ns, provenance)
    from livedenoise import __version__

    root.set("Creator", f"livedenoise {__version__}")
    ET.register_namespace("", ns)
    ET.register_namespace("xsi", "http://www.w3.org/2001/XMLSchema-instance")
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")


def _adapt_pixels(t_pix: ET.Element | None, w_pix: ET.Element | None, ns: str) -> None:
    if t_pix is None or w_pix is None:
        return
    for attr in ("BigEndian", "Interleaved", "SignificantBits"):
        t_pix.attrib.pop(attr, None)
    for attr in ("Type", "DimensionOrder", "SizeX", "SizeY", "SizeZ", "SizeC", "SizeT", "BigEndian", "Interleaved"):
        value = w_pix.get(attr)
        if value is not None:
            t_pix.set(attr, value)
    for child in list(t_pix):
        if child.tag in (f"{{{ns}}}TiffData", f"{{{ns}}}BinData", f"{{{ns}}}MetadataOnly"):
            t_pix.remove(child)
    children = list(t_pix)
    insert_at = max([i + 1 for i, c in enumerate(children) if c.tag == f"{{{ns}}}Channel"], default=0)
    for k, td in enumerate(w_pix.findall(f"{{{ns}}}TiffData")):
        t_pix.insert(insert_at + k, td)


def _set_provenance(root: ET.Element, ns: str, provenance: dict[str, Any]) -> None:
    q = lambda tag: f"{{{ns}}}{tag}"  # noqa: E731
    previous = None
    sa = root.find(q("StructuredAnnotations"))
    if sa is not None:
        for ann in list(sa):
            if ann.tag == q("MapAnnotation") and ann.get("Namespace") == PROVENANCE_NAMESPACE:
                if previous is None:
                    previous = read_provenance_xml(ET.tostring(root, encoding="unicode"))
                sa.remove(ann)
                for img in root.findall(q("Image")):
                    for ref in img.findall(q("AnnotationRef")):
                        if ref.get("ID") == ann.get("ID"):
                            img.remove(ref)
    else:
        sa = ET.Element(q("StructuredAnnotations"))
        children = list(root)
        last_image = max([i for i, c in enumerate(children) if c.tag == q("Image")], default=len(children) - 1)
        root.insert(last_image + 1, sa)
    prov = dict(provenance)
    if previous is not None and "previous" not in prov:
        prov["previous"] = previous
    ann = ET.SubElement(sa, q("MapAnnotation"), {"ID": PROVENANCE_ID, "Namespace": PROVENANCE_NAMESPACE})
    value = ET.SubElement(ann, q("Value"))
    for k, v in _provenance_items(prov):
        m = ET.SubElement(value, q("M"), {"K": k})
        m.text = v
    for img in root.findall(q("Image")):
        ET.SubElement(img, q("AnnotationRef"), {"ID": PROVENANCE_ID})
