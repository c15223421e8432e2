"""Batch denoising of saved datasets: round trips, bounded memory, resume, bad input, dask cluster, CLI."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from livedenoise import batch
from livedenoise.batch import BlockJob, denoise_dataset, parse_memory, plan_blocks
from livedenoise.batch import block as batch_block
from livedenoise.batch import execution as batch_execution
from livedenoise.batch import models as batch_models
from livedenoise.errors import CheckpointError, ConfigError, InputDataError, LivedenoiseError
from livedenoise.io import TiffPlanes, open_dataset, read_provenance

SHAPE = (3, 4, 2, 2, 40, 48)  # P T C Z Y X


# ---------------------------------------------------------------------------------------------
# fixtures: a tiny real checkpoint and realistic frames from the simulated microscope
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny networks: one thread is fastest, and immune to other processes competing for the 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    from simulators.config import load_microscope_config
    from simulators.microscope import SimulatedMicroscope

    scope = SimulatedMicroscope(load_microscope_config(roi_width=48, roi_height=40))
    out = np.empty(SHAPE, np.uint16)
    for p in range(SHAPE[0]):
        scope.set_position(x_um=60.0 * p, y_um=0.0)
        for t in range(SHAPE[1]):
            for c in range(SHAPE[2]):
                scope.set_light_power(20.0 + 60.0 * c)
                for z in range(SHAPE[3]):
                    scope.set_position(z_um=scope.config.focus_z_um + 1.0 * z)
                    out[p, t, c, z] = scope.snap().image
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, frames) -> Path:
    import torch

    from livedenoise.checkpoint import save_checkpoint
    from livedenoise.models import build_model
    from livedenoise.normalization import Normalizer

    torch.manual_seed(0)
    model = build_model("unet", widths=[4, 8])
    norm = Normalizer.fit(frames[0, 0, 0])
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_checkpoint(path, model, arch="unet", arch_kwargs={"widths": [4, 8]}, normalizer=norm, name="tiny")


@pytest.fixture(scope="module")
def ckpt2(tmp_path_factory, frames) -> Path:
    import torch

    from livedenoise.checkpoint import save_checkpoint
    from livedenoise.models import build_model
    from livedenoise.normalization import Normalizer

    torch.manual_seed(1)
    model = build_model("unet", widths=[4, 8])
    path = tmp_path_factory.mktemp("model2") / "other.safetensors"
    return save_checkpoint(path, model, arch="unet", arch_kwargs={"widths": [4, 8]},
                           normalizer=Normalizer.fit(frames[0, 0, 1]), name="other")


def reference(ckpt: Path, data: np.ndarray) -> np.ndarray:
    """The Denoiser applied frame by frame: what every output must equal."""
    from livedenoise.inference import Denoiser

    den = Denoiser(str(ckpt), device="cpu")
    flat = data.reshape(-1, *data.shape[-2:])
    return np.stack([den.denoise(f) for f in flat]).reshape(data.shape)


def write_ome(path, data, channels=("GFP", "RFP")):
    with tifffile.TiffWriter(path, ome=True) as tw:
        for p in range(data.shape[0]):
            tw.write(data[p], photometric="minisblack",
                     metadata={"axes": "TCZYX", "Name": f"pos{p}", "Channel": {"Name": list(channels)},
                               "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65})


def write_ndtiff(folder, data, channels=("DAPI", "GFP")):
    from ndstorage import NDTiffDataset

    ds = NDTiffDataset(str(folder), writable=True)
    ds.initialize({"PixelSize_um": 0.5, "Prefix": "acq"})
    for idx in np.ndindex(*data.shape[:-2]):
        p, t, c, z = idx
        coords = {"position": p, "time": t, "channel": channels[c], "z": z}
        ds.put_image(coords, data[idx], {"Exposure": 10.0 + c})
    ds.finish()
    ds.close()


def read_ome(path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        return np.stack([s.asarray() for s in tif.series]) if len(tif.series) > 1 else tif.series[0].asarray()


def read_zarr(path, positions: int | None = None) -> np.ndarray:
    """An OME-Zarr output's pixels (positions stacked first, as the input's P axis), read with tensorstore."""
    import tensorstore as ts

    def arr(p):
        return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(p)}}).result().read().result()

    if positions is None:
        return arr(path / "0")
    return np.stack([arr(path / str(i) / "0") for i in range(positions)])


def run(inputs, out, ckpt, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("device", "cpu")
    # The plumbing tests compare with a frame-by-frame Denoiser using the model's own normaliser; the fitted
    # noise model (the default) is tested in tests/test_noise_model_batch.py.
    kw.setdefault("noise_model", "stored")
    return denoise_dataset(inputs, out, model=str(ckpt), **kw)


# ---------------------------------------------------------------------------------------------
# planning: memory bounded by design
# ---------------------------------------------------------------------------------------------
def test_parse_memory():
    assert parse_memory("512MB") == 512 * 10**6 and parse_memory("1.5GiB") == int(1.5 * 2**30)
    assert parse_memory("800m") == 8 * 10**8 and parse_memory(4096) == 4096
    for bad in ("lots", "-1GB", "0", "12XB"):
        with pytest.raises(ConfigError, match="Memory budget"):
            parse_memory(bad)


MARGIN = 16
FLOOR_SIDE = 2 * MARGIN + max(2 * MARGIN, batch.MIN_TILE_CORE)


@pytest.mark.parametrize("shape, axes", [
    ((3, 4, 2, 2, 40, 48), "PTCZYX"), ((500, 512, 512), "TYX"), ((7, 3, 5, 256, 300), "TCZYX"),
    ((2, 1000, 2048, 2048), "PTYX"), ((64, 64), "YX"),
])
@pytest.mark.parametrize("budget", [2 * 10**6, 64 * 10**6, 10**9])
@pytest.mark.parametrize("dtypes", [("uint16", "float32"), ("uint16", "uint16"), ("float32", "float32")])
@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_planned_blocks_never_exceed_the_budget(shape, axes, budget, dtypes, concurrency):
    # input block + float32 result (+ the cast copy) per pixel: a lower bound of what a block holds
    per_pixel = np.dtype(dtypes[0]).itemsize + 4 + (np.dtype(dtypes[1]).itemsize if dtypes[1] != "float32" else 0)
    frame_bytes = shape[-1] * shape[-2] * per_pixel
    try:
        plan = plan_blocks(shape, axes, dtypes[0], dtypes[1], budget, concurrency=concurrency, split_axes="P",
                           first_width=32, weights_bytes=10**5, margin=MARGIN)
    except ConfigError as exc:  # only when not even one frame fits
        assert "too small" in str(exc)
        full_frame = frame_bytes + batch.EXTRA_BYTES_PER_PIXEL * shape[-1] * shape[-2]
        pixels = shape[-1] * shape[-2]
        smallest_net = min(FLOOR_SIDE**2, pixels) * batch.ACTIVATION_BYTES_PER_PIXEL_CHANNEL * 32 + \
            pixels * batch.CALL_BYTES_PER_PIXEL
        assert full_frame + smallest_net > (budget - 10**5) // concurrency
        return
    # every block's data + network share fits its slice of the budget
    assert plan.bytes_per_block * concurrency + 10**5 <= budget
    assert plan.frames_per_block * frame_bytes <= plan.bytes_per_block
    # the network's working set (pixel budget x bytes per pixel) is inside the block's share
    model_bytes = plan.denoiser.pixel_budget * batch.ACTIVATION_BYTES_PER_PIXEL_CHANNEL * 32
    assert plan.frames_per_block * frame_bytes + model_bytes <= plan.bytes_per_block
    # tiles never shrink below 2 x margin + the minimum core (they would be mostly margin)
    assert plan.denoiser.pixel_budget >= min(FLOOR_SIDE**2, shape[-1] * shape[-2])
    # the blocks tile the dataset exactly once
    covered = sum(int(np.prod([b - a for a, b in r])) for _, r in plan.blocks()) if plan.n_blocks < 5000 else None
    if covered is not None:
        assert covered == int(np.prod(shape[:-2]))
    if "P" in axes:
        assert plan.chunks[0] == 1


def test_planner_splits_channels_keeps_time_whole_and_refuses_tiny_budgets():
    plan = plan_blocks((5, 6, 3, 2, 100, 100), "TCZ" "QYX", "uint16", "float32", 10**9, split_axes="C")
    assert plan.chunks[1] == 1 and plan.n_blocks == 6
    plan = plan_blocks((8, 30, 2, 100, 100), "PTCYX", "uint16", "float32", 50 * 10**6, whole_axes="T", split_axes="P")
    assert plan.chunks[1] == 30
    with pytest.raises(ConfigError, match="full T stack of 30 frames"):
        plan_blocks((8, 30, 2, 100, 100), "PTCYX", "uint16", "float32", 2 * 10**6, whole_axes="T")
    with pytest.raises(ConfigError, match="too small for one frame of 2048x2048"):
        plan_blocks((10, 2048, 2048), "TYX", "uint16", "float32", 10 * 10**6)


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------
def test_ome_tiff_round_trip_multi_position_matches_frame_by_frame(tmp_path, frames, ckpt, monkeypatch):
    write_ome(tmp_path / "cells.ome.tif", frames)
    reads = []
    original = TiffPlanes.read
    monkeypatch.setattr(TiffPlanes, "read", lambda self, grid: reads.append(len(grid)) or original(self, grid))
    summary = run([tmp_path / "cells.ome.tif"], tmp_path / "out", ckpt, memory_budget="1MB")
    out_path = tmp_path / "out" / "cells.ome.tif"
    assert summary.items[0].blocks >= 6 and summary.frames == 48 and summary.items[0].status == "done"
    assert sum(reads) == 48  # every plane read exactly once, in blocks
    out = open_dataset(out_path)
    assert out.axes == "PTCZYX" and out.shape == frames.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.reader[...], reference(ckpt, frames), rtol=1e-5, atol=1e-3)
    with tifffile.TiffFile(out_path) as tif:
        xml = tif.ome_metadata
        assert [s.name for s in tif.series] == ["pos0", "pos1", "pos2"]
    assert 'Name="GFP"' in xml and 'Name="RFP"' in xml and 'PhysicalSizeX="0.65"' in xml
    prov = read_provenance(out_path)
    assert prov["model"]["sha256"] == batch.file_sha256(ckpt) and prov["model"]["path"] == str(ckpt.resolve())
    assert prov["model"]["normalizer"]["gain"] > 0 and prov["livedenoise_version"] and prov["date"]
    assert prov["input"]["path"] == str((tmp_path / "cells.ome.tif").resolve()) and prov["clipped_pixels"] == 0
    assert "Mpx/s" in summary.report() and str(tmp_path / "out") in summary.report()


def test_imagej_stack_with_input_dtype_clips_and_counts(tmp_path, frames, ckpt):
    data = frames[0].transpose(0, 2, 1, 3, 4)  # T Z C Y X
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TZCYX", "spacing": 1.5, "unit": "um", "finterval": 3.0})
    summary = run([tmp_path / "ij.tif"], tmp_path / "out", ckpt, dtype="input", memory_budget="1MB")
    out = open_dataset(tmp_path / "out" / "ij.ome.tif")
    assert out.axes == "TZCYX" and out.shape == data.shape and out.dtype == np.uint16
    ref = reference(ckpt, data)
    np.testing.assert_array_equal(out.reader[...], np.clip(np.rint(ref), 0, 65535).astype(np.uint16))
    assert summary.clipped == int(np.count_nonzero((np.rint(ref) < 0) | (np.rint(ref) > 65535)))
    assert (out.metadata["ome_xml"].count('PhysicalSizeZ="1.5"') == 1
            and 'TimeIncrement="3.0"' in out.metadata["ome_xml"])
    # a narrower type clips, counts and warns
    small = run([tmp_path / "ij.tif"], tmp_path / "out8", ckpt, dtype="uint8")
    over = int(np.count_nonzero((np.rint(ref) < 0) | (np.rint(ref) > 255)))
    assert over > 0 and small.clipped == over and any("clipped" in w for w in small.warnings)
    assert read_provenance(tmp_path / "out8" / "ij.ome.tif")["clipped_pixels"] == over


def test_folder_of_tiffs_keeps_names_and_axes(tmp_path, frames, ckpt):
    folder = tmp_path / "series"
    folder.mkdir()
    tifffile.imwrite(folder / "t1.tif", frames[0, :, 0, 0], photometric="minisblack")
    tifffile.imwrite(folder / "t2.tif", frames[1, 0, 1], metadata=None)  # a single 2-D image
    run([folder], tmp_path / "out", ckpt, axes=None)
    a = open_dataset(tmp_path / "out" / "series" / "t1.ome.tif")
    b = open_dataset(tmp_path / "out" / "series" / "t2.ome.tif")
    assert a.shape == (4, 40, 48) and b.shape == (2, 40, 48) and b.axes == "IYX"
    np.testing.assert_allclose(a.reader[...], reference(ckpt, frames[0, :, 0, 0]), rtol=1e-5, atol=1e-3)


def test_ndtiff_round_trip_to_ndtiff_and_ome(tmp_path, frames, ckpt):
    from ndstorage import Dataset

    write_ndtiff(tmp_path / "acq_1", frames)
    summary = run([tmp_path / "acq_1"], tmp_path / "out", ckpt, dtype="input", fmt="ndtiff", memory_budget="1MB")
    assert summary.items[0].blocks > 1
    out_dir = tmp_path / "out" / "acq_1"
    ref = np.clip(np.rint(reference(ckpt, frames)), 0, 65535).astype(np.uint16)
    src = Dataset(str(tmp_path / "acq_1"))
    res = Dataset(str(out_dir))
    try:
        assert dict(res.axes) == dict(src.axes) and res.dtype == np.uint16
        np.testing.assert_array_equal(np.asarray(res.as_array()), ref)
        assert res.read_metadata(position=1, time=2, channel="GFP", z=1)["Exposure"] == 11.0
        assert res.summary_metadata["PixelSize_um"] == 0.5
        assert res.summary_metadata["livedenoise"]["model"]["sha256"] == batch.file_sha256(ckpt)
    finally:
        src.close()
        res.close()
    assert not (tmp_path / "out" / ".livedenoise" / "acq_1.blocks").exists()  # staging removed
    # NDTiff -> OME-TIFF keeps positions as series and channel names
    run([tmp_path / "acq_1"], tmp_path / "ome", ckpt)
    out = open_dataset(tmp_path / "ome" / "acq_1.ome.tif")
    assert out.axes == "PTCZYX" and out.shape == frames.shape
    assert 'Name="DAPI"' in out.metadata["ome_xml"] and 'PhysicalSizeX="0.5"' in out.metadata["ome_xml"]
    np.testing.assert_allclose(out.reader[...], reference(ckpt, frames), rtol=1e-5, atol=1e-3)


def test_in_memory_models_work_locally_but_not_on_a_cluster(tmp_path, frames, ckpt, monkeypatch):
    from livedenoise.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt)
    write_ome(tmp_path / "a.ome.tif", frames[:1, :1])
    summary = denoise_dataset([tmp_path / "a.ome.tif"], tmp_path / "out", model=(loaded.model, loaded.normalizer),
                              progress=False, device="cpu", noise_model="stored")
    assert summary.models[0]["path"] is None and len(summary.models[0]["sha256"]) == 64
    np.testing.assert_allclose(read_ome(tmp_path / "out" / "a.ome.tif"), reference(ckpt, frames[0, 0]),
                               rtol=1e-5, atol=1e-3)
    # as if connected to a cluster
    monkeypatch.setattr(batch_execution, "_connect", lambda scheduler: (object(), 1, 1, False))
    with pytest.raises(ConfigError, match="workers load models from a path"):
        denoise_dataset([tmp_path / "a.ome.tif"], tmp_path / "out2", model=(loaded.model, loaded.normalizer),
                        progress=False, scheduler="tcp://cluster:8786")
    assert not (tmp_path / "out2").exists()


def test_ndtiff_output_needs_an_integer_dtype(tmp_path, frames, ckpt):
    write_ome(tmp_path / "a.ome.tif", frames[:1])
    with pytest.raises(ConfigError, match="NDTiff stores only uint8 / uint16"):
        run([tmp_path / "a.ome.tif"], tmp_path / "out", ckpt, fmt="ndtiff")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# interruption and resume
# ---------------------------------------------------------------------------------------------
class Stop(Exception):
    pass


def stop_after(k):
    count = [0]

    def hook(result):
        count[0] += 1
        if count[0] == k:
            raise Stop(f"stopped after {k} blocks")

    return hook


@pytest.mark.parametrize("fmt, dtype", [("ome-tiff", "float32"), ("ndtiff", "input"), ("ome-zarr", "float32")])
def test_interrupted_run_resumes_to_identical_output(tmp_path, frames, ckpt, ckpt2, fmt, dtype, monkeypatch):
    write_ome(tmp_path / "in.ome.tif", frames)
    full = run([tmp_path / "in.ome.tif"], tmp_path / "full", ckpt, fmt=fmt, dtype=dtype, memory_budget="1MB")
    n_blocks = full.items[0].blocks
    assert n_blocks >= 4
    monkeypatch.chdir(tmp_path)  # the interrupted run is given a relative output folder ...
    with pytest.raises(Stop):
        run([tmp_path / "in.ome.tif"], Path("first"), ckpt, fmt=fmt, dtype=dtype, memory_budget="1MB",
            on_block_done=stop_after(2))
    (tmp_path / "first").rename(tmp_path / "part")  # ... then the folder is renamed, and resumed from elsewhere
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    state = tmp_path / "part" / ".livedenoise"
    manifest = json.loads((state / "in.json").read_text())
    assert manifest["state"] == "running" and manifest["models"][0]["sha256"] == batch.file_sha256(ckpt)
    done = [json.loads(line)["block"] for line in (state / "in.done.jsonl").read_text().splitlines()]
    assert 2 <= len(done) < n_blocks
    # an interrupted output never carries the output's name (only a complete one does)
    assert not (tmp_path / "part" / {"ome-tiff": "in.ome.tif", "ome-zarr": "in.ome.zarr"}.get(fmt, "in")).exists()
    # without --resume the partial output is refused; with another model the resume is refused
    with pytest.raises(LivedenoiseError, match="--resume"):
        run([tmp_path / "in.ome.tif"], tmp_path / "part", ckpt, fmt=fmt, dtype=dtype)
    with pytest.raises(LivedenoiseError, match="the model differs"):
        run([tmp_path / "in.ome.tif"], tmp_path / "part", ckpt2, fmt=fmt, dtype=dtype, resume=True)
    resumed = run([tmp_path / "in.ome.tif"], tmp_path / "part", ckpt, fmt=fmt, dtype=dtype, resume=True,
                  memory_budget="64MB")  # the recorded block plan wins over a new budget
    assert resumed.items[0].blocks_resumed == len(done)
    assert resumed.frames == 48 - sum(int(np.prod(
        [b - a for a, b in batch.BlockPlan("PTCZYX", frames.shape, tuple(manifest["plan"]["chunks"]), 0,
                                           batch.DenoiserOptions()).block(i)])) for i in done)
    if fmt == "ome-tiff":
        np.testing.assert_array_equal(read_ome(tmp_path / "part" / "in.ome.tif"),
                                      read_ome(tmp_path / "full" / "in.ome.tif"))
    elif fmt == "ome-zarr":
        resumed_px = read_zarr(tmp_path / "part" / "in.ome.zarr", frames.shape[0])
        np.testing.assert_array_equal(resumed_px, read_zarr(tmp_path / "full" / "in.ome.zarr", frames.shape[0]))
        np.testing.assert_allclose(resumed_px, reference(ckpt, frames), rtol=1e-5, atol=1e-3)
    else:
        a, b = open_dataset(tmp_path / "part" / "in"), open_dataset(tmp_path / "full" / "in")
        np.testing.assert_array_equal(a.reader[...], b.reader[...])
    assert json.loads((state / "in.json").read_text())["state"] == "complete"
    again = run([tmp_path / "in.ome.tif"], tmp_path / "part", ckpt, fmt=fmt, dtype=dtype, resume=True)
    assert again.items[0].status == "already complete" and again.frames == 0


def test_resume_refuses_a_changed_input_and_overwrite_starts_again(tmp_path, frames, ckpt):
    write_ome(tmp_path / "in.ome.tif", frames)
    with pytest.raises(Stop):
        run([tmp_path / "in.ome.tif"], tmp_path / "out", ckpt, memory_budget="1MB", on_block_done=stop_after(1))
    write_ome(tmp_path / "in.ome.tif", frames[::-1].copy())  # same shape, other content
    with pytest.raises(LivedenoiseError, match="the input changed"):
        run([tmp_path / "in.ome.tif"], tmp_path / "out", ckpt, resume=True)
    run([tmp_path / "in.ome.tif"], tmp_path / "out", ckpt, overwrite=True)
    np.testing.assert_allclose(read_ome(tmp_path / "out" / "in.ome.tif"), reference(ckpt, frames[::-1]),
                               rtol=1e-5, atol=1e-3)
    # a file that was not left by livedenoise is never "resumed" into
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "in.ome.tif").write_bytes(b"foreign")
    with pytest.raises(LivedenoiseError, match="no resume record"):
        run([tmp_path / "in.ome.tif"], tmp_path / "other", ckpt, resume=True)
    assert (tmp_path / "other" / "in.ome.tif").read_bytes() == b"foreign"


def test_resume_refuses_an_input_changed_in_place_where_the_file_fingerprint_does_not_look(tmp_path, ckpt):
    """Same size, same first and last MiB: only the per-block digests of the finished blocks see the change."""
    rng = np.random.default_rng(3)
    data = rng.integers(90, 400, (4, 760, 760), dtype=np.uint16)  # 1.15 MB per frame, 4.6 MB file
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, data, photometric="minisblack", metadata={"axes": "TYX"})
    with pytest.raises(Stop):
        run([path], tmp_path / "out", ckpt, memory_budget="40MB", on_block_done=stop_after(1))
    state = tmp_path / "out" / ".livedenoise"
    done = [json.loads(line) for line in (state / "in.done.jsonl").read_text().splitlines()]
    assert len(done) >= 1 and all(len(d["input"]) == 32 for d in done)
    assert {d["frames"] for d in done} == {1}  # one frame per block at this budget: block k is frame k
    # Change one pixel of a frame whose block finished, past the first MiB, in place (what a re-export over the same
    # file does). With two block threads any block may have finished first, so the log says which.
    block = done[0]["block"]
    raw = bytearray(path.read_bytes())
    size = len(raw)
    with tifffile.TiffFile(path) as tif:
        row = 759 if block == 0 else 0  # frame 0's last row lies past the first MiB
        offset = tif.pages[block].dataoffsets[0] + 2 * (760 * row + 10)
    assert (1 << 20) < offset < size - (1 << 20)
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(LivedenoiseError,
                       match=rf"in\.tif changed since the interrupted run \(the pixels of block {block}\b"):
        run([path], tmp_path / "out", ckpt, resume=True)
    assert not (tmp_path / "out" / "in.ome.tif").exists()


# ---------------------------------------------------------------------------------------------
# bad input: clear errors, nothing written
# ---------------------------------------------------------------------------------------------
def test_bad_inputs_fail_before_anything_is_written(tmp_path, frames, ckpt):
    write_ome(tmp_path / "good.ome.tif", frames[:1])
    raw = (tmp_path / "good.ome.tif").read_bytes()
    (tmp_path / "trunc.tif").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00" + b"\xff" * 64)
    out = tmp_path / "out"
    cases = [
        ({"inputs": [tmp_path / "trunc.tif"]}, InputDataError, "truncated|corrupt"),
        ({"inputs": [tmp_path / "corrupt.tif"]}, InputDataError, "corrupt.tif"),
        ({"inputs": [tmp_path / "nothere.tif"]}, InputDataError, "no such file"),
        ({"inputs": [tmp_path / "good.ome.tif"], "axes": "TQYX"}, InputDataError, "names 4 axes"),
        ({"inputs": [tmp_path / "good.ome.tif"], "axes": "TCZWX"}, InputDataError, "unknown axis letter"),
        ({"inputs": [tmp_path / "good.ome.tif"], "model": str(tmp_path / "missing.safetensors")}, CheckpointError,
         "missing.safetensors"),
        ({"inputs": [tmp_path / "good.ome.tif"], "model": "huge"}, CheckpointError, "neither a shipped backbone"),
        ({"inputs": [tmp_path / "good.ome.tif"], "memory_budget": "10kB"}, ConfigError, "too small"),
        ({"inputs": [tmp_path / "good.ome.tif"], "dtype": "int4"}, ConfigError, "dtype"),
    ]
    for kwargs, exc, match in cases:
        kwargs = {"model": str(ckpt), "progress": False, "device": "cpu", **kwargs}
        inputs = kwargs.pop("inputs")
        with pytest.raises(exc, match=match):
            denoise_dataset(inputs, out, **kwargs)
        assert not out.exists(), kwargs
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        run([tmp_path / "good.ome.tif"], out, tmp_path / "bad.safetensors")
    assert not out.exists()


@pytest.mark.parametrize("noise_model", ["stored", "fit"])
def test_a_folder_batch_goes_on_past_bad_files_names_each_and_fails_at_the_end(tmp_path, frames, ckpt, noise_model):
    from livedenoise.errors import BatchIncomplete

    src = tmp_path / "in"
    src.mkdir()
    write_ome(src / "a.ome.tif", frames[:1])
    raw = (src / "a.ome.tif").read_bytes()
    (src / "b.tif").write_bytes(raw[: len(raw) // 2])  # truncated
    nan = frames[0, :, 0, 0].astype(np.float32)
    nan[1, 5, 5] = np.nan
    tifffile.imwrite(src / "c.tif", nan, metadata={"axes": "TYX"})
    write_ome(src / "d.ome.tif", frames[1:2])
    out = tmp_path / "out"
    written = out / "in"  # the folder's name is kept under the output folder
    with pytest.raises(BatchIncomplete) as info:
        run([src], out, ckpt, noise_model=noise_model)
    msg = str(info.value)
    assert msg.startswith("2 of 4 inputs could not be denoised") and "b.tif" in msg and "c.tif" in msg, msg
    assert "NaN" in msg and "the other 2 were written" in msg
    summary = info.value.summary
    assert sorted(Path(f["input"]).name for f in summary.failed) == ["b.tif", "c.tif"]
    assert "FAILED: " + str(src / "c.tif") in summary.report()
    for name, data in (("a", frames[:1]), ("d", frames[1:2])):  # the good files, before and after the bad ones
        if noise_model == "stored":  # exactly what one file alone gives (one position: no P axis)
            np.testing.assert_allclose(read_ome(written / f"{name}.ome.tif"), reference(ckpt, data)[0],
                                       rtol=1e-5, atol=1e-3)
        assert (written / f"{name}.ome.tif").is_file()
    assert not (written / "b.ome.tif").exists() and not (written / "c.ome.tif").exists()
    # fixed, then resumed: only the repaired file is denoised
    nan[1, 5, 5] = 100.0
    tifffile.imwrite(src / "c.tif", nan, metadata={"axes": "TYX"})
    (src / "b.tif").unlink()
    again = run([src], out, ckpt, noise_model=noise_model, resume=True)
    status = {Path(i.input).name: i.status for i in again.items}
    assert status == {"a.ome.tif": "already complete", "c.tif": "done", "d.ome.tif": "already complete"}
    assert (written / "c.ome.tif").is_file() and not again.failed


def test_a_nan_frame_in_a_single_input_is_named_with_its_file(tmp_path, frames, ckpt):
    nan = frames[0, :, 0, 0].astype(np.float32)
    nan[1, 5, 5] = np.nan
    tifffile.imwrite(tmp_path / "c.tif", nan, metadata={"axes": "TYX"})
    with pytest.raises(InputDataError, match=r"c\.tif: .*NaN"):
        run([tmp_path / "c.tif"], tmp_path / "out", ckpt)
    assert not (tmp_path / "out" / "c.ome.tif").exists()


def test_output_inside_the_input_or_onto_it_is_refused(tmp_path, frames, ckpt):
    folder = tmp_path / "data"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", frames[0, 0])
    write_ndtiff(tmp_path / "acq", frames[:1, :1])
    write_ome(folder / "b.ome.tif", frames[:1])
    for inputs, out in [([folder], folder / "den"), ([tmp_path / "acq"], tmp_path / "acq" / "out"),
                        ([folder / "b.ome.tif"], folder), ([folder], tmp_path)]:
        with pytest.raises(InputDataError, match=r"inside the input|the input itself"):
            run(inputs, out, ckpt)
    assert sorted(p.name for p in folder.iterdir()) == ["a.tif", "b.ome.tif"]


def test_mismatched_pair_folder_for_adapt_is_a_clear_error(tmp_path, frames, ckpt):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    tifffile.imwrite(pairs / "a_noisy.tif", frames[0, 0, 0, 0])
    tifffile.imwrite(tmp_path / "x.tif", frames[0, 0, 0])
    with pytest.raises(InputDataError, match=r"a_clean\.tif"):
        run([tmp_path / "x.tif"], tmp_path / "out", ckpt, adapt=("pairs", pairs))
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_the_plan_and_writes_nothing(tmp_path, frames, ckpt):
    write_ome(tmp_path / "a.ome.tif", frames)
    summary = run([tmp_path / "a.ome.tif"], tmp_path / "out", ckpt, dry_run=True, memory_budget="1MB",
                  adapt="self", per_channel=True)
    text = summary.report()
    assert "Dry run" in text and "a.ome.tif" in text and "block(s)" in text and "would fine-tune" in text
    assert summary.items[0].blocks > 1 and not (tmp_path / "out").exists()


def test_without_a_model_the_default_backbone_denoises(tmp_path, frames):
    from livedenoise.checkpoint import DEFAULT_BACKBONE, backbone_path

    write_ome(tmp_path / "a.ome.tif", frames[:1, :1])
    summary = denoise_dataset([tmp_path / "a.ome.tif"], tmp_path / "out", progress=False, device="cpu", dry_run=True)
    assert DEFAULT_BACKBONE == "fast" and [m["name"] for m in summary.models] == [f"backbone-{DEFAULT_BACKBONE}"]
    assert backbone_path().name == f"backbone-{DEFAULT_BACKBONE}.safetensors"


# ---------------------------------------------------------------------------------------------
# adaptation
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def short_finetunes(monkeypatch):
    """``--adapt`` fits of exactly 10 steps (validated at 5 and 10), whatever the machine's speed."""
    from livedenoise.config import TrainingConfig
    from livedenoise.training import finetune as ft

    original = ft.finetune
    cfg = TrainingConfig(patch_size=32, batch_size=4, max_steps=10, steps_per_validation=5, lr_self_supervised=1e-3)
    monkeypatch.setattr(ft, "finetune", lambda *a, **kw: original(*a, **{**kw, "training": cfg}))


