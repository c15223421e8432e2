"""OME-XML through ome-types: metadata read from it, the input's document carried into outputs, provenance kept."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
from ome_types import from_xml, to_xml
from ome_types.model import AnnotationRef, Instrument, Map, MapAnnotation, Objective

from livedenoise.io import create_ome_tiff, open_dataset, read_provenance, update_ome_provenance
from livedenoise.io.omexml import PROVENANCE_NAMESPACE, ome_facts
from livedenoise.io.tiff import ome_length_unit


def write_ome(path, data, channels=("GFP", "RFP")):
    """A 2-position T C Z Y X OME-TIFF, as a microscope writes it (pixel sizes, channel names, time step)."""
    with tifffile.TiffWriter(path, ome=True) as tw:
        for p in range(data.shape[0]):
            tw.write(data[p], photometric="minisblack",
                     metadata={"axes": "TCZYX", "Name": f"pos{p}", "Channel": {"Name": list(channels)},
                               "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "PhysicalSizeZ": 2.0,
                               "TimeIncrement": 1.5, "TimeIncrementUnit": "s"})


def enrich(path):
    """Add what a real acquisition's OME-XML holds and tifffile does not write: an instrument, a lab annotation."""
    with tifffile.TiffFile(path) as tif:
        ome = from_xml(tif.ome_metadata)
    ome.instruments.append(Instrument(id="Instrument:0", objectives=[Objective(id="Objective:0", lens_na=1.4,
                                                                              nominal_magnification=60.0)]))
    ome.structured_annotations.map_annotations.append(MapAnnotation(
        id="Annotation:lab", namespace="lab/notes", value=Map(ms=[Map.M(k="strain", value="HeLa H2B-GFP")])))
    for image in ome.images:
        image.annotation_refs.append(AnnotationRef(id="Annotation:lab"))
    tifffile.tiffcomment(path, to_xml(ome).encode("utf-8"))


def provenance_annotations(path):
    with tifffile.TiffFile(path) as tif:
        ome = from_xml(tif.ome_metadata)  # the output is valid OME: ome-types parses it (and validates it)
    anns = [a for a in ome.structured_annotations.map_annotations if a.namespace == PROVENANCE_NAMESPACE]
    refs = [[r.id for r in im.annotation_refs if r.id == anns[0].id] for im in ome.images] if anns else []
    return ome, anns, refs


@pytest.fixture()
def data():
    return (np.random.default_rng(0).poisson(40, size=(2, 3, 2, 2, 24, 32)) + 100).astype(np.uint16)


def test_pixel_sizes_time_step_and_channel_names_come_from_the_ome_model(tmp_path, data):
    write_ome(tmp_path / "in.ome.tif", data)
    ds = open_dataset(tmp_path / "in.ome.tif")
    assert ds.metadata["physical_size"] == {"X": (0.65, "µm"), "Y": (0.65, "µm"), "Z": (2.0, "µm")}
    assert ds.metadata["time_increment"] == (1.5, "s")
    assert ds.metadata["channel_names"] == ["GFP", "RFP"]
    assert "provenance" not in ds.metadata
    assert ome_facts(None).metadata == {} and ome_facts("<not xml").metadata == {}


def test_an_outputs_ome_xml_is_the_inputs_document_with_the_outputs_pixels(tmp_path, data):
    write_ome(tmp_path / "in.ome.tif", data)
    enrich(tmp_path / "in.ome.tif")
    ds = open_dataset(tmp_path / "in.ome.tif")
    target = create_ome_tiff(tmp_path / "out.ome.tif", ds, np.float32,
                             {"model": {"name": "m1", "sha256": "aa"}, "date": "d1", "axes": ds.axes})
    target.write_block([slice(1, 2), slice(0, 3), slice(0, 2), slice(0, 2)],
                       np.full((1, 3, 2, 2, 24, 32), 7, np.float32))
    ome, anns, refs = provenance_annotations(tmp_path / "out.ome.tif")
    with tifffile.TiffFile(tmp_path / "out.ome.tif") as tif:
        assert tif.series[1].asarray().min() == 7 and tif.series[0].dtype == np.float32
        out_uuid = from_xml(tif.ome_metadata).uuid
    # carried over from the input
    assert ome.instruments[0].objectives[0].lens_na == 1.4
    assert [a.value.ms[0].value for a in ome.structured_annotations.map_annotations if a.namespace == "lab/notes"] \
        == ["HeLa H2B-GFP"]
    assert all("Annotation:lab" in [r.id for r in im.annotation_refs] for im in ome.images)
    assert [c.name for c in ome.images[0].pixels.channels] == ["GFP", "RFP"]
    assert ome.images[0].pixels.time_increment == 1.5 and [im.name for im in ome.images] == ["pos0", "pos1"]
    # the output's own pixels, not the input's
    pix = ome.images[0].pixels
    assert pix.type.value == "float" and (pix.size_t, pix.size_c, pix.size_z) == (3, 2, 2)
    assert all(td.uuid is None or td.uuid.value == out_uuid for td in pix.tiff_data_blocks)
    assert ome.uuid == out_uuid and ome.creator.startswith("livedenoise")
    # one provenance annotation, referenced once by each image
    assert len(anns) == 1 and refs == [[anns[0].id]] * 2
    assert read_provenance(tmp_path / "out.ome.tif")["model"]["name"] == "m1"


