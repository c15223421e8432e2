"""Dataset readers: lazy, with axes and metadata; corrupt, truncated and mislabelled files fail clearly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from livedenoise.errors import InputDataError
from livedenoise.io import (
    TiffPlanes,
    create_ome_tiff,
    expand_inputs,
    open_dataset,
    read_provenance,
    validate_axes,
)

SHAPE = (3, 4, 2, 2, 40, 48)  # P T C Z Y X


def make_data(shape=SHAPE, seed=0, dtype=np.uint16):
    rng = np.random.default_rng(seed)
    return (rng.poisson(40, size=shape) + 100).astype(dtype)


def write_ome(path, data, channels=("GFP", "RFP")):
    with tifffile.TiffWriter(path, ome=True) as tw:
        for p in range(data.shape[0]):
            tw.write(data[p], photometric="minisblack",
                     metadata={"axes": "TCZYX", "Name": f"pos{p}", "Channel": {"Name": list(channels)},
                               "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "PhysicalSizeZ": 2.0})


def write_ndtiff(folder, data, channels=("DAPI", "GFP"), skip=()):
    from ndstorage import NDTiffDataset

    ds = NDTiffDataset(str(folder), writable=True)
    ds.initialize({"PixelSize_um": 0.5, "ChannelGroup": "Channel", "Prefix": "acq"})
    for p in range(data.shape[0]):
        for t in range(data.shape[1]):
            for c in range(data.shape[2]):
                for z in range(data.shape[3]):
                    if (p, t, c, z) in skip:
                        continue
                    coords = {"position": p, "time": t, "channel": channels[c], "z": z}
                    ds.put_image(coords, data[p, t, c, z], {"Exposure": 10.0 + c, "Axes": coords})
    ds.finish()
    ds.close()


def test_ome_tiff_is_read_lazily_with_positions_axes_and_metadata(tmp_path, monkeypatch):
    data = make_data()
    write_ome(tmp_path / "a.ome.tif", data)
    reads = []
    original = TiffPlanes.read
    monkeypatch.setattr(TiffPlanes, "read", lambda self, grid: reads.append(len(grid)) or original(self, grid))
    ds = open_dataset(tmp_path / "a.ome.tif")
    assert ds.axes == "PTCZYX" and ds.shape == SHAPE and ds.dtype == np.uint16 and ds.format == "ome-tiff"
    assert reads == []  # opening reads metadata only
    assert "GFP" in ds.metadata["ome_xml"]
    darr = ds.data
    assert type(darr).__module__.startswith("dask") and darr.shape == SHAPE and reads == []
    block = np.asarray(darr[1, 2:4, :, 1])
    assert reads and sum(reads) == 2 * 2  # exactly the planes asked for
    np.testing.assert_array_equal(block, data[1, 2:4, :, 1])
    np.testing.assert_array_equal(ds.reader[2, -1, 1, 0, 5:9, ::7], data[2, -1, 1, 0, 5:9, ::7])


@pytest.mark.parametrize("compression", ["lzw", "zlib", "jpeg2000"])
def test_compressed_tiffs_are_read(tmp_path, compression, monkeypatch):
    """LZW (common in microscope exports) and JPEG 2000 need imagecodecs, a dependency since 2026-12-06; without a
    codec the message names the package to install instead of calling the file corrupt."""
    data = np.random.default_rng(0).integers(0, 4000, (3, 32, 40)).astype(np.uint16)
    kw = {"compressionargs": {"level": 0}} if compression == "jpeg2000" else {}  # lossless
    tifffile.imwrite(tmp_path / "c.tif", data, compression=compression, photometric="minisblack", **kw)
    ds = open_dataset(tmp_path / "c.tif")
    np.testing.assert_array_equal(ds.reader[...], data)
    if compression == "lzw":
        def no_codec(*args, **kwargs):
            raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

        monkeypatch.setattr(tifffile.TiffPage, "asarray", no_codec)
        monkeypatch.setattr(tifffile.TiffFile, "asarray", no_codec)
        with pytest.raises(InputDataError, match=r"c\.tif: cannot read .*; its compression needs the 'imagecodecs' "
                                                 r"package: pip install imagecodecs\.$"):
            open_dataset(tmp_path / "c.tif").reader[...]


def test_an_ome_tiff_whose_xml_is_broken_is_read_as_a_plain_tiff_with_a_warning(tmp_path, caplog):
    """tifffile reads such a file as a plain TIFF without a word: the axes (and metadata) are lost, so say so."""
    tifffile.imwrite(tmp_path / "ok.ome.tif", np.zeros((4, 16, 16), np.uint16), metadata={"axes": "TYX"})
    with tifffile.TiffFile(tmp_path / "ok.ome.tif") as tif:
        xml = tif.pages[0].description.encode()
    raw = (tmp_path / "ok.ome.tif").read_bytes()
    at = raw.find(xml)
    cut = raw[:at + len(xml) // 2] + b" " * (len(xml) - len(xml) // 2) + raw[at + len(xml):]  # half the XML
    (tmp_path / "broken.ome.tif").write_bytes(cut)
    with caplog.at_level("WARNING", logger="livedenoise"):
        ds = open_dataset(tmp_path / "broken.ome.tif")
    assert ds.format == "tiff" and ds.axes != "TYX"
    assert any("broken.ome.tif: its OME-XML cannot be parsed" in r.getMessage() and "--axes" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="livedenoise"):
        assert open_dataset(tmp_path / "ok.ome.tif").axes == "TYX"
    assert not caplog.records


def test_imagej_hyperstack_and_declared_axes(tmp_path):
    data = make_data((4, 2, 2, 40, 48))
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TZCYX", "spacing": 1.5, "unit": "um", "finterval": 3.0})
    ds = open_dataset(tmp_path / "ij.tif")
    assert ds.axes == "TZCYX" and ds.shape == data.shape and ds.format == "imagej-tiff"
    # ImageJ's "um" as OME spells it
    assert ds.metadata["physical_size"]["Z"] == (1.5, "µm") and ds.metadata["physical_size"]["X"][0] == 0.5
    assert ds.metadata["time_increment"] == (3.0, "s")
    np.testing.assert_array_equal(ds.reader[...], data)
    # a plain multi-page file: generic axes unless declared
    flat = data.reshape(-1, 40, 48)
    tifffile.imwrite(tmp_path / "plain.tif", flat, metadata=None)
    assert open_dataset(tmp_path / "plain.tif").axes == "IYX"
    ds2 = open_dataset(tmp_path / "plain.tif", axes="tyx")
    assert ds2.axes == "TYX" and ds2.spec.axes == "tyx"
    np.testing.assert_array_equal(ds2.reader[3:5], flat[3:5])


def test_grey_frames_saved_as_rgb_need_declared_axes(tmp_path):
    data = make_data((3, 40, 48))
    tifffile.imwrite(tmp_path / "rgb.tif", data)  # tifffile stores 3 frames as planar RGB
    with pytest.raises(InputDataError, match=r"colour.*--axes TYX"):
        open_dataset(tmp_path / "rgb.tif")
    ds = open_dataset(tmp_path / "rgb.tif", axes="TYX")
    np.testing.assert_array_equal(ds.reader[...], data)
    tifffile.imwrite(tmp_path / "rgb2.tif", np.zeros((40, 48, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputDataError, match="grey-level planes ending in YX"):
        open_dataset(tmp_path / "rgb2.tif")


@pytest.mark.parametrize("axes, match", [
    ("TWYX", "unknown axis letter"), ("TTYX", "twice"), ("TYXZ", "end with YX"), ("TPYX", "P .position. first"),
    ("ZTCYX", "names 5 axes"),
])
def test_bad_axes_are_refused(tmp_path, axes, match):
    tifffile.imwrite(tmp_path / "plain.tif", make_data((6, 40, 48)), metadata=None)
    with pytest.raises(InputDataError, match=match):
        open_dataset(tmp_path / "plain.tif", axes=axes)


def test_validate_axes_accepts_standard_orders():
    assert validate_axes("ptczyx") == "PTCZYX"
    assert validate_axes("ZYX", 3) == "ZYX"


def test_ndtiff_dataset_keeps_axes_channels_and_missing_images(tmp_path):
    data = make_data()
    write_ndtiff(tmp_path / "acq", data, skip={(2, 3, 1, 1)})
    ds = open_dataset(tmp_path / "acq")
    assert ds.axes == "PTCZYX" and ds.shape == SHAPE and ds.format == "ndtiff"
    assert ds.metadata["channel_names"] == ["DAPI", "GFP"]
    assert ds.metadata["axis_names"] == {"P": "position", "T": "time", "C": "channel", "Z": "z"}
    assert ds.metadata["missing_frames"] == 1 and ds.metadata["ndtiff_summary"]["PixelSize_um"] == 0.5
    expected = data.copy()
    expected[2, 3, 1, 1] = 0
    np.testing.assert_array_equal(ds.reader[...], expected)
    assert ds.reader.planes.read_metadata((0, 1, 1, 0))["Exposure"] == 11.0


def test_corrupt_and_truncated_files_fail_when_opened(tmp_path):
    data = make_data((6, 40, 48))
    tifffile.imwrite(tmp_path / "shaped.tif", data, metadata={"axes": "TYX"})
    raw = (tmp_path / "shaped.tif").read_bytes()
    (tmp_path / "trunc.tif").write_bytes(raw[: len(raw) // 2])
    write_ome(tmp_path / "o.ome.tif", make_data((1, 2, 2, 1, 40, 48)))
    raw = (tmp_path / "o.ome.tif").read_bytes()
    (tmp_path / "trunc.ome.tif").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbage.tif").write_bytes(b"not a tiff at all" * 10)
    (tmp_path / "empty.tif").write_bytes(b"")
    for name, match in [("trunc.tif", "truncated"), ("trunc.ome.tif", "truncated|corrupt"),
                        ("garbage.tif", "not a readable TIFF"), ("empty.tif", "not a readable TIFF"),
                        ("missing.tif", "no such file")]:
        with pytest.raises(InputDataError, match=match):
            open_dataset(tmp_path / name)
    (tmp_path / "notnd").mkdir()
    with pytest.raises(InputDataError, match=r"neither an NDTiff dataset.*nor an OME-Zarr"):
        open_dataset(tmp_path / "notnd")



def test_the_reader_is_chosen_by_content_not_by_name(tmp_path):
    """One registry of readers (livedenoise.io.formats): a TIFF opens whatever its name, a PNG named .tif is named
    as such with its first bytes, and a folder is claimed by what it holds."""
    from livedenoise.io import READERS, reader_for

    data = make_data((3, 40, 48))
    tifffile.imwrite(tmp_path / "frames.dat", data, metadata={"axes": "TYX"})
    ds = open_dataset(tmp_path / "frames.dat")
    assert (ds.format, ds.axes, ds.shape) == ("tiff", "TYX", (3, 40, 48))
    assert reader_for(tmp_path / "frames.dat").name == "TIFF"
    (tmp_path / "image.tif").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(InputDataError, match=r"image\.tif: not a readable TIFF file \(it starts with b'\\x89PNG'"):
        open_dataset(tmp_path / "image.tif")
    assert [r.name for r in READERS] == ["OME-Zarr", "NDTiff", "TIFF", "ND2/CZI/LIF (bioio)"]
    with pytest.raises(InputDataError, match="--axes applies to TIFF files; NDTiff datasets declare their own axes"):
        nd = tmp_path / "nd"
        nd.mkdir()
        (nd / "NDTiff.index").write_bytes(b"")
        open_dataset(nd, axes="TYX")

def test_folders_expand_to_their_tiffs_and_ndtiff_datasets(tmp_path):
    folder = tmp_path / "movies"
    folder.mkdir()
    for name in ("b10.tif", "b2.tif", "a.ome.tif"):
        tifffile.imwrite(folder / name, make_data((2, 40, 48)))
    (folder / "notes.txt").write_text("x")
    write_ndtiff(folder / "acq_1", make_data((1, 1, 1, 1, 40, 48)), channels=("A",))
    items = expand_inputs([folder])
    assert [i.output_stem for i in items] == ["movies/a", "movies/acq_1", "movies/b2", "movies/b10"]
    (tmp_path / "none").mkdir()
    with pytest.raises(InputDataError, match="no TIFF files"):
        expand_inputs([tmp_path / "none"])


def test_created_ome_tiff_keeps_input_ome_metadata_and_adds_provenance(tmp_path):
    data = make_data()
    write_ome(tmp_path / "in.ome.tif", data)
    ds = open_dataset(tmp_path / "in.ome.tif")
    target = create_ome_tiff(tmp_path / "out.ome.tif", ds, np.float32, {"model": {"name": "m", "sha256": "ab"},
                                                                         "axes": ds.axes, "shape": list(ds.shape)})
    target.write_block([slice(1, 2), slice(0, 4), slice(0, 2), slice(0, 2)], np.ones((1, 4, 2, 2, 40, 48), np.float32))
    with tifffile.TiffFile(tmp_path / "out.ome.tif") as tif:
        assert len(tif.series) == 3 and tif.series[0].axes == "TCZYX" and tif.series[0].dtype == np.float32
        xml = tif.ome_metadata
        assert tif.series[1].asarray().min() == 1 and tif.series[0].asarray().max() == 0
    assert 'Name="GFP"' in xml and 'PhysicalSizeZ="2.0"' in xml and 'Type="float"' in xml
    assert read_provenance(tmp_path / "out.ome.tif")["model"]["sha256"] == "ab"
    assert json.loads(json.dumps(read_provenance(tmp_path / "out.ome.tif")))["axes"] == "PTCZYX"


def test_colour_tiffs_are_refused_where_camera_frames_are_expected(tmp_path, capsys):
    from livedenoise.cli import main

    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), photometric="rgb")
    for argv in (["calibrate-camera", "--dark", str(rgb), "--flat", str(rgb), "-o", str(tmp_path / "cal.safetensors")],
                 ["finetune", "--images", str(rgb), "-o", str(tmp_path / "m.safetensors")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "rgb.tif: holds colour (RGB or multi-sample) images" in err and "grey-level" in err, err
        assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgb.tif"]


def test_the_old_io_module_paths_still_work_with_a_warning():
    """io_ndtiff and io_omezarr moved into the livedenoise.io package; their old paths warn for a release."""
    import importlib

    from livedenoise.io.ndtiff import read_ndtiff
    from livedenoise.io.omezarr import is_ome_zarr

    with pytest.warns(DeprecationWarning, match=r"livedenoise\.io_ndtiff was renamed livedenoise\.io\.ndtiff"):
        assert importlib.import_module("livedenoise.io_ndtiff").read_ndtiff is read_ndtiff
    with pytest.warns(DeprecationWarning, match=r"renamed livedenoise\.io\.omezarr"):
        assert importlib.import_module("livedenoise.io_omezarr").is_ome_zarr is is_ome_zarr