def test_adapt_self_per_channel_saves_models_into_outdir(tmp_path, frames, ckpt, short_finetunes):
    write_ome(tmp_path / "a.ome.tif", frames[:1, :2])
    summary = run([tmp_path / "a.ome.tif"], tmp_path / "out", ckpt, adapt="self", per_channel=True,
                  adapt_time_s=600.0, adapt_frames=2)
    saved = sorted(p.name for p in (tmp_path / "out").glob("*.safetensors"))
    assert saved == ["livedenoise-adapted-self-c0.safetensors", "livedenoise-adapted-self-c1.safetensors"]
    prov = read_provenance(tmp_path / "out" / "a.ome.tif")
    assert [m["channel"] for m in prov["model"]] == [0, 1] and prov["adapted"]["mode"] == "self"
    assert prov["adapted"]["base"]["sha256"] == batch.file_sha256(ckpt)
    # every saved model was really trained: 10 steps, weights from a later validation than the initial one
    fits = prov["adapted"]["fits"]
    assert [f["channel"] for f in fits] == [0, 1]
    assert all(f["adapted"] and f["steps"] == 10 and f["best_step"] in (5, 10) for f in fits), fits
    assert all(f["best_val_loss"] < f["initial_val_loss"] for f in fits), fits
    from livedenoise.checkpoint import load_checkpoint

    for name in saved:
        training = load_checkpoint(tmp_path / "out" / name).training
        assert training["adapted"] is True and training["steps"] == 10 and training["inversion"] == "algebraic"
    out = read_ome(tmp_path / "out" / "a.ome.tif")
    for c, name in enumerate(saved):
        np.testing.assert_allclose(out[:, c], reference(tmp_path / "out" / name, frames[0, :2, c]),
                                   rtol=1e-5, atol=1e-3)
    assert len(summary.adapted) == 2 and not [w for w in summary.warnings if w.startswith("--adapt")]


