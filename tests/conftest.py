"""Shared pytest fixtures: small simulated microscopes and a simulated Micro-Manager core.

Everything here is sized for a 2-core CI machine: a 64x64 field of view on a 256x256 virtual
slide, no sample motion (so a field is identical whenever the stage returns to it).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Qt widgets (viewer tests) must never try to open a display on CI.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

#: Small sample used by the fixtures: bright enough that structure is visible at default settings.
SMALL_SAMPLE = {
    "slide_width": 256,
    "slide_height": 256,
    "peak_rate": 10000.0,
    "background_rate": 20.0,
    "motion": 0.0,
    "seed": 0,
}


@pytest.fixture(scope="session")
def small_microscope_config():
    """A validated ``MicroscopeConfig``: Zyla-like camera, 64x64 ROI, 256x256 static slide, 20 ms, 10 %."""
    from simulators.config import load_microscope_config

    return load_microscope_config(
        roi_width=64, roi_height=64, exposure_ms=20.0, light_power=10.0, seed=0, sample=dict(SMALL_SAMPLE)
    )


@pytest.fixture(scope="session")
def small_microscope_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to a TOML file describing a small microscope (32x32 ROI), for CLI tests."""
    path = tmp_path_factory.mktemp("config") / "small_microscope.toml"
    sample = "\n".join(f"{k} = {v!r}" for k, v in SMALL_SAMPLE.items())
    path.write_text(
        'camera = "andor-zyla-4.2"\nroi_width = 32\nroi_height = 32\nexposure_ms = 20.0\n'
        f"light_power = 10.0\nseed = 0\n\n[sample]\n{sample}\n"
    )
    return path


@pytest.fixture(scope="session")
def simulated_core_session(small_microscope_config) -> Iterator[object]:
    """One simulated Micro-Manager core for the whole session (building one costs ~0.5 s)."""
    from simulators.core import start_simulated_core

    core = start_simulated_core(small_microscope_config)
    yield core
    core.close()


@pytest.fixture()
def simulated_core(simulated_core_session, small_microscope_config):
    """The session's simulated core, reset to the configured state and registered with pycromanager.

    Exposure, light power, stage position, shutter and auto-shutter go back to the config values,
    so tests may change them freely.
    """
    from simulators.core import LIGHT_LABEL, register_with_pycromanager

    core = simulated_core_session
    cfg = small_microscope_config
    core.realtime = False
    core.setAutoShutter(True)
    core.setShutterOpen(LIGHT_LABEL, True)
    core.setExposure(cfg.exposure_ms)
    core.setProperty(LIGHT_LABEL, "Power", cfg.light_power)
    core.setXYPosition(0.0, 0.0)
    core.setPosition(cfg.focus_z_um)
    register_with_pycromanager(core)
    return core


@pytest.fixture(autouse=True)
def _parking_needs_no_free_gigabyte(monkeypatch):
    """A recorder parks frames only where 1 GB stays free (the raw data's room, ``spill.KEEP_FREE_BYTES``): the tests'
    frames are tiny, and a CI machine with a small disk must still exercise parking. A test of the margin sets it."""
    import livedenoise.acquisition.spill as spill

    monkeypatch.setattr(spill, "KEEP_FREE_BYTES", 0)
