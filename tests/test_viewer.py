"""LiveViewer: thread-safe posting, latest-frame display, auto/manual contrast, linked views, buttons, screenshot.

Runs headless (Qt "offscreen" platform); every test uses small frames and no timers, so it takes seconds.
"""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading

import numpy as np
import pytest
from pyqtgraph.Qt import QtCore, QtGui, QtTest

from livedenoise.acquisition.status import SessionState, SessionStatus
from livedenoise.errors import InputDataError, LivedenoiseError
from livedenoise.viewer import (
    AUTO_HIGH_PERCENTILE,
    AUTO_LOW_PERCENTILE,
    LiveViewer,
    auto_levels,
    create_app,
    qt_binding_defect,
    subsample,
)


@pytest.fixture(scope="module")
def app():
    return create_app()


@pytest.fixture
def viewer(app):
    v = LiveViewer(refresh_hz=0)  # no timer: the tests decide when the display refreshes
    v.resize(900, 560)
    v.show()
    app.processEvents()
    yield v
    v.close()
    v.deleteLater()
    app.processEvents()


def _frames(n: int, shape=(48, 64), seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        raw = rng.poisson(100 + 10 * i, size=shape).astype(np.uint16)
        den = np.full(shape, 100.0 + i, np.float32) + np.linspace(0, 5, shape[1], dtype=np.float32)
        out.append((raw, den))
    return out


def _post_from_thread(viewer: LiveViewer, frames) -> None:
    def produce():
        for raw, den in frames:
            viewer.post_frames(raw, den)

    t = threading.Thread(target=produce)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive()


def test_qt_binding_has_no_known_fatal_defect(app):
    assert qt_binding_defect() is None


def test_display_shows_exactly_the_latest_frames_posted_from_another_thread(viewer):
    frames = _frames(7)
    _post_from_thread(viewer, frames)
    assert viewer.render_once() is True
    raw, den = frames[-1]
    assert viewer.raw.item.image.shape == raw.shape
    assert viewer.denoised.item.image.shape == den.shape
    np.testing.assert_array_equal(viewer.raw.item.image, raw)
    np.testing.assert_array_equal(viewer.denoised.item.image, den)
    assert viewer.display_skipped == 6  # 7 posted, only the last one shown
    assert viewer.display_count == 1
    assert viewer.frames_posted == 7
    assert viewer.render_once() is False  # nothing new


def test_display_skipped_counts_only_superseded_frames(viewer):
    frames = _frames(5)
    for raw, den in frames[:2]:
        viewer.post_frames(raw, den)
    viewer.render_once()  # shows frame 1, frame 0 was superseded
    viewer.post_frames(*frames[2])
    viewer.render_once()  # shown, nothing superseded
    for raw, den in frames[3:]:
        viewer.post_frames(raw, den)
    viewer.render_once()  # frame 3 superseded
    assert viewer.display_skipped == 2
    assert viewer.display_count == 3
    assert "viewer: 3 drawn, 2 replaced before drawing" in viewer.display_label.text()


def test_denoised_none_keeps_the_last_denoised_frame(viewer):
    (raw0, den0), (raw1, _den1) = _frames(2)
    viewer.post_frames(raw0, den0)
    viewer.render_once()
    viewer.post_frames(raw1, None)
    viewer.render_once()
    np.testing.assert_array_equal(viewer.raw.item.image, raw1)
    np.testing.assert_array_equal(viewer.denoised.item.image, den0)


def test_a_pending_denoised_frame_survives_a_later_raw_only_post(viewer):
    (raw0, den0), (raw1, _den1) = _frames(2)
    viewer.post_frames(raw0, den0)
    viewer.post_frames(raw1, None)  # denoiser slower than the camera
    viewer.render_once()
    np.testing.assert_array_equal(viewer.raw.item.image, raw1)
    np.testing.assert_array_equal(viewer.denoised.item.image, den0)


def test_denoised_title_waits_then_names_the_model(viewer):
    assert "waiting" in viewer.denoised.title.text
    viewer.post_status(SessionStatus(state=SessionState.LIVE, model_name="unet-16"))
    raw, den = _frames(1)[0]
    viewer.post_frames(raw, den)
    viewer.render_once()
    assert viewer.raw.title.text == "raw (as acquired)"
    assert viewer.denoised.title.text == "denoised (unet-16)"
    viewer.post_status(SessionStatus(state=SessionState.LIVE, model_name="unet-16", adapted=True))
    viewer.render_once()
    assert viewer.denoised.title.text == "denoised (unet-16, adapted)"


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8)), np.zeros((0, 4)), np.array(["a", "b"]).reshape(1, 2),
                                 np.zeros((4, 4), bool)])
