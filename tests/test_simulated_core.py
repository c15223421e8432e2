"""The simulated Micro-Manager core: devices, photon budget, stage, pycromanager and MDA acquisitions."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from simulators.core import (
    CAMERA_LABEL,
    FOCUS_LABEL,
    LIGHT_GROUP,
    LIGHT_LABEL,
    XY_STAGE_LABEL,
    _camel_to_snake,
    acquire_with_pycromanager,
    build_events,
    light_power_event,
    light_power_property,
    spread_positions,
    start_simulated_core,
)

REPO = Path(__file__).resolve().parent.parent


def snap(core) -> tuple[np.ndarray, object]:
    """Snap through the core; return the image and the simulator frame that produced it."""
    core.snapImage()
    image = core.getImage()
    frame = core.microscope.lookup(image)
    assert frame is not None, "the core returned an image the simulator never produced"
    return image, frame


def signal(core, frame) -> float:
    """Expected photo-signal in ADU summed over the field (ground truth minus the camera offset)."""
    return float((frame.truth - core.microscope.camera.maps.offset).sum())


def test_camel_to_snake_matches_pycromanager_names():
    assert _camel_to_snake("setXYPosition") == "set_xy_position"
    assert _camel_to_snake("popNextImageMD") == "pop_next_image_md"
    assert _camel_to_snake("getXYStageDevice") == "get_xy_stage_device"


def test_core_has_devices_selected_and_snake_case_aliases(simulated_core):
    core = simulated_core
    assert set(core.getLoadedDevices()) >= {CAMERA_LABEL, XY_STAGE_LABEL, FOCUS_LABEL, LIGHT_LABEL}
    assert core.get_camera_device() == CAMERA_LABEL
    assert core.get_xy_stage_device() == XY_STAGE_LABEL
    assert core.get_focus_device() == FOCUS_LABEL
    assert core.get_shutter_device() == LIGHT_LABEL
    assert core.getAutoShutter()
    assert core.get_channel_group() == LIGHT_GROUP
    assert core.get_pixel_size_um() == pytest.approx(0.1)
    assert light_power_property() == (LIGHT_LABEL, "Power")
    # aliases reach the Python devices (not the empty C++ core)
    assert core.get_image_width() == 64 and core.get_image_height() == 64
    assert core.get_bytes_per_pixel() == 2
    assert core.getImageBitDepth() == 16


def test_snap_gives_microscope_frames(simulated_core):
    image, frame = snap(simulated_core)
    assert image.dtype == np.uint16 and image.shape == (64, 64) == simulated_core.microscope.shape
    assert np.array_equal(image, frame.image)
    assert frame.truth.dtype == np.float32 and frame.truth.shape == image.shape
    assert frame.metadata["exposure_ms"] == pytest.approx(simulated_core.getExposure())
    assert frame.metadata["shutter_open"]


def test_exposure_and_light_power_set_through_core_scale_the_signal(simulated_core):
    core = simulated_core
    core.setExposure(10.0)
    _, low = snap(core)
    core.setExposure(40.0)
    _, long_exposure = snap(core)
    assert core.microscope.exposure_ms == 40.0
    assert signal(core, long_exposure) / signal(core, low) == pytest.approx(4.0, rel=0.02)

    core.setExposure(10.0)
    core.setProperty(LIGHT_LABEL, "Power", 40.0)
    image, bright = snap(core)
    assert core.microscope.light_power == 40.0
    # power scales the sample's photons but not the dark current: slightly under 4x
    assert signal(core, bright) / signal(core, low) == pytest.approx(4.0, rel=0.05)
    offset = core.microscope.camera.maps.offset.mean()
    core.setProperty(LIGHT_LABEL, "Power", 10.0)
    dim_image, _ = snap(core)
    ratio = (image.mean() - offset) / (dim_image.mean() - offset)
    assert 3.0 < ratio < 5.0  # the noisy frames carry the same photon budget


def test_light_power_limits_are_enforced(simulated_core):
    with pytest.raises(ValueError):  # pymmcore-plus: "not within the allowed range"
        simulated_core.setProperty(LIGHT_LABEL, "Power", 150.0)
    assert simulated_core.microscope.light_power == 10.0


def test_closed_shutter_without_autoshutter_gives_dark_frames(simulated_core):
    core = simulated_core
    core.setAutoShutter(False)
    core.setShutterOpen(False)
    _, frame = snap(core)
    assert not frame.metadata["shutter_open"]
    assert frame.metadata["peak_photons"] == 0.0
    core.setAutoShutter(True)  # auto-shutter lights the exposure although the shutter is closed
    _, frame = snap(core)
    assert frame.metadata["shutter_open"] and frame.metadata["peak_photons"] > 0
    assert not core.getShutterOpen()


def test_stage_moves_change_the_field(simulated_core):
    core = simulated_core
    core.setXYPosition(5.0, 7.0)
    assert core.getXYPosition() == pytest.approx((5.0, 7.0))
    _, a = snap(core)
    core.setXYPosition(15.0, 7.0)
    _, b = snap(core)
    core.setXYPosition(5.0, 7.0)
    _, a_again = snap(core)
    assert not np.allclose(a.truth, b.truth)
    np.testing.assert_array_equal(a.truth, a_again.truth)  # static sample: same place, same truth
    assert a.metadata["x_um"] == 5.0 and b.metadata["x_um"] == 15.0
    # +1 um in x = 10 px at 0.1 um/px: the sample slides 10 px to the left in the image
    core.setXYPosition(5.0, 7.0)
    before = core.microscope.expected_photons()
    core.setXYPosition(6.0, 7.0)
    after = core.microscope.expected_photons()
    np.testing.assert_allclose(after[:, :-10], before[:, 10:], rtol=1e-5)
    core.setXYPosition(5.0, 7.0)
    core.setPosition(3.0)  # 3 um defocus blurs: the brightest pixel dims
    _, blurred = snap(core)
    assert blurred.metadata["z_um"] == 3.0
    assert blurred.truth.max() < a_again.truth.max()


def test_pycromanager_acquisition_saves_genuine_frames(simulated_core, small_microscope_config, tmp_path):
    from livedenoise.io.ndtiff import read_ndtiff

    core = simulated_core
    positions = spread_positions(small_microscope_config, 2)
    exposures = [10.0, 30.0]
    events = build_events(core, frames=3, positions=positions, exposures_ms=exposures)
    received: dict[tuple, np.ndarray] = {}

    def process(image, metadata):
        received[tuple(sorted(metadata["Axes"].items()))] = image.copy()
        return image, metadata

    result = acquire_with_pycromanager(core, events, directory=tmp_path, name="acq", image_process_fn=process)
    assert result.frames == 12 and len(received) == 12
    raw = read_ndtiff(result.dataset_path)
    assert raw.axes == ("position", "time", "exposure", "y", "x")
    assert raw.data.shape == (2, 3, 2, 64, 64) and raw.data.dtype == np.uint16
    frame_indices = []
    for key, image in received.items():
        coords = dict(key)
        saved = raw.data[raw.index_of(coords)]
        np.testing.assert_array_equal(saved, image)  # bit-identical on disk
        frame = core.microscope.lookup(saved)
        assert frame is not None
        assert frame.metadata["exposure_ms"] == exposures[coords["exposure"]]
        assert (frame.metadata["x_um"], frame.metadata["y_um"]) == pytest.approx(positions[coords["position"]])
        frame_indices.append(frame.metadata["frame_index"])
    assert len(set(frame_indices)) == 12  # twelve distinct camera frames


def test_calibration_events_apply_exposure_and_light_power(simulated_core):
    """Low/high pairs as documented in simulators.core: config-group power + exposure per event."""
    core = simulated_core
    settings = {"low": (5.0, 10.0), "high": (50.0, 40.0)}  # (power %, exposure ms)
    events = [
        {"axes": {"time": t, "snr": level}, "exposure": exposure, **light_power_event(core, power)}
        for t in range(2)
        for level, (power, exposure) in settings.items()
    ]
    seen: list[tuple[dict, dict]] = []

    def process(image, metadata):
        seen.append((metadata["Axes"], core.microscope.lookup(image).metadata))
        return image, metadata

    acquire_with_pycromanager(core, events, image_process_fn=process)
    assert len(seen) == 4
    for axes, frame_meta in seen:
        power, exposure = settings[axes["snr"]]
        assert frame_meta["light_power"] == power and frame_meta["exposure_ms"] == exposure


def test_pymmcore_plus_mda_frame_ready(simulated_core):
    import useq

    core = simulated_core
    frames = []
    core.mda.events.frameReady.connect(lambda img, event, meta: frames.append((img.copy(), event)))
    try:
        core.mda.run(useq.MDASequence(
            time_plan={"interval": 0, "loops": 2},
            stage_positions=[(1.0, 2.0, 0.0), (20.0, 2.0, 0.0)],
            channels=[useq.Channel(group=LIGHT_GROUP, config="20%", exposure=15.0)],
        ))
    finally:
        core.mda.events.frameReady.disconnect()
    assert len(frames) == 4
    for image, event in frames:
        frame = core.microscope.lookup(image)
        assert frame is not None and frame.metadata["shutter_open"]
        assert frame.metadata["exposure_ms"] == 15.0 and frame.metadata["light_power"] == 20.0
        assert frame.metadata["x_um"] == pytest.approx(event.x_pos)


def test_second_core_close_is_idempotent_and_reports_bit_depth():
    from mmpycorex import launcher

    from simulators.config import load_microscope_config

    cfg = load_microscope_config(camera="generic-12bit-scmos", roi_width=16, roi_height=16,
                                 sample={"slide_width": 64, "slide_height": 64})
    core = start_simulated_core(cfg)
    assert launcher._PYMMCORES[0] is core
    assert core.getImageBitDepth() == 12 and core.microscope.camera.dtype == np.uint16
    image, _ = snap(core)
    assert image.max() <= 4095
    core.close()
    core.close()
    assert core.closed and core not in launcher._PYMMCORES


SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from simulators.config import load_microscope_config
import simulators.core as sc
cfg = load_microscope_config(roi_width=32, roi_height=32, sample={{"slide_width": 128, "slide_height": 128}})
core = sc.start_simulated_core(cfg)
result = sc.acquire_with_pycromanager(core, sc.build_events(core, frames=10, light_power=20), name="x")
print("frames", result.frames)
# Core property changes queue C++ callbacks; with one still queued at exit, pymmcore >= 12.2 aborts
# (about every other run here) unless the atexit hook has unregistered the callback. No explicit close.
for i in range(200):
    core.setProperty("Core", "AutoShutter", str(i % 2))
"""