def test_denoising_a_denoised_copy_keeps_the_chain_and_final_updates_keep_it(tmp_path, data):
    write_ome(tmp_path / "in.ome.tif", data)
    first = create_ome_tiff(tmp_path / "one.ome.tif", open_dataset(tmp_path / "in.ome.tif"), np.float32,
                            {"model": {"name": "m1"}, "date": "d1"})
    update_ome_provenance(first.path, {"model": {"name": "m1"}, "date": "d1", "completed": "c1"})
    assert "previous" not in read_provenance(first.path)
    second = create_ome_tiff(tmp_path / "two.ome.tif", open_dataset(first.path), np.float32,
                             {"model": {"name": "m2"}, "date": "d2"})
    prov = read_provenance(second.path)
    assert prov["model"]["name"] == "m2" and prov["previous"]["model"]["name"] == "m1"
    assert prov["previous"]["completed"] == "c1"
    # the final update (counts, completion time) replaces this copy's record and keeps what came before it
    update_ome_provenance(second.path, {"model": {"name": "m2"}, "date": "d2", "completed": "c2"})
    prov = read_provenance(second.path)
    assert prov["completed"] == "c2" and prov["previous"]["model"]["name"] == "m1"
    _, anns, refs = provenance_annotations(second.path)
    assert len(anns) == 1 and refs == [[anns[0].id]] * 2


def test_ome_xml_that_breaks_the_schema_is_read_but_not_carried_over_and_says_so(tmp_path, data, caplog):
    path = tmp_path / "bad.ome.tif"
    write_ome(path, data)
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    tifffile.tiffcomment(path, xml.replace('Type="uint16"', 'Type="uint17"').encode("utf-8"))
    with caplog.at_level(logging.WARNING, logger="livedenoise"):
        ds = open_dataset(path)
        create_ome_tiff(tmp_path / "out.ome.tif", ds, np.float32, {"model": {"name": "m"}})
    assert ds.shape == data.shape and np.array_equal(ds.reader[1, 2], data[1, 2])
    warned = [r.getMessage() for r in caplog.records if "does not follow the OME schema" in r.getMessage()]
    assert warned and all(str(path) in w for w in warned) and "uint17" in warned[0]
    ome, anns, _ = provenance_annotations(tmp_path / "out.ome.tif")
    assert len(anns) == 1 and ome.images[0].pixels.type.value == "float"


@pytest.mark.parametrize("unit, symbol", [("um", "µm"), ("micron", "µm"), ("\\u00B5m", "µm"), ("µm", "µm"),
                                          ("nm", "nm"), ("parsec-ish", None), ("", None)])
def test_imagej_length_units_become_ome_symbols(unit, symbol):
    assert ome_length_unit(unit) == symbol


def test_an_imagej_stack_in_microns_gives_valid_ome_with_its_pixel_sizes(tmp_path):
    data = np.zeros((3, 24, 32), np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "ZYX", "spacing": 0.5, "unit": "micron"})
    ds = open_dataset(tmp_path / "ij.tif")
    create_ome_tiff(tmp_path / "out.ome.tif", ds, np.float32, {"model": {"name": "m"}})
    with tifffile.TiffFile(tmp_path / "out.ome.tif") as tif:
        pix = from_xml(tif.ome_metadata).images[0].pixels
    assert (pix.physical_size_x, pix.physical_size_z, pix.physical_size_z_unit.value) == (0.25, 0.5, "µm")