def test_adapt_that_ran_no_step_saves_nothing_and_says_so(tmp_path, frames, ckpt):
    """A budget too short for one step: the base model denoises, no "adapted" model is written or reported."""
    write_ome(tmp_path / "a.ome.tif", frames[:1, :1])
    summary = run([tmp_path / "a.ome.tif"], tmp_path / "out", ckpt, adapt="self", adapt_time_s=1e-6, adapt_frames=2)
    assert not list((tmp_path / "out").glob("*.safetensors")) and summary.adapted == []
    # (the tiny random model fails the residual check)
    adapt_warnings = [w for w in summary.warnings if w.startswith("--adapt")]
    assert len(adapt_warnings) == 1
    assert adapt_warnings[0].startswith("--adapt self: not adapted (no training step ran in 0 s); denoised with "
                                        "the base model tiny instead, nothing saved")
    text = summary.report()
    assert "Adapted model(s) saved" not in text and "warning: --adapt self: not adapted" in text
    prov = read_provenance(tmp_path / "out" / "a.ome.tif")
    assert prov["adapted"]["saved"] == [] and prov["adapted"]["fits"][0]["adapted"] is False
    assert prov["adapted"]["fits"][0]["steps"] == 0
    assert prov["model"]["sha256"] == batch.file_sha256(ckpt)  # the base model, not a relabelled copy
    out = read_ome(tmp_path / "out" / "a.ome.tif")
    np.testing.assert_allclose(out, reference(ckpt, frames[0, 0]), rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# scaling out: dask.distributed gives the same output; jobs carry paths, not models
# ---------------------------------------------------------------------------------------------
def test_local_cluster_gives_the_same_output(tmp_path, frames, ckpt):
    from distributed import Client, LocalCluster

    write_ome(tmp_path / "a.ome.tif", frames)
    # one local thread = one cluster thread: the same block plan, so bit-identical results
    run([tmp_path / "a.ome.tif"], tmp_path / "local", ckpt, memory_budget="1MB", workers=1)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        summary = run([tmp_path / "a.ome.tif"], tmp_path / "dist", ckpt, memory_budget="1MB",
                      scheduler=cluster.scheduler_address)
        assert summary.items[0].blocks > 1
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.workers)) == 1
    np.testing.assert_array_equal(read_ome(tmp_path / "dist" / "a.ome.tif"), read_ome(tmp_path / "local" / "a.ome.tif"))