def test_bad_frames_are_refused_with_input_data_error(viewer, bad):
    with pytest.raises(InputDataError, match="raw frame"):
        viewer.post_frames(bad)
    assert viewer.frames_posted == 0


def test_render_once_refuses_other_threads(viewer):
    errors: list[BaseException] = []

    def worker():
        try:
            viewer.render_once()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join(timeout=10)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


# ---------------------------------------------------------------------------- contrast
def test_auto_levels_are_percentiles_of_a_strided_subsample():
    rng = np.random.default_rng(1)
    small = rng.normal(100, 15, (64, 64)).astype(np.float32)
    assert auto_levels(small) == pytest.approx(tuple(np.percentile(small, (AUTO_LOW_PERCENTILE, AUTO_HIGH_PERCENTILE))))
    big = rng.normal(100, 15, (512, 512)).astype(np.float32)
    sub = subsample(big, 65_536)
    assert sub.shape == (256, 256)  # step 2
    assert auto_levels(big) == pytest.approx(tuple(np.percentile(big[::2, ::2], (0.5, 99.8))))
    # the subsample is representative: within a fraction of the spread of the full-image percentiles
    full = np.percentile(big, (0.5, 99.8))
    assert np.allclose(auto_levels(big), full, atol=1.5)


def test_auto_levels_handle_flat_and_nan_images():
    assert auto_levels(np.full((8, 8), 7.0)) == (7.0, 8.0)
    img = np.arange(100, dtype=np.float32).reshape(10, 10)
    img[0, 0] = np.nan
    lo, hi = auto_levels(img)
    assert np.isfinite(lo) and np.isfinite(hi) and lo < hi


def test_displayed_levels_follow_the_auto_percentile_rule(viewer):
    raw, den = _frames(1)[0]
    viewer.post_frames(raw, den)
    viewer.render_once()
    expected_raw = np.percentile(raw.astype(np.float64), (AUTO_LOW_PERCENTILE, AUTO_HIGH_PERCENTILE))
    expected_den = np.percentile(den.astype(np.float64), (AUTO_LOW_PERCENTILE, AUTO_HIGH_PERCENTILE))
    assert viewer.levels("raw") == pytest.approx(tuple(expected_raw))
    assert viewer.levels("denoised") == pytest.approx(tuple(expected_den))
    assert viewer.raw.hist.getLevels() == pytest.approx(tuple(expected_raw))  # histogram handles agree


def test_shared_contrast_pools_both_images(viewer):
    raw, den = _frames(1)[0]
    viewer.post_frames(raw, den)
    viewer.render_once()
    viewer.shared_box.setChecked(True)
    pooled = np.concatenate([raw.ravel().astype(np.float64), den.ravel().astype(np.float64)])
    expected = tuple(np.percentile(pooled, (AUTO_LOW_PERCENTILE, AUTO_HIGH_PERCENTILE)))
    assert viewer.levels("raw") == pytest.approx(expected)
    assert viewer.levels("denoised") == pytest.approx(expected)


def test_dragging_a_histogram_switches_that_image_to_manual(viewer):
    frames = _frames(2)
    viewer.post_frames(*frames[0])
    viewer.render_once()
    viewer.raw.hist.region.setRegion((90.0, 140.0))  # what a mouse drag of the handles does
    assert not viewer.raw.auto_box.isChecked()
    assert viewer.denoised.auto_box.isChecked()
    viewer.post_frames(*frames[1])
    viewer.render_once()
    assert viewer.levels("raw") == pytest.approx((90.0, 140.0))  # kept for new frames
    den = frames[1][1].astype(np.float64)
    assert viewer.levels("denoised") == pytest.approx(tuple(np.percentile(den, (0.5, 99.8))))
    viewer.raw.auto_box.setChecked(True)  # back to auto, applied at once
    raw = frames[1][0].astype(np.float64)
    assert viewer.levels("raw") == pytest.approx(tuple(np.percentile(raw, (0.5, 99.8))))


def test_dragging_with_shared_contrast_moves_both(viewer):
    viewer.post_frames(*_frames(1)[0])
    viewer.render_once()
    viewer.shared_box.setChecked(True)
    viewer.denoised.hist.region.setRegion((95.0, 110.0))
    assert not viewer.raw.auto_box.isChecked() and not viewer.denoised.auto_box.isChecked()
    assert viewer.levels("raw") == pytest.approx((95.0, 110.0))
    assert viewer.levels("denoised") == pytest.approx((95.0, 110.0))


