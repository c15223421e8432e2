"""Nikon ND2, Zeiss CZI and Leica LIF input through bioio (the optional [formats] extra).

The CZI files are real ones, written here with pylibCZIrw (Zeiss's own library) and read back through
bioio-czi; ND2 and LIF files cannot be written without the vendors' software, so those two are tested
for what livedenoise itself decides: recognition by signature, and one clear error for a broken file.
Skipped without bioio and pylibCZIrw, unless LIVEDENOISE_REQUIRE_FORMATS=1 (``.ci/formats_check``).
"""
from __future__ import annotations

import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("LIVEDENOISE_REQUIRE_FORMATS") == "1":
    import bioio  # noqa: F401  -- required: fail, never skip
    import bioio_czi  # noqa: F401
    import bioio_lif  # noqa: F401
    import bioio_nd2  # noqa: F401
    from pylibCZIrw import czi as pyczi
else:
    pytest.importorskip("bioio", reason="the [formats] extra (bioio) is not installed")
    for _plugin in ("bioio_czi", "bioio_nd2", "bioio_lif"):
        pytest.importorskip(_plugin, reason="the [formats] extra is not installed")
    pyczi = pytest.importorskip("pylibCZIrw.czi", reason="pylibCZIrw (comes with bioio-czi) is not installed")

import tifffile

from livedenoise.errors import InputDataError
from livedenoise.io import SourceSpec, expand_inputs, open_dataset, output_stem, read_provenance, reader_for
from livedenoise.io.vendor import VendorPlanes, vendor_format

UM = 1e-6  # pylibCZIrw takes pixel sizes in metres


def write_czi(path: Path, data: np.ndarray, axes: str, channels: dict[int, str] | None = None,
              scale: tuple[float, float, float] = (0.1, 0.1, 0.0)) -> Path:
    """A real CZI of ``data`` (leading axes among T, C, Z, then Y X), one scene, pixel sizes in µm (X, Y, Z)."""
    lead = axes[:-2]
    with pyczi.create_czi(str(path), exist_ok=True) as w:
        for idx in np.ndindex(*data.shape[:-2]):
            w.write(data[idx], plane=dict(zip(lead, (int(i) for i in idx), strict=True)), scene=0, location=(0, 0))
        w.write_metadata(document_name="test", channel_names=channels or {}, scale_x=scale[0] * UM,
                         scale_y=scale[1] * UM, scale_z=scale[2] * UM)
    return path


def write_multiscene_czi(path: Path, scenes: list[np.ndarray], names: list[str]) -> Path:
    """A CZI with one T-series per scene (stage positions side by side), its scenes named in the metadata.

    pylibCZIrw writes the scenes' subblocks but no scene list in the XML metadata, which is where bioio-czi
    looks for scenes; the metadata segment is therefore re-written with the list added, as ZEN would have it
    (a new ZISRAWMETADATA segment at the end of the file, the file header pointing to it).
    """
    with pyczi.create_czi(str(path), exist_ok=True) as w:
        for s, data in enumerate(scenes):
            for t in range(data.shape[0]):
                w.write(data[t], plane={"T": t}, scene=s, location=(s * 1000, 0))
        w.write_metadata(document_name="test", scale_x=0.5 * UM, scale_y=0.5 * UM)
    raw = bytearray(path.read_bytes())
    meta_pos = struct.unpack_from("<q", raw, 92)[0]  # the file header's MetadataPosition
    assert raw[meta_pos:meta_pos + 14] == b"ZISRAWMETADATA"
    xml_size = struct.unpack_from("<i", raw, meta_pos + 32)[0]
    xml = raw[meta_pos + 288:meta_pos + 288 + xml_size].decode()
    scene_xml = "".join(f'<Scene Index="{i}" Name="{n}"/>' for i, n in enumerate(names))
    assert "<Dimensions>" in xml
    xml = xml.replace("<Dimensions>", f"<Dimensions><S><Scenes>{scene_xml}</Scenes></S>", 1).encode()
    raw += b"\0" * (-len(raw) % 32)  # segments start on 32-byte boundaries
    new_pos = len(raw)
    body = struct.pack("<ii", len(xml), 0) + b"\0" * 248 + xml
    allocated = len(body) + (-len(body) % 32)
    raw += b"ZISRAWMETADATA".ljust(16, b"\0") + struct.pack("<qq", allocated, len(body)) + body.ljust(allocated, b"\0")
    struct.pack_into("<q", raw, 92, new_pos)
    path.write_bytes(bytes(raw))
    return path