def test_block_jobs_are_small_and_carry_no_torch_objects(tmp_path, frames, ckpt):
    write_ome(tmp_path / "a.ome.tif", frames)
    ds = open_dataset(tmp_path / "a.ome.tif")
    ref = batch.resolve_model(str(ckpt))
    job = BlockJob(0, ((0, 1), (0, 4), (0, 2), (0, 2)), ds.spec, (ref,), None, None, batch.DenoiserOptions(),
                   "<f4", batch.NpyBlockTarget(str(tmp_path / "blocks"), "<f4"), batch.source_stamp(ds.path))
    data = pickle.dumps(job)
    assert len(data) < 4000 and b"torch" not in data and ref.path == str(ckpt.resolve())
    (tmp_path / "blocks").mkdir()
    batch_block._DATASETS.clear()
    batch_models._DENOISERS.clear()  # a fresh worker: it opens the file and loads the checkpoint from its path
    result = batch.process_block(pickle.loads(data))
    assert result.frames == 16
    np.testing.assert_allclose(np.load(tmp_path / "blocks" / "block-0000000.npy")[0], reference(ckpt, frames[0]),
                               rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# memory: peak RSS stays near the budget on a dataset many times larger
# ---------------------------------------------------------------------------------------------
def test_peak_memory_stays_bounded_on_a_dataset_much_larger_than_the_budget(tmp_path, ckpt):
    n, h, w = 48, 512, 512  # 24 MB uint16 in, 48 MB float32 out; budget 24 MB
    rng = np.random.default_rng(0)
    with tifffile.TiffWriter(tmp_path / "big.tif") as tw:
        for _ in range(n):
            tw.write(rng.poisson(30, size=(h, w)).astype(np.uint16) + 100, contiguous=True, metadata={"axes": "TYX"})
    with tifffile.TiffWriter(tmp_path / "small.tif") as tw:
        tw.write(rng.poisson(30, size=(2, h, w)).astype(np.uint16) + 100)
    script = textwrap.dedent(f"""
        import json, resource, torch
        from livedenoise.batch import denoise_dataset
        torch.set_num_threads(1)
        kw = dict(model={str(ckpt)!r}, memory_budget="24MB", progress=False, device="cpu")
        denoise_dataset([{str(tmp_path / 'small.tif')!r}], {str(tmp_path / 'warm')!r}, **kw)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        s = denoise_dataset([{str(tmp_path / 'big.tif')!r}], {str(tmp_path / 'out')!r}, **kw)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"base_kb": base, "peak_kb": peak, "blocks": s.items[0].blocks, "frames": s.frames}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["frames"] == n and res["blocks"] >= 12
    grew_mb = (res["peak_kb"] - res["base_kb"]) / 1024
    dataset_mb = n * h * w * (2 + 4) / 2**20  # input + output: what a non-streaming run would hold
    assert grew_mb < 40, res  # 24 MB budget + a generous margin for allocator slack; the data are 72 MB
    assert grew_mb < dataset_mb / 2
    assert (tmp_path / "out" / "big.ome.tif").stat().st_size > n * h * w * 4


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_denoise_dry_run_run_and_errors(tmp_path, frames, ckpt, capsys):
    from livedenoise.cli import main

    write_ome(tmp_path / "a.ome.tif", frames[:1, :1])
    out = tmp_path / "out"
    assert main(["denoise", str(tmp_path / "a.ome.tif"), "-o", str(out), "--model", str(ckpt), "--dry-run",
                 "--no-progress", "--device", "cpu"]) == 0
    assert "Dry run" in capsys.readouterr().out and not out.exists()
    assert main(["denoise", str(tmp_path / "a.ome.tif"), "-o", str(out), "--model", str(ckpt), "--dtype", "input",
                 "--no-progress", "--device", "cpu"]) == 0
    assert "Mpx/s" in capsys.readouterr().out and open_dataset(out / "a.ome.tif").dtype == np.uint16
    assert main(["denoise", str(tmp_path / "a.ome.tif"), "-o", str(out), "--model", str(ckpt), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["denoise", "--adapt", "self", str(tmp_path / "a.ome.tif"), "-o", str(out), "--model", str(ckpt),
                 "--dry-run", "--no-progress"]) == 0
    assert "would fine-tune" in capsys.readouterr().out
    assert main(["denoise", "-o", str(out)]) == 2
    assert "No INPUT" in capsys.readouterr().err


def test_self_ensemble_reaches_every_block_and_is_kept_on_resume(tmp_path, frames, ckpt, capsys):
    from livedenoise.cli import main
    from livedenoise.inference import Denoiser

    write_ome(tmp_path / "a.ome.tif", frames[:1, :2])
    out = tmp_path / "out"
    assert main(["denoise", str(tmp_path / "a.ome.tif"), "-o", str(out), "--model", str(ckpt), "--ensemble", "8",
                 "--noise-model", "stored", "--no-progress", "--device", "cpu"]) == 0
    den = Denoiser(str(ckpt), device="cpu", ensemble=8)
    data = frames[:1, :2]
    expected = np.stack([den.denoise(f) for f in data.reshape(-1, *data.shape[-2:])]).reshape(data.shape)
    got = open_dataset(out / "a.ome.tif").reader[...]  # one position: saved as TCZYX
    np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-3)
    assert not np.allclose(got, reference(ckpt, data)[0], atol=1e-2)  # the ensemble really ran
    manifest = json.loads((out / batch.STATE_DIR / "a.json").read_text())
    assert manifest["plan"]["denoiser"]["ensemble"] == 8  # a resumed run rebuilds the same Denoiser
    assert read_provenance(out / "a.ome.tif")["ensemble"] == 8
    # resuming with another ensemble size is refused (the output would mix two estimators)
    (out / batch.STATE_DIR / "a.json").write_text(json.dumps({**manifest, "state": "running"}))
    with pytest.raises(LivedenoiseError, match="used --ensemble 8, this one asks for 1"):
        run([tmp_path / "a.ome.tif"], out, ckpt, resume=True)
    with pytest.raises(SystemExit):
        main(["denoise", str(tmp_path / "a.ome.tif"), "-o", str(tmp_path / "o2"), "--ensemble", "3"])
    assert "invalid choice: 3" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--ensemble 5 is invalid"):
        run([tmp_path / "a.ome.tif"], tmp_path / "o3", ckpt, ensemble=5)


def test_precision_reaches_every_block_is_recorded_and_kept_on_resume(tmp_path, frames, ckpt, capsys):
    from livedenoise.cli import main
    from livedenoise.inference import Denoiser

    write_ome(tmp_path / "a.ome.tif", frames[:1, :2])
    out = tmp_path / "out"
    assert main(["denoise", str(tmp_path / "a.ome.tif"), "-o", str(out), "--model", str(ckpt), "--precision", "bf16",
                 "--noise-model", "stored", "--no-progress", "--device", "cpu"]) == 0
    den = Denoiser(str(ckpt), device="cpu", precision="bf16")
    data = frames[:1, :2]
    expected = np.stack([den.denoise(f) for f in data.reshape(-1, *data.shape[-2:])]).reshape(data.shape)
    got = open_dataset(out / "a.ome.tif").reader[...]
    np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-3)
    assert not np.array_equal(got, reference(ckpt, data)[0])  # bf16 arithmetic really ran
    manifest = json.loads((out / batch.STATE_DIR / "a.json").read_text())
    assert manifest["plan"]["denoiser"]["precision"] == "bf16"
    assert read_provenance(out / "a.ome.tif")["precision"] == "bf16"
    (out / batch.STATE_DIR / "a.json").write_text(json.dumps({**manifest, "state": "running"}))
    with pytest.raises(LivedenoiseError, match="used --precision bf16, this one asks for fp32"):  # auto, on a CPU
        run([tmp_path / "a.ome.tif"], out, ckpt, resume=True)
    # a job started before precisions were recorded ran "auto": it resumes with the default
    old = {**manifest, "plan": {**manifest["plan"], "denoiser": {
        k: v for k, v in manifest["plan"]["denoiser"].items() if k != "precision"}}}
    (out / batch.STATE_DIR / "a.json").write_text(json.dumps(old))
    assert run([tmp_path / "a.ome.tif"], out, ckpt, resume=True).items[0].status == "already complete"
    with pytest.raises(ConfigError, match="Precision 'int8' is unknown"):
        run([tmp_path / "a.ome.tif"], tmp_path / "o3", ckpt, precision="int8")
    with pytest.raises(SystemExit):
        main(["denoise", str(tmp_path / "a.ome.tif"), "-o", str(tmp_path / "o2"), "--precision", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# temporal (2D+T) networks see each frame's neighbours in time
# ---------------------------------------------------------------------------------------------
def test_temporal_model_gets_whole_time_series(tmp_path, frames, ckpt):
    import torch

    from livedenoise.checkpoint import load_checkpoint, save_checkpoint
    from livedenoise.inference import Denoiser
    from livedenoise.models import build_model

    torch.manual_seed(0)
    model = build_model("cnnt", channels=4, heads=1)
    path = save_checkpoint(tmp_path / "t.safetensors", model, arch="cnnt", arch_kwargs={"channels": 4, "heads": 1},
                           normalizer=load_checkpoint(ckpt).normalizer, name="tiny-cnnt")
    data, out = _denoise_movie(tmp_path, frames, path)
    den = Denoiser(str(path), device="cpu")
    for c in range(data.shape[1]):
        np.testing.assert_allclose(out.reader[:, c], den.denoise_stack(data[:, c]), rtol=1e-5, atol=1e-3)
    assert read_provenance(tmp_path / "out" / "movie.ome.tif")["second_pass"] is False  # a CNNT has none


def _denoise_movie(tmp_path, frames, model_path):
    """A TCYX movie through the batch path with a small memory budget; (input, opened output). T is never split."""
    data = frames[0, :, :, 0]  # T C Y X
    tifffile.imwrite(tmp_path / "movie.tif", data, metadata={"axes": "TCYX"}, photometric="minisblack")
    summary = run([tmp_path / "movie.tif"], tmp_path / "out", model_path, memory_budget="6MB")
    plan = json.loads((tmp_path / "out" / ".livedenoise" / "movie.json").read_text())["plan"]
    assert plan["chunks"][0] == data.shape[0] and summary.items[0].blocks >= 1  # T never split
    return data, open_dataset(tmp_path / "out" / "movie.ome.tif")


def _tiny_temporal(tmp_path, ckpt) -> Path:
    import torch

    from livedenoise.checkpoint import load_checkpoint, save_checkpoint
    from livedenoise.models.temporal import temporal_from_frame_model

    base = load_checkpoint(ckpt)
    model = temporal_from_frame_model(base.model, window=3)
    with torch.no_grad():
        model.fusion.trust.fill_(1.0)
        model.fusion.log_h.fill_(0.0)
    return save_checkpoint(tmp_path / "temporal.safetensors", model, arch="unet-temporal",
                           arch_kwargs=model.arch_kwargs, normalizer=base.normalizer, name="tiny-temporal")


def test_the_temporal_backbone_fuses_whole_time_series(tmp_path, frames, ckpt):
    from livedenoise.inference import Denoiser

    path = _tiny_temporal(tmp_path, ckpt)
    data, out = _denoise_movie(tmp_path, frames, path)
    den = Denoiser(str(path), device="cpu")
    frame_by_frame = Denoiser(str(ckpt), device="cpu")
    for c in range(data.shape[1]):
        fused = den.denoise_stack(data[:, c])
        np.testing.assert_allclose(out.reader[:, c], fused, rtol=1e-5, atol=1e-3)
        assert np.abs(fused - frame_by_frame.denoise_stack(data[:, c])).max() > 1.0  # the neighbours were used


def test_the_second_pass_is_on_by_default_recorded_and_kept_on_resume(tmp_path, frames, ckpt, capsys):
    """--no-second-pass reaches every block's Denoiser, is recorded, and a resume must ask for what the job ran."""
    from livedenoise.cli import main
    from livedenoise.inference import Denoiser

    path = _tiny_temporal(tmp_path, ckpt)
    data = frames[0, :, 0, 0]  # T Y X
    tifffile.imwrite(tmp_path / "movie.tif", data, metadata={"axes": "TYX"}, photometric="minisblack")
    outs = {}
    for flag, folder in ((True, "on"), (False, "off")):
        extra = [] if flag else ["--no-second-pass"]
        assert main(["denoise", str(tmp_path / "movie.tif"), "-o", str(tmp_path / folder), "--model", str(path),
                     "--noise-model", "stored", "--no-progress", "--device", "cpu", *extra]) == 0
        said = "with its second pass" if flag else "the fusion alone (--no-second-pass)"
        assert f"), {said}." in capsys.readouterr().out  # the summary says how the temporal model ran
        got = open_dataset(tmp_path / folder / "movie.ome.tif").reader[...]
        np.testing.assert_allclose(got, Denoiser(str(path), device="cpu", second_pass=flag).denoise_stack(data),
                                   rtol=1e-5, atol=1e-3)
        manifest = json.loads((tmp_path / folder / batch.STATE_DIR / "movie.json").read_text())
        assert manifest["plan"]["denoiser"]["second_pass"] is flag
        assert read_provenance(tmp_path / folder / "movie.ome.tif")["second_pass"] is flag
        outs[flag] = got
    assert np.abs(outs[True] - outs[False]).max() > 1.0  # the second pass changed the frames
    manifest_path = tmp_path / "off" / batch.STATE_DIR / "movie.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "state": "running"}))
    with pytest.raises(LivedenoiseError, match="used --no-second-pass, this one asks for the temporal second pass"):
        run([tmp_path / "movie.tif"], tmp_path / "off", path, resume=True)
    # a temporal job from before the second pass existed ran without it: it resumes only without it, and stays so
    old = {**manifest, "plan": {**manifest["plan"], "denoiser": {
        k: v for k, v in manifest["plan"]["denoiser"].items() if k != "second_pass"}}}
    manifest_path.write_text(json.dumps(old))
    with pytest.raises(LivedenoiseError, match="used --no-second-pass"):
        run([tmp_path / "movie.tif"], tmp_path / "off", path, resume=True)
    resumed = run([tmp_path / "movie.tif"], tmp_path / "off", path, resume=True, second_pass=False)
    assert resumed.items[0].status == "already complete"
    # a 2-D job records no second pass, and resumes whatever the flag says
    tifffile.imwrite(tmp_path / "still.tif", data[0])
    summary = run([tmp_path / "still.tif"], tmp_path / "still", ckpt)
    assert read_provenance(tmp_path / "still" / "still.ome.tif")["second_pass"] is False
    assert "second pass" not in summary.report() and "fusion alone" not in summary.report()


@pytest.mark.parametrize("kind", ["fused", "cnnt"])
def test_a_long_time_lapse_is_cut_along_t_and_each_frame_denoised_with_its_neighbours(tmp_path, ckpt, kind):
    """Memory must not grow with the number of time points: a temporal network's blocks along T are read with its
    window's neighbours on each side, and the frames written equal the whole series' (a block boundary changes
    nothing). Until 2026-12-06 a 400-frame 256² movie needed a 753 MB budget, an 800-frame one 1.2 GB."""
    import torch

    from livedenoise.checkpoint import load_checkpoint, save_checkpoint
    from livedenoise.inference import Denoiser
    from livedenoise.models import build_model

    if kind == "fused":
        path, context = _tiny_temporal(tmp_path, ckpt), 2  # window 3: the fusion reaches 2 frames each way
    else:
        torch.manual_seed(0)
        path = save_checkpoint(tmp_path / "t.safetensors", build_model("cnnt", channels=4, heads=1), arch="cnnt",
                               arch_kwargs={"channels": 4, "heads": 1}, normalizer=load_checkpoint(ckpt).normalizer,
                               name="tiny-cnnt")
        context = 4  # the Denoiser's default window of 5, centred
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    scene = 30 + 400 * np.exp(-((yy - 32) ** 2 + (xx - 20) ** 2) / 60.0)
    movie = np.stack([100 + rng.poisson(np.roll(scene, t, axis=1)) for t in range(40)]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "movie.tif", movie, metadata={"axes": "TYX"}, photometric="minisblack")
    budget = "6MB" if kind == "fused" else "10MB"  # a few blocks of each
    summary = run([tmp_path / "movie.tif"], tmp_path / "out", path, memory_budget=budget, noise_model="stored")
    plan = json.loads((tmp_path / "out" / batch.STATE_DIR / "movie.json").read_text())["plan"]
    assert plan["chunks"][0] < 40 and plan["context"] == [context] and summary.items[0].blocks >= 3
    assert summary.items[0].frames == 40  # every frame written once, the neighbours read for context not counted
    dry = run([tmp_path / "movie.tif"], tmp_path / "dry", path, memory_budget=budget, noise_model="stored",
              dry_run=True)  # the plan says how its blocks are read
    assert f"each read with {context} more frames on each side along T" in dry.report()
    got = open_dataset(tmp_path / "out" / "movie.ome.tif").reader[...]
    whole = Denoiser(str(path), device="cpu").denoise_stack(movie)
    np.testing.assert_allclose(got, np.clip(np.rint(whole), 0, 65535), rtol=0, atol=1.0)
    # without the neighbours (each block alone) the frames at block boundaries differ
    chunk = plan["chunks"][0]
    alone = Denoiser(str(path), device="cpu").denoise_stack(movie[chunk:2 * chunk])
    assert np.abs(alone[0] - whole[chunk]).max() > 1.0
    smallest = rf"{2 * context + 1} frames \(one and its {2 * context} temporal neighbours\)"
    with pytest.raises(ConfigError, match=smallest):
        plan_blocks((40, 64, 64), "TYX", "uint16", "float32", 10**5, context_axes="T", context=context)


def test_a_temporal_model_refuses_single_frames_in_one_sentence(tmp_path, frames, ckpt):
    path = _tiny_temporal(tmp_path, ckpt)
    tifffile.imwrite(tmp_path / "still.tif", frames[0, 0, 0, 0])
    with pytest.raises(InputDataError, match=r"still.tif has no time axis of several frames .*axes YX.*denoises "
                                             r"time-lapses.*--model fast"):
        run([tmp_path / "still.tif"], tmp_path / "out", path)
    assert not (tmp_path / "out").exists()


def test_denoise_picks_the_temporal_backbone_for_time_lapses_only(tmp_path, frames, monkeypatch):
    from livedenoise import batch, checkpoint
    from livedenoise.io import open_dataset as open_ds

    tifffile.imwrite(tmp_path / "movie.tif", frames[0, :, 0, 0], metadata={"axes": "TYX"}, photometric="minisblack")
    tifffile.imwrite(tmp_path / "still.tif", frames[0, 0, 0, 0])
    movie, still = open_ds(tmp_path / "movie.tif"), open_ds(tmp_path / "still.tif")
    monkeypatch.setattr(checkpoint, "available_backbones", lambda: ["fast", "standard", "temporal"])
    assert batch.default_model_for([movie]) == "temporal"
    assert batch.default_model_for([movie, still]) == "fast"  # one job, one model: single frames need the 2-D one
    assert batch.default_model_for([still]) == "fast"
    monkeypatch.setattr(checkpoint, "available_backbones", lambda: ["fast"])
    assert batch.default_model_for([movie]) == "fast"  # not installed: the 2-D default


def test_an_unwritable_or_full_output_is_refused_in_one_sentence_before_any_work(tmp_path, frames, ckpt, monkeypatch):
    import collections

    write_ome(tmp_path / "in.ome.tif", frames[:1])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LivedenoiseError,
                       match=r"Cannot write to the output folder .*afile/sub: .*afile is a file, not a folder"):
        run([tmp_path / "in.ome.tif"], tmp_path / "afile" / "sub", ckpt)
    usage = collections.namedtuple("usage", "total used free")
    from livedenoise import diskspace

    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 3000, 3000))
    with pytest.raises(LivedenoiseError, match=r"The outputs need about .* but .*out has only 3.0 KB free"):
        run([tmp_path / "in.ome.tif"], tmp_path / "out", ckpt, dtype="float32")
    assert not (tmp_path / "out").exists()  # checked, not created: a refused run leaves nothing behind