def test_set_levels_api(viewer):
    viewer.post_frames(*_frames(1)[0])
    viewer.render_once()
    viewer.set_levels("denoised", 1.0, 2.0)
    assert viewer.levels("denoised") == pytest.approx((1.0, 2.0))
    assert not viewer.denoised.auto_box.isChecked() and viewer.raw.auto_box.isChecked()
    with pytest.raises(ValueError):
        viewer.levels("nope")


# ---------------------------------------------------------------------------- views
def test_views_are_linked_and_y_points_down(app, viewer):
    viewer.post_frames(*_frames(1, shape=(120, 160))[0])
    viewer.render_once()
    app.processEvents()
    assert viewer.raw.view.yInverted() and viewer.denoised.view.yInverted()
    viewer.raw.view.setRange(xRange=(10, 50), yRange=(20, 60), padding=0)
    raw_range = np.array(viewer.raw.view.viewRange())
    den_range = np.array(viewer.denoised.view.viewRange())
    assert raw_range[0] == pytest.approx([10, 50], abs=0.5)  # x as requested (y widened by the aspect lock)
    np.testing.assert_allclose(den_range, raw_range, atol=1e-3)  # same pixels, not just similar
    viewer.denoised.view.setRange(xRange=(100, 140), yRange=(30, 70), padding=0)  # the other way round
    np.testing.assert_allclose(np.array(viewer.raw.view.viewRange()), np.array(viewer.denoised.view.viewRange()),
                               atol=0.5)
    viewer.fit_view()
    app.processEvents()
    (x0, x1), (y0, y1) = viewer.raw.view.viewRange()
    assert x0 <= 0.5 and x1 >= 159.5 and y0 <= 0.5 and y1 >= 119.5  # whole frame visible again


def test_pixel_readout(viewer):
    raw, den = _frames(1)[0]
    viewer.post_frames(raw, den)
    viewer.render_once()
    text = viewer.pixel_readout(3, 2)
    assert text.startswith("x 3, y 2:") and f"raw {raw[2, 3]}" in text and f"denoised {den[2, 3]:.4g}" in text
    assert viewer.pixel_readout(-1, 0) == ""


def test_freeze_keeps_the_image_and_counts_skips(viewer):
    frames = _frames(3)
    viewer.post_frames(*frames[0])
    viewer.render_once()
    viewer.freeze_box.setChecked(True)
    viewer.post_frames(*frames[1])
    viewer.post_frames(*frames[2])
    viewer.render_once()
    np.testing.assert_array_equal(viewer.raw.item.image, frames[0][0])
    viewer.freeze_box.setChecked(False)
    viewer.render_once()
    np.testing.assert_array_equal(viewer.raw.item.image, frames[2][0])
    assert viewer.display_skipped == 1


# ---------------------------------------------------------------------------- status and buttons
def test_post_status_updates_label_progress_and_buttons(viewer):
    status = SessionStatus(state=SessionState.FINE_TUNING, model_name="unet-16", finetune_progress=0.42,
                           finetune_loss=0.0123, camera_fps=12.5, denoised_fps=8.25, latency_ms=40.0)
    t = threading.Thread(target=viewer.post_status, args=(status,))
    t.start()
    t.join(timeout=10)
    status.camera_fps = 99.0  # the viewer keeps its own copy
    viewer.render_once()
    text = viewer.status_label.text()
    assert "FINE-TUNING" in text and "camera 12.5 fps" in text and "denoised 8.2 fps" in text
    assert viewer.state_badge.text() == "FINE-TUNING"
    assert viewer.progress.value() == 420
    assert "loss 0.0123" in viewer.progress.format()
    assert viewer.status().camera_fps == 12.5
    assert (viewer.calibrate_button.isEnabled(), viewer.start_button.isEnabled(), viewer.stop_button.isEnabled()) == (
        False, False, True)
    status = SessionStatus(state=SessionState.LIVE, finetune_progress=1.0, frames_dropped=29)
    viewer.post_status(status)  # fine-tuned, not swapped in: it did run
    viewer.render_once()
    assert viewer.progress.format() == "fine-tuning ended; the backbone is in use"
    assert "display skipped 29 (all saved)" in viewer.status_label.text()  # not "dropped": no frame is lost
    viewer.post_status(SessionStatus(state=SessionState.LIVE))
    viewer.render_once()
    assert viewer.progress.format() == "fine-tuning: not started"
    viewer.post_status(SessionStatus(state=SessionState.FAILED, errors=["camera lost"]))
    viewer.render_once()
    assert "FAILED" in viewer.status_label.text()
    assert viewer.error_label.text() == "camera lost" and not viewer.error_label.isHidden()
    assert viewer.start_button.isEnabled() and not viewer.stop_button.isEnabled()


