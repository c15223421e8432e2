"""Bad input named in one sentence: cases a newcomer's audit found unnamed, misleading or leaking a library's log.

Each runs the CLI as a user would (``livedenoise.cli.main``) and checks the one error line: the file is named, the
reason is the real one, nothing else is printed at error level, and no output is written."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import tifffile
import torch

from livedenoise.cli import main


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("value", [0.0, 1000.0])
def test_a_constant_image_is_called_constant_and_named(tmp_path, capsys, value):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, np.full((64, 64), value, np.float32))
    assert main(["denoise", str(path), "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    err = _error(capsys)
    assert f"{path}: The image for noise estimation is constant (every pixel is {value:g})" in err
    assert "saturated" not in err and not list((tmp_path / "out").glob("*.tif"))


def test_a_noise_fit_refusal_names_the_one_input_file(tmp_path, capsys):
    path = tmp_path / "tiny.tif"
    tifffile.imwrite(path, np.full((7, 9), 100, np.uint16))
    assert main(["denoise", str(path), "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    assert f"{path}: An image for noise estimation has shape (7, 9); expected at least 9x9" in _error(capsys)


def test_finetune_names_the_file_with_bad_pixels(tmp_path, capsys):
    path = tmp_path / "nan.tif"
    frame = np.random.default_rng(0).poisson(20, (64, 64)).astype(np.float32)
    frame[3, 3] = np.nan
    tifffile.imwrite(path, frame)
    assert main(["finetune", "--images", str(path), "-o", str(tmp_path / "m.safetensors")]) == 2
    err = _error(capsys)
    assert f"image {path} contains 1 NaN or infinite value(s)" in err and "#0" not in err
    assert main(["finetune", "--images", str(tmp_path), "-o", str(tmp_path / "m.safetensors")]) == 2
    assert f"{tmp_path}: is a folder; expected TIFF files" in _error(capsys)


def test_several_unnamed_dimensions_ask_for_their_axes(tmp_path, capsys):
    """A 5-D array saved without axes metadata: tifffile calls three dimensions 'Q'; invented letters would make other
    viewers read the output as time points, so the user is asked to name them."""
    path = tmp_path / "five.tif"
    tifffile.imwrite(path, np.random.default_rng(0).poisson(20, (2, 2, 2, 32, 32)).astype(np.uint16))
    assert main(["denoise", str(path), "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "has 3 dimensions that its metadata does not name" in _error(capsys)
    assert main(["denoise", str(path), "-o", str(tmp_path / "out"), "--no-progress", "--axes", "TCZYX"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("shape", [(2, 2, 16, 16), (2, 2, 2, 16, 16), (2, 1, 2, 1, 2, 16, 16)])
def test_the_axes_a_message_suggests_are_accepted_for_that_file(tmp_path, capsys, shape):
    """The example in the message has one letter per dimension, whatever the number of dimensions."""
    path = tmp_path / "many.tif"
    tifffile.imwrite(path, np.random.default_rng(0).poisson(20, shape).astype(np.uint16))
    assert main(["denoise", str(path), "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    suggested = re.search(r"e\.g\. --axes (\w+)\.", _error(capsys))
    assert suggested is not None and len(suggested.group(1)) == len(shape)
    assert main(["denoise", str(path), "-o", str(tmp_path / "out"), "--no-progress", "--model", "fast",
                 "--axes", suggested.group(1)]) == 0
    capsys.readouterr()
    with tifffile.TiffFile(next((tmp_path / "out").glob("*.tif"))) as written:  # a P axis: one series a position
        assert sum(int(np.prod(series.shape)) for series in written.series) == int(np.prod(shape))


def test_a_truncated_tiff_is_reported_once(tmp_path, capsys, caplog):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.random.default_rng(0).poisson(20, (5, 64, 64)).astype(np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        assert main(["denoise", str(path), "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    assert f"{path}: the TIFF structure is corrupt or the file is truncated" in _error(capsys)
    assert not [r for r in caplog.records if r.name == "tifffile"]  # captured and reported once, not logged too


def test_empty_or_foreign_files_and_pickled_models_say_what_was_expected(tmp_path, capsys):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    assert main(["finetune", "--images", str(empty), "-o", str(tmp_path / "m.safetensors")]) == 2
    assert f"{empty}: is empty (0 bytes); expected a TIFF image" in _error(capsys)
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickled)
    frame = tmp_path / "f.tif"
    tifffile.imwrite(frame, np.random.default_rng(0).poisson(20, (32, 32)).astype(np.uint16))
    assert main(["denoise", str(frame), "-o", str(tmp_path / "out"), "--model", str(pickled), "--no-progress"]) == 2
    assert "is a PyTorch pickle (torch.save), which livedenoise never loads" in _error(capsys)
    cal = tmp_path / "not-a-calibration.safetensors"
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(cal))
    assert main(["denoise", str(frame), "-o", str(tmp_path / "out2"), "--camera-calibration", str(cal),
                 "--no-progress"]) == 2
    assert "expected the file `livedenoise calibrate-camera` writes" in _error(capsys)


def test_calibrate_camera_and_export_never_write_over_their_inputs(tmp_path, capsys):
    """A second audit (2026-12-06): `calibrate-camera -o dark.tif --overwrite` replaced its own dark stack and `export
    -o model.zip --overwrite` the package it read; both are refused now, --overwrite or not, and the inputs stay."""
    import hashlib

    rng = np.random.default_rng(0)
    dark, flat = tmp_path / "dark.tif", tmp_path / "flat.tif"
    tifffile.imwrite(dark, (100 + rng.normal(0, 2, (8, 16, 16))).astype(np.uint16))
    tifffile.imwrite(flat, (100 + rng.poisson(200, (8, 16, 16))).astype(np.uint16))
    before = {p: hashlib.md5(p.read_bytes()).hexdigest() for p in (dark, flat)}
    for target in (dark, flat):
        assert main(["calibrate-camera", "--dark", str(dark), "--flat", str(flat), "-o", str(target),
                     "--overwrite"]) == 2
        assert f"{target}: is also an input of this command; the camera calibration would replace it" in _error(capsys)
    assert main(["calibrate-camera", "--dark", str(dark), "--flat", str(flat), "-o", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a folder; expected the camera calibration's file name" in _error(capsys)
    assert {p: hashlib.md5(p.read_bytes()).hexdigest() for p in (dark, flat)} == before
    package = tmp_path / "model.zip"
    package.write_bytes(b"PK\x05\x06" + bytes(18))  # stands for a package read as the model
    assert main(["export", str(package), "-o", str(package), "--overwrite", "--noise-model", "stored"]) == 2
    assert f"{package}: is also an input of this command; the Model Zoo package would replace it" in _error(capsys)
    assert package.read_bytes() == b"PK\x05\x06" + bytes(18)
    from livedenoise.bioimageio import export_bioimageio
    from livedenoise.errors import ConfigError

    with pytest.raises(ConfigError, match="is the model being exported; the package would replace it"):
        export_bioimageio(str(package), package, overwrite=True)  # from Python too
    sample = tmp_path / "sample.zip"  # a sample image under a .zip name, named as -o
    sample.write_bytes(dark.read_bytes())
    assert main(["export", "fast", "-o", str(sample), "--sample", str(sample), "--overwrite"]) == 2
    assert f"{sample}: is also an input of this command" in _error(capsys)
    assert sample.read_bytes() == dark.read_bytes()


def test_an_unwritable_export_folder_and_a_negative_seed_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """export checks its folder before the noise fit and the export (it used to fail in a temporary folder there, with
    a traceback); a negative --seed is refused by the parser instead of deep in numpy."""
    from livedenoise import bioimageio

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setattr(bioimageio, "_check_exportable", lambda ckpt: pytest.fail("work started"))
    assert main(["export", "fast", "-o", str(blocker / "m.zip"), "--noise-model", "stored"]) == 2
    assert f"Cannot write to the output folder {blocker}: {blocker} is a file, not a folder" in _error(capsys)
    for argv in (["denoise", "x.tif", "-o", "out", "--seed", "-1"], ["finetune", "--images", "x.tif", "-o",
                                                                    "m.safetensors", "--seed", "-1"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "--seed: -1 must be at least 0" in _error(capsys)


def test_output_pixel_types_a_format_cannot_hold_get_the_fix_that_works(tmp_path, capsys):
    """float16 to OME-TIFF, float64 to NDTiff with --dtype input: refused before any work, with the option that
    works (they used to fail after the noise fit, or suggest the --dtype input already given)."""
    rng = np.random.default_rng(0)
    for dtype in (np.float16, np.float64):
        tifffile.imwrite(tmp_path / f"{np.dtype(dtype).name}.tif", rng.poisson(40, (64, 64)).astype(dtype))
    half = tmp_path / "float16.tif"
    assert main(["denoise", str(half), "-o", str(tmp_path / "a"), "--dtype", "input", "--no-progress"]) == 2
    err = _error(capsys)
    assert "OME-TIFF has no float16 pixel type" in err and "pass --dtype float32" in err and "--axes" not in err
    double = tmp_path / "float64.tif"
    assert main(["denoise", str(double), "-o", str(tmp_path / "b"), "--dtype", "input", "--format", "ndtiff",
                 "--no-progress"]) == 2
    err = _error(capsys)
    assert "NDTiff stores only uint8 / uint16 pixels" in err and "pass --dtype uint16" in err
    assert "--dtype input" not in err
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").glob("*.tif"))


def test_a_config_folder_that_does_not_exist_is_named_as_such(tmp_path, capsys, monkeypatch):
    """It used to surface as "microscope.toml: key 'camera': unknown camera preset ...: available presets are none"."""
    from simulators.config import SimulatorConfigError, config_dir

    monkeypatch.setenv("LIVEDENOISE_CONFIG_DIR", str(tmp_path / "nowhere"))
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 2
    assert f"LIVEDENOISE_CONFIG_DIR={tmp_path / 'nowhere'}: no such folder" in _error(capsys)
    assert not (tmp_path / "demo").exists()
    with pytest.raises(SimulatorConfigError, match="no such folder"):
        config_dir()


def test_a_camera_calibration_given_as_a_model_and_bad_flat_stacks_are_named(tmp_path, capsys):
    from livedenoise.camera_calibration import CameraCalibration

    cal = tmp_path / "camera.safetensors"
    CameraCalibration(np.full((16, 16), 100.0, np.float32), np.full((16, 16), 2.0, np.float32),
                      np.full((16, 16), 2.0, np.float32), {}).save(cal)
    image = tmp_path / "cells.tif"
    tifffile.imwrite(image, np.random.default_rng(0).poisson(40, (64, 64)).astype(np.uint16))
    assert main(["denoise", str(image), "-o", str(tmp_path / "out"), "--model", str(cal), "--no-progress"]) == 2
    assert f"{cal}: is a camera calibration (written by `livedenoise calibrate-camera`), not a model" \
        in _error(capsys)  # it used to say the file "was not saved by livedenoise"
    rng = np.random.default_rng(1)
    dark, dim, small = tmp_path / "dark.tif", tmp_path / "dim.tif", tmp_path / "small.tif"
    tifffile.imwrite(dark, (100 + rng.normal(0, 2, (8, 16, 16))).astype(np.uint16))
    tifffile.imwrite(dim, (90 + rng.normal(0, 2, (8, 16, 16))).astype(np.uint16))  # darker than the dark frames
    tifffile.imwrite(small, (300 + rng.normal(0, 2, (8, 8, 8))).astype(np.uint16))
    out = str(tmp_path / "c.safetensors")
    assert main(["calibrate-camera", "--dark", str(dark), "--flat", str(small), "-o", out]) == 2
    assert f"flat stack {small}: frame size (8, 8) differs from the dark frames (16, 16)" in _error(capsys)
    assert main(["calibrate-camera", "--dark", str(dark), "--flat", str(dim), "-o", out]) == 2
    assert f"flat frames: {dim} is not brighter than the dark frames" in _error(capsys)