def test_process_wide_caches_are_bounded(tmp_path, monkeypatch):
    """A long-lived process (a notebook, a dask worker) keeps only the most recently used inputs and in-process
    models; the evicted ones are dropped from the cache."""
    from livedenoise import batch
    from livedenoise.io import SourceSpec

    monkeypatch.setattr(batch_block, "MAX_OPEN_DATASETS", 2)
    monkeypatch.setattr(batch_block, "_DATASETS", type(batch_block._DATASETS)())
    specs = []
    for i in range(3):
        path = tmp_path / f"in{i}.tif"
        tifffile.imwrite(path, np.full((8, 8), i, np.uint16))
        specs.append((SourceSpec(str(path), "tiff"), batch.source_stamp(path)))
    first = batch_block._dataset_for(*specs[0])
    batch_block._dataset_for(*specs[1])
    assert batch_block._dataset_for(*specs[0]) is first  # a hit refreshes it
    batch_block._dataset_for(*specs[2])
    assert list(batch_block._DATASETS) == [(specs[0][0], specs[0][1]), (specs[2][0], specs[2][1])]
    monkeypatch.setattr(batch_models, "MAX_LOCAL_MODELS", 2)
    monkeypatch.setattr(batch_models, "_LOCAL_MODELS", type(batch_models._LOCAL_MODELS)())
    for i in range(3):
        batch_models._keep_local_model(f"sha{i}", object())
    assert list(batch_models._LOCAL_MODELS) == ["sha1", "sha2"]