def test_buttons_call_callbacks_and_emit_signals(viewer):
    calls: list[object] = []
    viewer.on_calibrate = lambda: calls.append("calibrate")
    viewer.on_start = lambda: calls.append("start")
    viewer.on_stop = lambda: calls.append("stop")
    viewer.on_compare = lambda on: calls.append(("compare", on))
    emitted: list[str] = []
    viewer.startRequested.connect(lambda: emitted.append("start"))
    viewer.compareToggled.connect(lambda on: emitted.append(f"compare {on}"))

    QtTest.QTest.mouseClick(viewer.calibrate_button, QtCore.Qt.MouseButton.LeftButton)
    QtTest.QTest.mouseClick(viewer.start_button, QtCore.Qt.MouseButton.LeftButton)
    viewer.stop_button.click()  # disabled while idle: nothing happens
    viewer.post_status(SessionStatus(state=SessionState.LIVE))
    viewer.render_once()
    viewer.stop_button.click()
    viewer.compare_box.click()
    viewer.compare_box.click()
    assert calls == ["calibrate", "start", "stop", ("compare", True), ("compare", False)]
    assert emitted == ["start", "compare True", "compare False"]


def test_a_failing_callback_is_shown_not_lost(viewer):
    def refuse():
        raise LivedenoiseError("No calibration frames yet; press Calibrate first.")

    viewer.on_start = refuse
    viewer.start_button.click()
    assert viewer.error_label.text() == "No calibration frames yet; press Calibrate first."
    viewer.on_start = lambda: 1 / 0
    viewer.start_button.click()
    assert viewer.error_label.text().startswith("start failed:")


# ---------------------------------------------------------------------------- screenshot
def test_save_screenshot_writes_a_plausible_png(viewer, tmp_path):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:96, 0:128]
    truth = (100 + 400 * np.exp(-((xx - 64) ** 2 + (yy - 48) ** 2) / 200.0)).astype(np.float32)
    viewer.post_frames(rng.poisson(truth).astype(np.uint16), truth)
    viewer.post_status(SessionStatus(state=SessionState.LIVE, model_name="unet-16", camera_fps=20.0))
    out = viewer.save_screenshot(tmp_path / "shots" / "viewer.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    image = QtGui.QImage(str(out))
    assert (image.width(), image.height()) == (viewer.width(), viewer.height())

    def grey_at(view, x: float, y: float) -> int:
        """Grey value in the screenshot at image pixel (x, y) of a view."""
        pos = viewer.graphics.mapTo(viewer, viewer.graphics.mapFromScene(view.mapViewToScene(QtCore.QPointF(x, y))))
        return QtGui.QColor(image.pixel(pos.x(), pos.y())).value()

    # the blob in the middle is bright and the corners dark, in both images (the frame was really drawn)
    for view in (viewer.raw.view, viewer.denoised.view):
        assert grey_at(view, 64.5, 48.5) > 200
    assert grey_at(viewer.denoised.view, 4.5, 4.5) < 60


def test_save_screenshot_of_a_hidden_viewer(app, tmp_path):
    v = LiveViewer(refresh_hz=0)
    try:
        v.post_frames(*_frames(1)[0])
        out = v.save_screenshot(tmp_path / "hidden.png")
        assert out.stat().st_size > 5_000
        assert not v.isVisible()
    finally:
        v.close()
        v.deleteLater()
        app.processEvents()


def test_residual_view_shows_raw_minus_denoised_in_noise_units(viewer):
    """The "show residual" option: the right image is the session's residual map, on a fixed ±4 noise-sd scale."""
    from livedenoise.normalization import Normalizer
    from livedenoise.residual_check import residual_map
    from livedenoise.viewer import RESIDUAL_LEVELS

    norm = Normalizer(offset=100.0, gain=2.0, noise_b=1.0, scale=10.0)
    rng = np.random.default_rng(0)
    den = np.full((64, 64), 300.0, np.float32)
    raw = (den + rng.normal(0, 2.0 * np.sqrt(101), den.shape)).astype(np.float32)
    viewer.residual_box.setChecked(True)
    assert not viewer.showing_residual  # no residual function: the option does nothing
    viewer.residual_fn = lambda r, d: residual_map(r, d, norm)
    viewer.post_frames(raw, den)
    viewer.render_once()
    np.testing.assert_allclose(viewer.denoised.image, residual_map(raw, den, norm), atol=1e-5)
    assert 0.8 < float(np.std(viewer.denoised.image)) < 1.2  # noise of sd 1 in noise units
    assert viewer.levels("denoised") == pytest.approx(RESIDUAL_LEVELS)
    assert viewer.denoised.title.text.startswith("residual")
    viewer.residual_box.setChecked(False)
    viewer.post_frames(raw, den)
    viewer.render_once()
    np.testing.assert_array_equal(viewer.denoised.image, den)