@pytest.fixture(scope="module")
def tcyx() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(100, 4000, size=(3, 2, 40, 48), dtype=np.uint16)


@pytest.fixture()
def czi(tmp_path, tcyx) -> Path:
    return write_czi(tmp_path / "cells.czi", tcyx, "TCYX", channels={0: "GFP", 1: "RFP"})


# ---------------------------------------------------------------------------------------------
# recognition by content
# ---------------------------------------------------------------------------------------------
def test_vendor_format_is_decided_by_the_first_bytes_not_the_name(tmp_path, czi):
    cases = {
        "new.tif": (b"\xda\xce\xbe\x0a" + b"\0" * 60, "nd2"),
        "legacy.dat": (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 60, "nd2"),
        "zeiss.bin": (b"ZISRAWFILE" + b"\0" * 60, "czi"),
        "leica.img": (b"\x70\x00\x00\x00" + b"\x10\x00\x00\x00" + b"\x2a" + b"\0" * 60, "lif"),
        "not_leica.lif": (b"\x70\x00\x00\x00" + b"\x10\x00\x00\x00" + b"\x2b" + b"\0" * 60, None),
        "short.lif": (b"\x70\x00\x00\x00", None),
        "empty.nd2": (b"", None),
        "tiff.czi": (b"II*\x00" + b"\0" * 60, None),
    }
    for name, (content, want) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert vendor_format(tmp_path / name) == want, name
    assert vendor_format(czi) == "czi"
    assert vendor_format(tmp_path) is None and vendor_format(tmp_path / "missing.czi") is None
    assert reader_for(czi).name == "ND2/CZI/LIF (bioio)"


# ---------------------------------------------------------------------------------------------
# real CZI files
# ---------------------------------------------------------------------------------------------
def test_czi_axes_shape_pixels_and_metadata(czi, tcyx):
    ds = open_dataset(czi)
    assert (ds.format, ds.axes, ds.shape, ds.dtype) == ("czi", "TCYX", tcyx.shape, np.dtype(np.uint16))
    assert ds.spec == SourceSpec(str(czi), "vendor", None)
    np.testing.assert_array_equal(ds.reader[...], tcyx)
    np.testing.assert_array_equal(ds.read_frame((2, 1)), tcyx[2, 1])
    np.testing.assert_array_equal(ds.reader[1:, 0, 5:9, ::7], tcyx[1:, 0, 5:9, ::7])
    np.testing.assert_array_equal(ds.data.compute(), tcyx)  # through dask, one plane per chunk
    meta = ds.metadata
    assert meta["channel_names"] == ["GFP", "RFP"]
    assert set(meta["physical_size"]) == {"X", "Y"}  # Z unknown (0): left out, not written as 0
    assert meta["physical_size"]["X"] == (pytest.approx(0.1), "µm")
    assert meta["physical_size"]["Y"] == (pytest.approx(0.1), "µm")
    assert meta["vendor"].startswith("bioio-czi ") and "series_names" not in meta
    ds.close()


def test_size_one_dimensions_are_dropped_and_z_is_kept_with_its_spacing(tmp_path):
    stack = np.stack([np.full((16, 20), z, np.float32) + np.arange(20, dtype=np.float32) for z in range(3)])
    path = write_czi(tmp_path / "stack.czi", stack, "ZYX", scale=(0.2, 0.25, 0.5))
    ds = open_dataset(path)
    assert (ds.axes, ds.shape, ds.dtype) == ("ZYX", (3, 16, 20), np.dtype(np.float32))
    np.testing.assert_array_equal(ds.reader[...], stack)
    phys = ds.metadata["physical_size"]
    assert {a: round(v, 6) for a, (v, _) in phys.items()} == {"X": 0.2, "Y": 0.25, "Z": 0.5}
    assert "channel_names" not in ds.metadata  # no C axis kept
    single = write_czi(tmp_path / "one.czi", stack[:1], "TYX")
    one = open_dataset(single)
    assert (one.axes, one.shape) == ("YX", (16, 20))
    np.testing.assert_array_equal(one.reader[...], stack[0])