def test_ome_zarr_output_has_ngff_axes_scales_and_provenance(tmp_path, frames, ckpt, capsys):
    """OME-Zarr (NGFF 0.5): axes reordered to t, c, z, y, x; the input's pixel size kept; positions as a
    bioformats2raw layout; provenance in the root attributes; the CLI writes it too."""
    from livedenoise.cli import main

    data = frames[0, :, :, 0]  # T C Y X
    tifffile.imwrite(tmp_path / "movie.ome.tif", np.ascontiguousarray(data.transpose(1, 0, 2, 3)), ome=True,
                     photometric="minisblack", metadata={"axes": "CTYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    run([tmp_path / "movie.ome.tif"], tmp_path / "out", ckpt, fmt="zarr")
    out = tmp_path / "out" / "movie.ome.zarr"
    meta = json.loads((out / "zarr.json").read_text())["attributes"]
    ms = meta["ome"]["multiscales"][0]
    assert meta["ome"]["version"] == "0.5" and [a["name"] for a in ms["axes"]] == ["t", "c", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["time", "channel", "space", "space"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"][-2:] == [0.5, 0.5]
    assert ms["axes"][-1]["unit"] == "micrometer"
    assert meta["livedenoise"]["format"] == "ome-zarr" and meta["livedenoise"]["model"]["name"] == "tiny"
    np.testing.assert_allclose(read_zarr(out), reference(ckpt, data), rtol=1e-5, atol=1e-3)  # T C Y X order
    write_ome(tmp_path / "cells.ome.tif", frames)
    assert main(["denoise", str(tmp_path / "cells.ome.tif"), "-o", str(tmp_path / "cli"), "--format", "ome-zarr",
                 "--model", str(ckpt), "--noise-model", "stored", "--device", "cpu", "--no-progress"]) == 0
    root = json.loads((tmp_path / "cli" / "cells.ome.zarr" / "zarr.json").read_text())["attributes"]
    assert root["ome"]["bioformats2raw.layout"] == 3 and "livedenoise" in root
    np.testing.assert_allclose(read_zarr(tmp_path / "cli" / "cells.ome.zarr", frames.shape[0]),
                               reference(ckpt, frames), rtol=1e-5, atol=1e-3)
    assert not list((tmp_path / "cli" / ".livedenoise").glob("*.partial.ome.zarr"))


def test_ome_zarr_refuses_more_than_five_image_axes_in_one_sentence():
    from livedenoise.io.omezarr import ngff_order

    assert ngff_order("PZCTYX") == ("TCZYX", (2, 1, 0, 3, 4))
    with pytest.raises(InputDataError, match=r"at most 5 dimensions.*ome-tiff or ndtiff"):
        ngff_order("TCZAYX")


def test_ome_zarr_recreated_at_the_same_path_never_writes_through_an_old_handle(tmp_path):
    """An output started again (--overwrite after an interruption, or a long-lived worker's next job) gets fresh
    array handles: the earlier array's dtype and shape are never reused."""
    import shutil
    from types import SimpleNamespace

    from livedenoise.io.omezarr import create_ome_zarr

    ds = SimpleNamespace(axes="TYX", shape=(2, 8, 8), metadata={})
    first = create_ome_zarr(tmp_path / "o.ome.zarr", ds, np.float32, {})
    first.write_block([(0, 2)], np.full((2, 8, 8), 0.5, np.float32))
    shutil.rmtree(tmp_path / "o.ome.zarr")
    second = create_ome_zarr(tmp_path / "o.ome.zarr", SimpleNamespace(axes="TYX", shape=(3, 8, 8), metadata={}),
                             np.uint16, {})
    assert second.token != first.token
    second.write_block([(0, 3)], np.full((3, 8, 8), 7, np.uint16))
    out = read_zarr(tmp_path / "o.ome.zarr")
    assert out.dtype == np.uint16 and out.shape == (3, 8, 8) and (out == 7).all()
    with pytest.raises(LivedenoiseError, match="not the one this job created"):
        first.write_block([(0, 2)], np.zeros((2, 8, 8), np.float32))  # the old target sees the new array and refuses


def test_ome_zarr_inputs_read_back_and_denoise_like_tiff(tmp_path, frames, ckpt):
    """An OME-Zarr (our own output, NGFF 0.5 with positions, or a plain NGFF 0.4 / Zarr v2 image) opens lazily with
    its axes, pixel size and pixels; batch-denoising it gives what the same frames give from a TIFF; a corrupt
    chunk is one sentence naming the array."""
    import tensorstore as ts

    from livedenoise.io import expand_inputs

    write_ome(tmp_path / "cells.ome.tif", frames)
    run([tmp_path / "cells.ome.tif"], tmp_path / "z", ckpt, fmt="ome-zarr", dtype="input")
    src = tmp_path / "z" / "cells.ome.zarr"
    ds = open_dataset(src)
    assert (ds.format, ds.axes, ds.shape, ds.dtype) == ("ome-zarr", "PTCZYX", frames.shape, np.uint16)
    assert ds.metadata["physical_size"]["X"] == (0.65, "µm") and ds.metadata["series_names"] == ["0", "1", "2"]
    np.testing.assert_array_equal(ds.reader[1, 0], read_zarr(src, frames.shape[0])[1, 0])
    assert [i.path for i in expand_inputs([tmp_path / "z"])] == [src]  # a folder's OME-Zarr images are inputs
    run([src], tmp_path / "again", ckpt)
    np.testing.assert_allclose(read_ome(tmp_path / "again" / "cells.ome.tif"),
                               reference(ckpt, read_zarr(src, frames.shape[0])), rtol=1e-5, atol=1e-3)
    # NGFF 0.4: Zarr v2 arrays, the OME metadata at the top of .zattrs
    v2 = tmp_path / "old.zarr"
    data = frames[0, :, 0, 0]  # T Y X
    arr = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(v2 / "0")}}, create=True,
                  dtype=ts.uint16, shape=data.shape,
                  chunk_layout=ts.ChunkLayout(chunk_shape=(1, *data.shape[1:]))).result()
    arr.write(data).result()
    (v2 / ".zgroup").write_text('{"zarr_format": 2}')
    (v2 / ".zattrs").write_text(json.dumps({"multiscales": [{"version": "0.4", "axes": [
        {"name": "t", "type": "time"}, {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.2, 0.2]}]}]}]}))
    old = open_dataset(v2)
    assert (old.axes, old.shape, old.metadata["physical_size"]["Y"]) == ("TYX", data.shape, (0.2, "µm"))
    np.testing.assert_array_equal(old.reader[...], data)
    chunk = next(p for p in (src / "0" / "0").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"not a chunk")
    with pytest.raises(InputDataError, match=r"cannot read plane.*incomplete or corrupt"):
        open_dataset(src).reader[...]