def test_process_exits_cleanly_after_acquisition():
    script = textwrap.dedent(SCRIPT.format(repo=str(REPO)))
    for _ in range(2):  # the abort this guards against is intermittent: two runs catch it ~3 times in 4
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "frames 10" in proc.stdout


def test_the_ground_truth_history_is_bounded_by_memory_and_keeps_the_newest_frames():
    """lookup() remembers recent frames by content, but never more than history_bytes of images and truths."""
    from simulators.microscope import SimulatedMicroscope, _nbytes

    m = SimulatedMicroscope()
    first = m.snap()
    m.history_bytes = 3 * _nbytes(first)
    frames = [first] + [m.snap() for _ in range(5)]
    assert m.lookup(first.image) is None and m.lookup(frames[2].image) is None
    assert [m.lookup(f.image).metadata["frame_index"] for f in frames[3:]] == [3, 4, 5]
    assert m._history_nbytes == 3 * _nbytes(first)
    m.history_bytes = 1  # smaller than one frame: the newest still stays
    newest = m.snap()
    assert m.lookup(newest.image) is newest and len(m._truth_by_digest) == 1


@pytest.mark.parametrize("module", ["simulators.core", "simulators.devices"])
def test_importing_the_simulator_keeps_the_applications_root_log_level(module):
    """pymmcore-plus sets the root logger to DEBUG on import; the simulator must not pass that on."""
    code = textwrap.dedent(
        f"""
        import logging
        logging.getLogger().setLevel(logging.WARNING)
        import {module}
        print(logging.getLogger().level)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(30)
