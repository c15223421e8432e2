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