def test_ome_zarr_input_edge_cases(tmp_path):
    """A chunk never written is an error (not a black frame); axes are typed by NGFF type before name; a big-endian
    Zarr v2 array reports the native type it is read in; a unit livedenoise cannot name leaves the size out."""
    import tensorstore as ts

    v2 = tmp_path / "odd.zarr"
    data = (np.arange(3 * 8 * 8) % 251).astype(">u2").reshape(3, 8, 8)
    arr = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(v2 / "0")},
                   "metadata": {"dtype": ">u2", "shape": list(data.shape), "chunks": [1, 8, 8]}}, create=True).result()
    arr[:2].write(data[:2].astype(np.uint16)).result()  # the third frame never written
    (v2 / ".zgroup").write_text('{"zarr_format": 2}')
    (v2 / ".zattrs").write_text(json.dumps({"multiscales": [{"version": "0.4", "axes": [
        {"name": "frame", "type": "time", "unit": "fortnight"}, {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "parsec"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]}]}]}))
    ds = open_dataset(v2)
    assert ds.axes == "TYX" and ds.dtype == np.dtype("uint16") and ds.dtype.isnative
    assert ds.metadata.get("physical_size") == {"Y": (0.5, "µm")} and "time_increment" not in ds.metadata
    np.testing.assert_array_equal(ds.reader[:2], data[:2])
    with pytest.raises(InputDataError, match=r"cannot read plane \[2\].*incomplete or corrupt"):
        ds.reader[2]
    (v2 / ".zattrs").write_text('{"multiscales": [{"version": "0.4", "ax')  # cut short: named, not "no images found"
    with pytest.raises(InputDataError, match=r"odd\.zarr/\.zattrs: is not valid JSON .*corrupt or truncated"):
        open_dataset(v2)


