"""`livedenoise simulate`: NDTiff raw + OME-TIFF ground truth + JSON sidecar, and clear config errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from livedenoise.cli import main
from livedenoise.io.ndtiff import read_ndtiff


@pytest.fixture(scope="module")
def simulated_dir(tmp_path_factory, small_microscope_toml):
    out = tmp_path_factory.mktemp("sim") / "out"
    rc = main(["simulate", "--config", str(small_microscope_toml), "-o", str(out),
               "--frames", "3", "--positions", "2", "--power", "50", "--seed", "3"])
    assert rc == 0
    return out


def test_simulate_writes_raw_truth_and_sidecar_with_matching_axes(simulated_dir):
    raw = read_ndtiff(simulated_dir / "raw")
    truth = tifffile.imread(simulated_dir / "ground_truth.ome.tif")
    meta = json.loads((simulated_dir / "simulate.json").read_text())
    assert raw.axes == ("position", "time", "y", "x")
    assert raw.data.shape == (2, 3, 32, 32) and raw.data.dtype == np.uint16
    assert truth.shape == raw.data.shape and truth.dtype == np.float32
    # the help's read_ndtiff(...) is an array as numpy sees it: shape, dtype, np.asarray
    assert raw.shape == raw.data.shape and raw.dtype == np.uint16
    assert np.asarray(raw) is raw.data and np.asarray(raw, dtype=np.float32).dtype == np.float32
    assert meta["axes"] == list(raw.axes) and meta["shape"] == list(raw.data.shape)
    assert meta["coords"] == {"position": [0, 1], "time": [0, 1, 2]}
    assert meta["frames"] == 6 and len(meta["per_frame"]) == 6
    assert meta["config"]["light_power"] == 50.0 and meta["config"]["seed"] == 3
    assert meta["config"]["roi_width"] == 32
    with tifffile.TiffFile(simulated_dir / "ground_truth.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "RTYX"


def test_ground_truth_is_aligned_with_each_raw_frame(simulated_dir):
    raw = read_ndtiff(simulated_dir / "raw").data.astype(np.float64)
    truth = tifffile.imread(simulated_dir / "ground_truth.ome.tif").astype(np.float64)
    # the truth is the expected value of the raw frame: residuals average out to ~0
    assert abs((raw - truth).mean()) < 1.0
    # and each frame matches its own truth better than the other position's truth
    for t in range(3):
        own = np.corrcoef(raw[0, t].ravel(), truth[0, t].ravel())[0, 1]
        other = np.corrcoef(raw[0, t].ravel(), truth[1, t].ravel())[0, 1]
        assert own > other + 0.1


def test_existing_dataset_is_not_overwritten_without_flag(simulated_dir, small_microscope_toml, capsys, tmp_path):
    out = tmp_path / "again"
    args = ["simulate", "--config", str(small_microscope_toml), "-o", str(out), "--frames", "1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--frames", "2", "--overwrite"]) == 0
    assert read_ndtiff(out / "raw").data.shape == (2, 32, 32)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("exposure_ms = -5.0\n", "exposure_ms"),
        ('camera = "no-such-camera"\n', "camera"),
        ("exposure_time = 5.0\n", "exposure_time"),
    ],
)
def test_invalid_config_exits_2_naming_the_key(tmp_path, capsys, toml, expected):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    rc = main(["simulate", "--config", str(cfg), "-o", str(tmp_path / "out"), "--frames", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err and "bad.toml" in err
    assert not (tmp_path / "out" / "raw").exists()


def test_bad_roi_and_frame_count_are_clear_errors(tmp_path, capsys):
    assert main(["simulate", "-o", str(tmp_path), "--roi", "64by64"]) == 2
    assert "--roi" in capsys.readouterr().err
    assert main(["simulate", "-o", str(tmp_path), "--frames", "0"]) == 2
    assert "--frames" in capsys.readouterr().err


def test_simulate_refuses_a_disk_too_small_for_the_dataset_before_acquiring(tmp_path, monkeypatch, capsys):
    import collections

    from livedenoise import diskspace
    from livedenoise.cli import main

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(diskspace.shutil, "disk_usage", lambda path: usage(10**7, 10**7 - 50_000, 50_000))
    assert main(["simulate", "-o", str(tmp_path / "sim"), "--frames", "50", "--roi", "64x64"]) == 2
    err = capsys.readouterr().err
    assert "The simulated dataset and its ground truth need about 1.3 MB but" in err and "50.0 KB free" in err, err
    assert not (tmp_path / "sim").exists()  # nothing acquired, no folder left behind


def test_a_wheel_installed_outside_the_checkout_finds_its_presets(tmp_path):
    """The camera presets and default configs travel in the wheel (as simulators/presets)."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    import setuptools

    repo = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "livedenoise", "simulators", "config"):
        if (repo / name).is_dir():
            shutil.copytree(repo / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(repo / name, src / name)
    isolation = [] if int(setuptools.__version__.split(".")[0]) >= 77 else None  # else: pip fetches setuptools
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "-w", str(tmp_path / "wheel"), "--no-deps", "-q"]
    subprocess.run(cmd + (["--no-build-isolation"] if isolation is not None else []), check=True, timeout=300,
                   capture_output=True)
    wheel = next((tmp_path / "wheel").glob("livedenoise-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "simulators/presets/cameras/andor-zyla-4.2.toml" in names and "simulators/presets/session.toml" in names
    # every package of the checkout is in the wheel (a sub-package missing from pyproject's list is not)
    packages = sorted(p.parent.relative_to(repo).as_posix() for top in ("livedenoise", "simulators")
                      for p in (repo / top).rglob("__init__.py") if "__pycache__" not in p.parts)
    assert [p for p in packages if f"{p}/__init__.py" not in names] == []
    assert "livedenoise/py.typed" in names and any(n.endswith("licenses/LICENSE") for n in names)
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in __import__("os").environ.items() if k != "LIVEDENOISE_CONFIG_DIR"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    code = ("import sys, livedenoise; assert livedenoise.__file__.startswith(sys.argv[1]), livedenoise.__file__; "
            "import livedenoise.attach; "
            "from livedenoise.cli import main; raise SystemExit(main(['simulate', '-o', 'sim', '--frames', '2', "
            "'--roi', '32x32']))")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], cwd=run_dir, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (run_dir / "sim" / "raw" / "NDTiff.index").is_file() and "Traceback" not in res.stderr


def test_ctrl_c_stops_simulate_with_every_acquired_frame_and_its_truth_saved(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from livedenoise.io import open_dataset

    proc = subprocess.Popen([sys.executable, "-m", "livedenoise.cli", "simulate", "-o", "sim", "--frames", "5000",
                             "--roi", "32x32", "--interval-ms", "20", "--realtime"], cwd=tmp_path,
                            env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("sim/raw*/NDTiff.index")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # it used to hang here
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted: " in out
    meta = json.loads((tmp_path / "sim" / "simulate.json").read_text())
    raw = open_dataset(tmp_path / "sim" / "raw")
    truth = open_dataset(tmp_path / "sim" / "ground_truth.ome.tif")
    try:
        n = int(np.prod(raw.shape[:-2]))
        assert 5 < n < 5000 and meta["frames"] == n and int(np.prod(truth.shape[:-2])) == n
    finally:
        raw.close()
        truth.close()