def test_a_pickled_reader_reopens_the_file_and_reads_the_same_planes(czi, tcyx):
    ds = open_dataset(czi)
    assert isinstance(ds.reader.planes, VendorPlanes)
    first = ds.reader[0, 1]  # the original now holds an open BioImage
    clone = pickle.loads(pickle.dumps(ds.reader))
    assert clone.planes._handle is None  # nothing open crossed the pickle
    grid = np.array([[2, 0], [0, 1], [1, 1]])
    np.testing.assert_array_equal(clone.planes.read(grid), tcyx[grid[:, 0], grid[:, 1]])
    np.testing.assert_array_equal(clone[0, 1], first)
    whole = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(whole.reader[...], tcyx)


def test_scenes_become_positions_and_must_match(tmp_path):
    rng = np.random.default_rng(3)
    scenes = [rng.integers(0, 255, size=(2, 12, 16), dtype=np.uint8) for _ in range(3)]
    path = write_multiscene_czi(tmp_path / "wells.czi", scenes, ["A1", "B2", "C3"])
    ds = open_dataset(path)
    assert (ds.axes, ds.shape, ds.dtype) == ("PTYX", (3, 2, 12, 16), np.dtype(np.uint8))
    assert ds.metadata["series_names"] == ["A1", "B2", "C3"]
    assert ds.metadata["physical_size"]["X"] == (pytest.approx(0.5), "µm")
    np.testing.assert_array_equal(ds.reader[...], np.stack(scenes))
    grid = np.array([[2, 1], [0, 0], [2, 0], [1, 1]])  # scenes out of order: grouped, put back in place
    np.testing.assert_array_equal(ds.reader.planes.read(grid), np.stack(scenes)[grid[:, 0], grid[:, 1]])
    odd = write_multiscene_czi(tmp_path / "odd.czi", [scenes[0], scenes[1][:, :8]], ["A1", "B2"])
    with pytest.raises(InputDataError, match=r"odd\.czi: holds 2 scenes of different shapes.*identical shape"):
        open_dataset(odd)


def test_colour_czi_is_refused(tmp_path):
    path = tmp_path / "rgb.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as w:
        w.write(np.zeros((8, 10, 3), np.uint8), plane={"T": 0}, scene=0, location=(0, 0))
        w.write_metadata(document_name="rgb")
    with pytest.raises(InputDataError, match=r"rgb\.czi: holds colour \(RGB / multi-sample\) images \(3 samples"):
        open_dataset(path)


def test_axes_option_is_refused(czi):
    with pytest.raises(InputDataError, match=r"cells\.czi: --axes applies to TIFF files; ND2/CZI/LIF"):
        open_dataset(czi, axes="TCYX")


# ---------------------------------------------------------------------------------------------
# broken files and a missing extra: one sentence naming the file
# ---------------------------------------------------------------------------------------------
def test_truncated_czi_and_garbage_nd2_lif_name_the_file(tmp_path, czi):
    raw = czi.read_bytes()
    (tmp_path / "cut.czi").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "bad.nd2").write_bytes(b"\xda\xce\xbe\x0a" + b"not an nd2 " * 40)
    (tmp_path / "bad.lif").write_bytes(b"\x70\x00\x00\x00\x10\x00\x00\x00\x2a" + b"not a lif " * 40)
    for name, what in (("cut.czi", "a Zeiss CZI file"), ("bad.nd2", "a Nikon ND2 file"),
                       ("bad.lif", "a Leica LIF file")):
        with pytest.raises(InputDataError) as info:
            open_dataset(tmp_path / name)
        msg = str(info.value)
        assert msg.startswith(f"{tmp_path / name}: has the header of {what} but"), msg
        assert msg.endswith("the file may be truncated or corrupt.") and "\n" not in msg, msg
    (tmp_path / "old.nd2").write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"not an nd2 " * 40)  # legacy / JP2
    with pytest.raises(InputDataError, match=r"old\.nd2: has the header of a Nikon ND2 file but .*plain JPEG 2000"):
        open_dataset(tmp_path / "old.nd2")


def test_a_file_broken_after_opening_is_named_when_its_planes_are_read(tmp_path, tcyx):
    path = write_czi(tmp_path / "later.czi", tcyx, "TCYX")
    ds = open_dataset(path)
    np.testing.assert_array_equal(ds.reader[0, 0], tcyx[0, 0])  # the file is open now
    shipped = pickle.loads(pickle.dumps(ds.reader))  # a worker's copy, not opened yet
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(InputDataError, match=r"later\.czi: cannot read image plane\(s\) \[\[2, 1\]\] .*truncated or "
                       "corrupt"):
        ds.reader[2, 1]
    with pytest.raises(InputDataError, match=r"later\.czi: has the header of a Zeiss CZI file but .*truncated"):
        shipped[0, 0]