def test_batch_options_are_checked_together_and_name_the_option(tmp_path):
    """BatchOptions refuses contradictions and bad values in one sentence naming the option, before any work; a
    BatchOptions can be reused across jobs with keywords overriding it."""
    from livedenoise.batch import BatchOptions
    from livedenoise.errors import ConfigError, InputDataError

    opts = BatchOptions.build(fmt="zarr", memory_budget="2GB", adapt=("pairs", tmp_path))
    assert (opts.fmt, opts.memory_budget, opts.adapt, opts.pairs) == ("ome-zarr", 2 * 10**9, "pairs", str(tmp_path))
    # what the keyword API accepted before BatchOptions still works: a torch.device, a numpy integer
    import torch

    opts = BatchOptions.build(device=torch.device("cpu"), frames_averaged=np.int64(4))
    assert (opts.device, opts.frames_averaged) == ("cpu", 4)
    cases = [
        ({"resume": True, "overwrite": True}, ConfigError, "--resume and --overwrite contradict"),
        ({"noise_model": "stored", "frames_averaged": 4}, ConfigError, "--frames-averaged need --noise-model fit"),
        ({"adapt": "pairs"}, ConfigError, "--adapt pairs needs the folder of pairs"),
        ({"per_channel": True}, ConfigError, "--per-channel needs --adapt self"),
        ({"ensemble": 3}, ConfigError, "--ensemble 3 is invalid; expected one of 1, 2, 4, 8"),
        ({"workers": 0}, ConfigError, "option 'workers': Input should be greater than or equal to 1 (got 0)"),
        ({"frames_averaged": 1.5}, ConfigError, "--frames-averaged 1.5 is invalid"),
        ({"precision": "int8"}, ConfigError, "Precision 'int8' is unknown"),
        ({"axes": "YXYX"}, InputDataError, "names an axis twice"),
        ({"tile": 256}, ConfigError, "unknown option 'tile'"),
    ]
    for kwargs, error, text in cases:
        with pytest.raises(error) as info:
            BatchOptions.build(**kwargs)
        assert text in str(info.value), (kwargs, str(info.value))
    # the job refuses the same way before creating anything; keywords override a reused BatchOptions
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="--resume and --overwrite contradict"):
        denoise_dataset([tmp_path / "missing.tif"], out, BatchOptions(resume=True), overwrite=True)
    assert not out.exists()


def test_the_camera_calibration_option_keeps_its_old_names_for_a_release(tmp_path):
    """`--calibration` / `calibration=` became `--camera-calibration` / `camera_calibration=` ("calibration" alone is
    the live session's reference pairs); the old names still work, the Python keyword with a warning."""
    from livedenoise.batch import BatchOptions
    from livedenoise.cli import build_parser

    args = build_parser().parse_args(["denoise", "in.tif", "-o", "out", "--calibration", "cam.safetensors"])
    assert args.camera_calibration == "cam.safetensors"
    args = build_parser().parse_args(["denoise", "in.tif", "-o", "out", "--camera-calibration", "cam.safetensors"])
    assert args.camera_calibration == "cam.safetensors"
    with pytest.warns(DeprecationWarning, match=r"calibration=\.\.\.\) is now camera_calibration"):
        opts = BatchOptions.build(calibration=tmp_path / "cam.safetensors")
    assert opts.camera_calibration == str(tmp_path / "cam.safetensors")
    # with a reusable base (as denoise_dataset(inputs, out, options, calibration=...) merges them), the old
    # keyword still wins over the base's unset camera_calibration
    base = BatchOptions(dtype="float32").model_dump()
    with pytest.warns(DeprecationWarning):
        opts = BatchOptions.build(**base, calibration=tmp_path / "cam.safetensors")
    assert opts.camera_calibration == str(tmp_path / "cam.safetensors")
    assert opts.dtype == "float32"


def test_denoising_a_denoised_copy_records_what_came_before(tmp_path, frames, ckpt, ckpt2):
    """Provenance of a copy of a copy: the second model, and under ``previous`` the first, as completed."""
    write_ome(tmp_path / "cells.ome.tif", frames[:1])
    run([tmp_path / "cells.ome.tif"], tmp_path / "one", ckpt)
    run([tmp_path / "one" / "cells.ome.tif"], tmp_path / "two", ckpt2)
    prov = read_provenance(tmp_path / "two" / "cells.ome.tif")
    assert prov["model"]["sha256"] == batch.file_sha256(ckpt2) and prov["completed"]
    assert prov["input"]["path"] == str((tmp_path / "one" / "cells.ome.tif").resolve())
    before = prov["previous"]
    assert before["model"]["sha256"] == batch.file_sha256(ckpt) and before["completed"]
    assert before["input"]["path"] == str((tmp_path / "cells.ome.tif").resolve()) and "previous" not in before


def test_compile_reaches_every_block_is_recorded_and_changes_no_output(tmp_path, frames, ckpt, monkeypatch):
    import livedenoise.compiled as compiled_module
    from livedenoise.cli import main

    compiled_nets = []

    def fake_compile(net, **kwargs):  # torch.compile's stand-in: records the networks, runs them as they are
        compiled_nets.append(net)
        return net

    monkeypatch.setattr(compiled_module.torch, "compile", fake_compile)
    data = frames[:1, :2]
    write_ome(tmp_path / "a.ome.tif", data)
    out = tmp_path / "out"
    assert main(["denoise", str(tmp_path / "a.ome.tif"), "-o", str(out), "--model", str(ckpt), "--compile",
                 "--noise-model", "stored", "--no-progress", "--device", "cpu"]) == 0
    assert compiled_nets  # the job's Denoiser compiled its network
    np.testing.assert_allclose(open_dataset(out / "a.ome.tif").reader[...], reference(ckpt, data)[0], rtol=1e-5,
                               atol=1e-3)  # batched frames round differently, to float32's last digits
    manifest = json.loads((out / batch.STATE_DIR / "a.json").read_text())
    assert manifest["plan"]["denoiser"]["compiled"] is True
    assert read_provenance(out / "a.ome.tif")["compiled"] is True
    # compiling changes no output: a job resumes compiled or not, whatever it started with (no refusal as for
    # --precision)
    uncompiled = {**manifest, "plan": {**manifest["plan"], "denoiser": {**manifest["plan"]["denoiser"],
                                                                         "compiled": False}}}
    (out / batch.STATE_DIR / "a.json").write_text(json.dumps(uncompiled))
    assert run([tmp_path / "a.ome.tif"], out, ckpt, resume=True, compiled=True).items[0].status == "already complete"