def test_without_bioio_the_extra_to_install_is_named(tmp_path, monkeypatch):
    path = tmp_path / "scope.nd2"
    path.write_bytes(b"\xda\xce\xbe\x0a" + b"\0" * 200)
    for name in ("bioio", "bioio_nd2", "bioio_czi", "bioio_lif"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    assert reader_for(path).name == "ND2/CZI/LIF (bioio)"  # still recognised
    with pytest.raises(InputDataError) as info:
        open_dataset(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: a Nikon ND2 file; reading it needs the optional extra: "
                          "pip install 'livedenoise[formats]'"), msg


def test_content_wins_over_the_name(tmp_path, tcyx):
    fake = tmp_path / "really_a_tiff.czi"
    tifffile.imwrite(fake, tcyx[:, 0], photometric="minisblack")
    ds = open_dataset(fake)
    assert reader_for(fake).name == "TIFF" and ds.format == "tiff" and ds.spec.kind == "tiff"
    np.testing.assert_array_equal(ds.reader[...], tcyx[:, 0])
    (tmp_path / "png.czi").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    with pytest.raises(InputDataError, match=r"png\.czi: not a readable TIFF file .*not a TIFF, Nikon ND2, Zeiss CZI"):
        open_dataset(tmp_path / "png.czi")


def test_folders_expand_to_vendor_files_and_output_names_drop_their_suffix(tmp_path, tcyx):
    folder = tmp_path / "run"
    folder.mkdir()
    write_czi(folder / "b.czi", tcyx[:1], "TCYX")
    (folder / "a.ND2").write_bytes(b"\xda\xce\xbe\x0a")
    (folder / "c.lif").write_bytes(b"\x70\x00\x00\x00\x10\x00\x00\x00\x2a")
    (folder / "notes.txt").write_text("not an image")
    items = expand_inputs([folder])
    assert [(i.path.name, i.output_stem) for i in items] == [("a.ND2", "run/a"), ("b.czi", "run/b"),
                                                              ("c.lif", "run/c")]
    assert [output_stem(Path(n)) for n in ("x.czi", "x.nd2", "X.LIF", "x.czi.bak")] == ["x", "x", "X", "x.czi.bak"]


# ---------------------------------------------------------------------------------------------
# end to end: `livedenoise denoise` on a CZI
# ---------------------------------------------------------------------------------------------
def test_cli_denoises_a_czi_to_ome_tiff_with_its_metadata(tmp_path, czi, tcyx, capsys):
    import torch

    from livedenoise.checkpoint import save_checkpoint
    from livedenoise.cli import main
    from livedenoise.inference import Denoiser
    from livedenoise.models import build_model
    from livedenoise.normalization import Normalizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        ckpt = save_checkpoint(tmp_path / "tiny.safetensors", build_model("unet", widths=[4, 8]), arch="unet",
                               arch_kwargs={"widths": [4, 8]}, normalizer=Normalizer.fit(tcyx[0, 0]), name="tiny")
        out = tmp_path / "out"
        assert main(["denoise", str(czi), "-o", str(out), "--model", str(ckpt), "--noise-model", "stored",
                     "--no-progress", "--device", "cpu"]) == 0, capsys.readouterr().err
        result = out / "cells.ome.tif"
        assert result.is_file()
        den = open_dataset(result)
        assert (den.axes, den.shape) == ("TCYX", tcyx.shape)
        model = Denoiser(str(ckpt), device="cpu")
        expected = np.stack([model.denoise(f) for f in tcyx.reshape(-1, *tcyx.shape[-2:])]).reshape(tcyx.shape)
        np.testing.assert_allclose(den.reader[...], expected, rtol=1e-5, atol=1e-3)
    finally:
        torch.set_num_threads(threads)
    prov = read_provenance(result)
    assert prov["input"]["path"] == str(czi.resolve()) and prov["input"]["format"] == "czi"
    assert prov["input"]["axes"] == "TCYX" and prov["input"]["shape"] == list(tcyx.shape)
    with tifffile.TiffFile(result) as tif:
        xml = tif.ome_metadata
    assert 'PhysicalSizeX="0.1"' in xml and 'Name="GFP"' in xml and 'Name="RFP"' in xml
