"""LiveViewer: raw and denoised frames side by side while a live acquisition runs.

Why it is built this way:

* Acquisition and denoising run in their own threads, often faster than a screen can refresh. Those
  threads only call :meth:`LiveViewer.post_frames` / :meth:`LiveViewer.post_status`, which store the
  *latest* values under a lock and never touch Qt (Qt widgets may only be used from the GUI thread).
  A ~30 Hz ``QTimer`` in the GUI thread picks the latest values up, so a 400 fps camera costs the GUI
  no more than a 10 fps one; frames replaced before they were shown are counted in
  :attr:`LiveViewer.display_skipped` (display only: the acquisition and the writer never skip).
* Both images live in ``ViewBox`` es whose x and y ranges are linked, so zooming into a structure in the
  raw frame shows the same pixels in the denoised one -- the comparison a biologist needs to decide
  whether a structure is real or a model artefact.
* Contrast is automatic by default (0.5-99.8 percentiles of a pixel subsample, robust to hot pixels and
  cheap at any frame size) and becomes manual for an image as soon as its histogram handles are dragged.
  "same contrast for both" maps equal ADU to equal grey, so brightness differences are visible.

The viewer knows nothing about how frames are made: the session controller wires
:attr:`LiveViewer.on_calibrate`, :attr:`~LiveViewer.on_start`, :attr:`~LiveViewer.on_stop` and
:attr:`~LiveViewer.on_compare` (or the equivalent Qt signals) to its own methods.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from livedenoise.acquisition.status import SessionState, SessionStatus
from livedenoise.errors import InputDataError, LivedenoiseError

logger = logging.getLogger("livedenoise")

__all__ = ["AUTO_HIGH_PERCENTILE", "AUTO_LOW_PERCENTILE", "AUTO_MAX_SAMPLES", "LiveViewer", "auto_levels", "create_app",
           "qt_binding_defect", "subsample"]

#: Default auto-contrast percentiles: low enough to ignore dead pixels, high enough to keep bright puncta.
AUTO_LOW_PERCENTILE = 0.5
AUTO_HIGH_PERCENTILE = 99.8
#: Auto-contrast looks at no more than this many pixels (a strided subsample): a few ms per frame at any size.
AUTO_MAX_SAMPLES = 65_536

# Which buttons make sense in which session state (Calibrate, Start, Stop).
_BUTTONS_BY_STATE: dict[SessionState, tuple[bool, bool, bool]] = {
    SessionState.IDLE: (True, True, False),
    SessionState.CALIBRATING: (False, False, True),
    SessionState.LIVE: (True, False, True),
    SessionState.FINE_TUNING: (False, False, True),
    SessionState.STOPPED: (True, True, False),
    SessionState.FAILED: (True, True, False),
}

_STATE_COLOURS: dict[SessionState, str] = {
    SessionState.IDLE: "#9aa0a6",
    SessionState.CALIBRATING: "#f9ab00",
    SessionState.LIVE: "#34a853",
    SessionState.FINE_TUNING: "#4285f4",
    SessionState.STOPPED: "#9aa0a6",
    SessionState.FAILED: "#ea4335",
}


#: Display range of the residual view (noise standard deviations).
RESIDUAL_LEVELS = (-4.0, 4.0)


def qt_binding_defect() -> str | None:
    """Describe a known-fatal Qt binding defect in this environment, or return None if there is none.

    PySide6/shiboken6 6.12.0 on Python 3.11 drops a reference to ``None`` on every call of a Qt method that
    returns nothing. A live display makes hundreds of such calls per frame, so Python aborts within minutes
    ("Fatal Python error: none_dealloc"). The probe measures the behaviour instead of trusting version
    numbers; from Python 3.12 on ``None`` is immortal and the defect is harmless.
    """
    if sys.version_info >= (3, 12):
        return None
    probe = QtCore.QObject()
    calls = 64
    before = sys.getrefcount(None)
    for _ in range(calls):
        probe.setObjectName("livedenoise-probe")
    lost = before - sys.getrefcount(None)
    if lost >= calls // 2:
        return (f"The installed Qt binding ({pg.Qt.QT_LIB} {pg.Qt.QtVersion}, "
                f"Python {sys.version_info.major}.{sys.version_info.minor}) loses a reference to None on every "
                "Qt call and would crash the viewer; install PySide6-Essentials<6.12 or use Python 3.12 or newer.")
    return None


def create_app() -> QtWidgets.QApplication:
    """Return the running QApplication, creating one if there is none (Qt allows one per process).

    Raises :class:`LivedenoiseError` if the Qt binding has a defect that would crash a live display.
    """
    defect = qt_binding_defect()
    if defect is not None:
        raise LivedenoiseError(defect)
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(["livedenoise"])
    return app


def subsample(image: np.ndarray, max_samples: int = AUTO_MAX_SAMPLES) -> np.ndarray:
    """A regular strided subsample of at most ~``max_samples`` pixels (the whole image if it is smaller).

    A regular grid is deterministic (no flicker from random sampling) and, for the smooth intensity
    distributions of microscopy images, gives percentiles within a grey level of the full-image ones.
    """
    step = max(1, math.ceil(math.sqrt(image.size / max_samples)))
    return image[::step, ::step] if image.ndim >= 2 else image[::step]


def auto_levels(
    images: np.ndarray | Sequence[np.ndarray],
    low: float = AUTO_LOW_PERCENTILE,
    high: float = AUTO_HIGH_PERCENTILE,
    max_samples: int = AUTO_MAX_SAMPLES,
) -> tuple[float, float]:
    """Display levels (black, white) = the ``low`` / ``high`` percentiles of the subsampled image(s).

    Several images (raw and denoised for shared contrast) are pooled, each subsampled separately.
    NaN/inf pixels are ignored; a flat image gets a one-unit window so the display stays defined.
    """
    arrays = [images] if isinstance(images, np.ndarray) else list(images)
    pooled = np.concatenate([subsample(np.asarray(a), max_samples).ravel() for a in arrays if a is not None])
    if pooled.size == 0:
        return 0.0, 1.0
    pooled = pooled.astype(np.float64, copy=False)
    lo, hi = np.percentile(pooled, (low, high))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        finite = pooled[np.isfinite(pooled)]
        if finite.size == 0:
            return 0.0, 1.0
        lo, hi = np.percentile(finite, (low, high))
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _check_frame(name: str, frame: np.ndarray | None) -> np.ndarray | None:
    """Accept a 2-D numeric array (a YX frame); anything else is a caller's mistake worth one clear sentence."""
    if frame is None:
        return None
    arr = np.asarray(frame)
    if arr.ndim != 2 or arr.size == 0:
        raise InputDataError(f"The {name} frame posted to the viewer has shape {arr.shape}; "
                             "expected a non-empty 2-D (Y, X) image.")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputDataError(f"The {name} frame posted to the viewer has dtype {arr.dtype}; "
                             "expected an integer or float image.")
    return arr


class _TitleItem(pg.LabelItem):
    """A LabelItem that claims no width, so the two image columns stay equally wide whatever the titles say.

    (Unequal columns would make the linked, aspect-locked views show slightly different pixel ranges.)
    """

    def updateMin(self) -> None:  # noqa: N802 (pyqtgraph naming)
        super().updateMin()
        height = self._sizeHint[QtCore.Qt.SizeHint.MinimumSize][1]
        self.setMinimumWidth(0)
        self._sizeHint[QtCore.Qt.SizeHint.MinimumSize] = (0, height)
        self._sizeHint[QtCore.Qt.SizeHint.PreferredSize] = (0, height)
        self.updateGeometry()


@dataclasses.dataclass(eq=False)
class _Panel:
    """One image with its view, histogram/LUT, title and contrast mode."""

    key: str
    view: pg.ViewBox
    item: pg.ImageItem
    hist: pg.HistogramLUTItem
    title: pg.LabelItem
    auto_box: QtWidgets.QCheckBox
    image: np.ndarray | None = None

    @property
    def auto(self) -> bool:
        return self.auto_box.isChecked()


class LiveViewer(QtWidgets.QWidget):
    """Raw | denoised live display with linked zoom, contrast control, session status and session buttons.

    Thread rules: :meth:`post_frames` and :meth:`post_status` may be called from any thread; every other
    method belongs to the GUI thread.
    """

    calibrateRequested = QtCore.Signal()
    startRequested = QtCore.Signal()
    stopRequested = QtCore.Signal()
    compareToggled = QtCore.Signal(bool)

    def __init__(self, parent: QtWidgets.QWidget | None = None, refresh_hz: float = 30.0,
                 title: str = "livedenoise — live") -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        #: Called (in the GUI thread) when the user presses the buttons / toggles the compare box.
        self.on_calibrate: Callable[[], object] | None = None
        self.on_start: Callable[[], object] | None = None
        self.on_stop: Callable[[], object] | None = None
        self.on_compare: Callable[[bool], object] | None = None
        #: ``(raw, denoised) -> residual`` in noise units (the session's
        #: :func:`~livedenoise.residual_check.residual_map`); the "show residual" box is enabled only when one is set.
        self.residual_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

        self._lock = threading.Lock()
        self._pending_raw: np.ndarray | None = None
        self._pending_denoised: np.ndarray | None = None
        self._pending_status: SessionStatus | None = None
        self._posted = 0
        self._skipped = 0
        self._displayed = 0
        self._programmatic_levels = 0  # >0 while the viewer itself moves histogram handles
        self._status = SessionStatus()
        self._model_name = ""
        self._adapted = False

        self._build_ui()
        self._apply_status(self._status)

        # refresh_hz <= 0: no timer; the host calls render_once() itself (tests, embedding applications).
        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self.render_once)
        if refresh_hz > 0:
            self._timer.setInterval(max(1, round(1000.0 / refresh_hz)))
            self._timer.start()

    # ------------------------------------------------------------------ construction
    def _build_ui(self) -> None:
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("#101014")
        self.graphics.ci.layout.setSpacing(6)
        self.graphics.ci.setContentsMargins(4, 4, 4, 4)

        self.raw = self._make_panel("raw", gradient_position="left")
        self.denoised = self._make_panel("denoised", gradient_position="right")
        self.raw.title.setText("raw (as acquired)")
        self.graphics.addItem(self.raw.title, row=0, col=1)
        self.graphics.addItem(self.denoised.title, row=0, col=2)
        self.graphics.addItem(self.raw.hist, row=1, col=0)
        self.graphics.addItem(self.raw.view, row=1, col=1)
        self.graphics.addItem(self.denoised.view, row=1, col=2)
        self.graphics.addItem(self.denoised.hist, row=1, col=3)
        # Equal image columns: linked views with locked aspect then show exactly the same pixel range.
        grid = self.graphics.ci.layout
        grid.setColumnStretchFactor(1, 1)
        grid.setColumnStretchFactor(2, 1)
        # One pyqtgraph link per axis works both ways: the denoised view follows the raw one, and a zoom or
        # pan in the denoised view is pushed back to the raw view. (Linking twice would make the follower's
        # mere resizes switch off the raw view's fit-to-window.)
        self.denoised.view.setXLink(self.raw.view)
        self.denoised.view.setYLink(self.raw.view)
        self.denoised.title.setToolTip("Model output. Check fine or surprising structures against the raw image: "
                                       "a network can invent detail on samples unlike its training data.")
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)

        self.state_badge = QtWidgets.QLabel()
        self.state_badge.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.state_badge.setMinimumWidth(110)
        self.status_label = QtWidgets.QLabel()
        self.status_label.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        self.status_label.setWordWrap(True)
        font = self.status_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.status_label.setFont(font)
        self.error_label = QtWidgets.QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #ea4335; font-weight: bold;")
        self.error_label.hide()
        self.readout_label = QtWidgets.QLabel("")
        self.readout_label.setStyleSheet("color: #5f6368;")
        self.display_label = QtWidgets.QLabel("")
        self.display_label.setStyleSheet("color: #5f6368;")
        self.display_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)

        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)

        self.calibrate_button = QtWidgets.QPushButton("Calibrate")
        self.calibrate_button.setToolTip("Acquire calibration frames and fine-tune the model to this sample.")
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setToolTip("Start live acquisition with denoising.")
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.stop_button.setToolTip("Stop the acquisition (frames already acquired are kept).")
        self.compare_box = QtWidgets.QCheckBox("compare: backbone vs adapted")
        self.compare_box.setToolTip("Checked: the right image shows the pretrained backbone instead of the "
                                    "model adapted to this sample, so you can see what fine-tuning changed.")
        self.shared_box = QtWidgets.QCheckBox("same contrast for both")
        self.shared_box.setToolTip("Map the same intensity to the same grey in both images.")
        self.freeze_box = QtWidgets.QCheckBox("freeze display")
        self.freeze_box.setToolTip("Keep the current images on screen; acquisition and recording continue.")
        self.residual_box = QtWidgets.QCheckBox("show residual")
        self.residual_box.setToolTip("Right image: raw - denoised in noise units (standard deviation 1 if the noise "
                                     "model is right). It should look like pure noise; structure in it means the model "
                                     "removed or invented detail.")
        self.fit_button = QtWidgets.QPushButton("Fit")
        self.fit_button.setToolTip("Show the whole frame (undo zoom and pan).")

        self.calibrate_button.clicked.connect(
            lambda: self._invoke("calibrate", self.calibrateRequested, self.on_calibrate))
        self.start_button.clicked.connect(lambda: self._invoke("start", self.startRequested, self.on_start))
        self.stop_button.clicked.connect(lambda: self._invoke("stop", self.stopRequested, self.on_stop))
        self.compare_box.toggled.connect(self._on_compare_toggled)
        self.shared_box.toggled.connect(self._on_shared_toggled)
        self.fit_button.clicked.connect(self.fit_view)
        for panel in (self.raw, self.denoised):
            panel.auto_box.toggled.connect(lambda checked, p=panel: self._on_auto_toggled(p, checked))

        contrast_row = QtWidgets.QHBoxLayout()
        contrast_row.addWidget(self.raw.auto_box)
        contrast_row.addStretch(1)
        contrast_row.addWidget(self.shared_box)
        contrast_row.addWidget(self.freeze_box)
        contrast_row.addWidget(self.residual_box)
        contrast_row.addWidget(self.fit_button)
        contrast_row.addStretch(1)
        contrast_row.addWidget(self.denoised.auto_box)

        info_row = QtWidgets.QHBoxLayout()
        info_row.addWidget(self.readout_label, 1)
        info_row.addWidget(self.display_label)

        button_row = QtWidgets.QHBoxLayout()
        for button in (self.calibrate_button, self.start_button, self.stop_button):
            button.setMinimumWidth(90)
            button_row.addWidget(button)
        button_row.addSpacing(12)
        button_row.addWidget(self.compare_box)
        button_row.addSpacing(12)
        button_row.addWidget(self.progress, 1)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.graphics, 1)
        layout.addLayout(contrast_row)
        layout.addLayout(info_row)
        status_row = QtWidgets.QHBoxLayout()
        status_row.addWidget(self.state_badge)
        status_row.addWidget(self.status_label, 1)
        layout.addLayout(status_row)
        layout.addWidget(self.error_label)
        layout.addLayout(button_row)
        self.resize(1100, 680)

    def _make_panel(self, key: str, gradient_position: str) -> _Panel:
        view = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=True, name=f"livedenoise-{key}")
        view.setBackgroundColor("#000000")
        view.setDefaultPadding(0.0)
        item = pg.ImageItem(axisOrder="row-major")
        view.addItem(item)
        hist = pg.HistogramLUTItem(gradientPosition=gradient_position)
        hist.setImageItem(item)
        hist.setMinimumWidth(110)
        hist.setMaximumWidth(110)
        hist.sigLevelsChanged.connect(lambda _h, k=key: self._on_user_levels(k))
        title = _TitleItem(justify="center", color="#e8eaed", size="12pt")
        auto_box = QtWidgets.QCheckBox(f"auto contrast {key} ({AUTO_LOW_PERCENTILE:g}–{AUTO_HIGH_PERCENTILE:g} %)")
        auto_box.setToolTip("Black and white points follow the frame's percentiles. Drag the histogram "
                            "handles to set them by hand (this switches auto contrast off).")
        auto_box.setChecked(True)
        return _Panel(key=key, view=view, item=item, hist=hist, title=title, auto_box=auto_box)

    # ------------------------------------------------------------------ any-thread API
    def post_frames(self, raw: np.ndarray | None, denoised: np.ndarray | None = None) -> None:
        """Offer the latest raw frame and, if one is ready, the latest denoised frame. Any thread; never blocks on Qt.

        ``denoised=None`` means "no new denoised frame": the right image keeps its last one. ``raw=None`` (a frame
        whose pixels could not be read) offers no raw frame and replaces one still waiting. The arrays are kept by
        reference, so do not modify them after posting.
        """
        raw_arr = _check_frame("raw", raw)
        den_arr = _check_frame("denoised", denoised)
        with self._lock:
            self._posted += 1
            if self._pending_raw is not None:
                self._skipped += 1
            self._pending_raw = raw_arr
            if den_arr is not None:
                self._pending_denoised = den_arr

    def post_status(self, status: SessionStatus) -> None:
        """Offer the latest session status. Any thread; a copy is kept so later edits by the caller do not leak in."""
        snapshot = dataclasses.replace(status, errors=list(status.errors))
        with self._lock:
            self._pending_status = snapshot

    @property
    def display_skipped(self) -> int:
        """Posted frames that were replaced by a newer one before the display picked them up."""
        with self._lock:
            return self._skipped

    @property
    def display_count(self) -> int:
        """Frames shown so far."""
        with self._lock:
            return self._displayed

    @property
    def frames_posted(self) -> int:
        with self._lock:
            return self._posted

    # ------------------------------------------------------------------ GUI-thread API
    def render_once(self) -> bool:
        """Show whatever was posted since the last refresh; returns True if anything changed.

        Called by the refresh timer; call it directly to update synchronously (tests, screenshots).
        """
        if QtCore.QThread.currentThread() is not self.thread():
            raise RuntimeError("LiveViewer.render_once must run in the GUI thread; "
                               "other threads use post_frames/post_status.")
        frozen = self.freeze_box.isChecked()
        with self._lock:
            status = self._pending_status
            self._pending_status = None
            raw = den = None
            if not frozen:
                raw, den = self._pending_raw, self._pending_denoised
                self._pending_raw = self._pending_denoised = None
                if raw is not None:
                    self._displayed += 1
            skipped, displayed = self._skipped, self._displayed
        changed = False
        if status is not None:
            self._apply_status(status)
            changed = True
        if raw is not None or den is not None:
            self._show_images(raw, den)
            changed = True
        if changed:
            # this window's own count (frames replaced before it drew them), not the denoiser's skipped frames
            self.display_label.setText(f"viewer: {displayed} drawn, {skipped} replaced before drawing")
        return changed

    def status(self) -> SessionStatus:
        """The status currently shown."""
        return self._status

    def levels(self, which: str) -> tuple[float, float]:
        """Current display levels (black, white) of ``"raw"`` or ``"denoised"``."""
        lo, hi = self._panel(which).item.getLevels()
        return float(lo), float(hi)

    def set_levels(self, which: str, low: float, high: float) -> None:
        """Set manual levels for one image (and the other one when contrast is shared); auto contrast goes off."""
        panel = self._panel(which)
        targets = (self.raw, self.denoised) if self.shared_box.isChecked() else (panel,)
        for p in targets:
            p.auto_box.setChecked(False)
            self._set_panel_levels(p, (low, high))

    def set_auto_contrast(self, enabled: bool, which: str | None = None) -> None:
        """Switch auto-percentile contrast on/off for one image or (``which=None``) both."""
        for p in (self.raw, self.denoised) if which is None else (self._panel(which),):
            p.auto_box.setChecked(enabled)

    def fit_view(self) -> None:
        """Show the whole frame in both (linked) views, and keep fitting it on resize until the user zooms."""
        self.raw.view.enableAutoRange(pg.ViewBox.XYAxes, True)

    def save_screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Render pending updates and save the whole viewer as a PNG (works with the offscreen platform)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.render_once()
        QtWidgets.QApplication.processEvents()  # let the layouts follow the new texts before grabbing
        if self.isVisible():
            pixmap = self.grab()
        else:  # lay the widgets out without putting a window on the screen
            self.setAttribute(QtCore.Qt.WidgetAttribute.WA_DontShowOnScreen, True)
            self.show()
            QtWidgets.QApplication.processEvents()
            pixmap = self.grab()
            self.hide()
            self.setAttribute(QtCore.Qt.WidgetAttribute.WA_DontShowOnScreen, False)
        if pixmap.isNull() or not pixmap.save(str(out), "PNG"):
            raise LivedenoiseError(f"Could not write the viewer screenshot to {out}; expected a writable .png path.")
        return out

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 (Qt naming)
        self._timer.stop()
        super().closeEvent(event)

    # ------------------------------------------------------------------ internals
    def _panel(self, which: str) -> _Panel:
        if which == "raw":
            return self.raw
        if which == "denoised":
            return self.denoised
        raise ValueError(f"which must be 'raw' or 'denoised', got {which!r}")

    def _show_images(self, raw: np.ndarray | None, den: np.ndarray | None) -> None:
        # Refit the view only for a first frame or a new frame size (e.g. ROI change), never while the user zooms.
        if raw is not None:
            new_geometry = self.raw.image is None or self.raw.image.shape != raw.shape
        else:
            new_geometry = self.raw.image is None and self.denoised.image is None
        if raw is not None:
            self.raw.image = raw
        if den is not None:
            self.denoised.image = den
        if den is not None and self.showing_residual and self.raw.image is not None \
                and self.raw.image.shape == den.shape:
            try:
                den = np.asarray(self.residual_fn(self.raw.image, den), np.float32)  # type: ignore[misc]
                self.denoised.image = den
            except Exception as exc:  # never let a display option break the live view
                self._show_error(f"residual: {exc}")
        levels = self._target_levels()
        if self.showing_residual:
            levels["denoised"] = RESIDUAL_LEVELS
        with self._levels_guard():
            for panel, image in ((self.raw, raw), (self.denoised, den)):
                if image is None:
                    continue
                panel.item.setImage(image, autoLevels=False, levels=levels[panel.key])
        if self.denoised.image is not None:
            self._update_denoised_title()
        if new_geometry:
            self.fit_view()

    def _target_levels(self) -> dict[str, tuple[float, float]]:
        """Levels each panel should have now: auto-percentile or its current manual levels."""
        result: dict[str, tuple[float, float]] = {}
        shared = self.shared_box.isChecked()
        if shared and self.raw.auto:
            both = auto_levels([p.image for p in (self.raw, self.denoised) if p.image is not None])
            return {"raw": both, "denoised": both}
        for panel in (self.raw, self.denoised):
            if panel.auto and panel.image is not None:
                result[panel.key] = auto_levels(panel.image)
            else:
                manual = panel.hist.getLevels()
                result[panel.key] = (float(manual[0]), float(manual[1]))
        if shared:  # both manual: the raw handles lead
            result["denoised"] = result["raw"]
        return result

    def _refresh_levels(self) -> None:
        levels = self._target_levels()
        for panel in (self.raw, self.denoised):
            if panel.image is not None:
                self._set_panel_levels(panel, levels[panel.key])

    def _set_panel_levels(self, panel: _Panel, levels: tuple[float, float]) -> None:
        with self._levels_guard():
            panel.item.setLevels(levels)
            panel.hist.setLevels(*levels)

    @contextlib.contextmanager
    def _levels_guard(self) -> Iterator[None]:
        """Marks level changes made by the viewer, so only the user's drags switch contrast to manual."""
        self._programmatic_levels += 1
        try:
            yield
        finally:
            self._programmatic_levels -= 1

    def _on_user_levels(self, key: str) -> None:
        if self._programmatic_levels:
            return
        panel = self._panel(key)
        lo, hi = panel.hist.getLevels()
        if self.shared_box.isChecked():
            other = self.denoised if panel is self.raw else self.raw
            with self._levels_guard():
                self.raw.auto_box.setChecked(False)
                self.denoised.auto_box.setChecked(False)
            self._set_panel_levels(other, (float(lo), float(hi)))
        else:
            with self._levels_guard():
                panel.auto_box.setChecked(False)

    def _on_auto_toggled(self, panel: _Panel, checked: bool) -> None:
        if self.shared_box.isChecked():
            other = self.denoised if panel is self.raw else self.raw
            if other.auto_box.isChecked() != checked:
                other.auto_box.setChecked(checked)  # re-enters once, then both agree
        if checked:
            self._refresh_levels()

    def _on_shared_toggled(self, shared: bool) -> None:
        if shared:
            self.denoised.auto_box.setChecked(self.raw.auto_box.isChecked())
        self._refresh_levels()

    def _on_compare_toggled(self, checked: bool) -> None:
        self.compareToggled.emit(checked)
        if self.on_compare is not None:
            self._call("compare", self.on_compare, checked)

    def _invoke(self, name: str, signal: QtCore.SignalInstance, callback: Callable[[], object] | None) -> None:
        signal.emit()
        if callback is not None:
            self._call(name, callback)

    def _call(self, name: str, callback: Callable[..., object], *args: object) -> None:
        """Run a user callback; a failure is shown in the window instead of vanishing into Qt's event loop."""
        try:
            callback(*args)
        except LivedenoiseError as exc:
            self._show_error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a GUI must survive a failing controller
            logger.exception("viewer: %s callback failed", name)
            self._show_error(f"{name} failed: {exc}")

    def _show_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    def _apply_status(self, status: SessionStatus) -> None:
        self._status = status
        colour = _STATE_COLOURS.get(status.state, "#9aa0a6")
        self.status_label.setText(status.line())
        self.state_badge.setText(status.state.value.upper())
        self.state_badge.setStyleSheet(f"QLabel {{ background: {colour}; color: white; font-weight: bold; "
                                       f"border-radius: 4px; padding: 3px 8px; }}")
        calibrate, start, stop = _BUTTONS_BY_STATE.get(status.state, (True, True, True))
        self.calibrate_button.setEnabled(calibrate)
        self.start_button.setEnabled(start)
        self.stop_button.setEnabled(stop)
        self.progress.setValue(round(min(max(status.finetune_progress, 0.0), 1.0) * 1000))
        if status.state == SessionState.FINE_TUNING:
            loss = f" · loss {status.finetune_loss:.4g}" if status.finetune_loss is not None else ""
            self.progress.setFormat(f"fine-tuning %p%{loss} · {status.finetune_elapsed_s:.0f} s")
        elif status.adapted:
            self.progress.setFormat("fine-tuned model in use")
        elif status.finetune_progress > 0:  # it ran and the swap check kept the backbone (or it was stopped)
            self.progress.setFormat("fine-tuning ended; the backbone is in use")
        else:
            self.progress.setFormat("fine-tuning: not started")
        self._show_error(status.errors[-1] if status.errors else "")
        self._model_name = status.model_name
        self._adapted = status.adapted
        self._update_denoised_title()

    @property
    def showing_residual(self) -> bool:
        """True when the right image shows the residual instead of the denoised frame."""
        return self.residual_box.isChecked() and self.residual_fn is not None

    def _update_denoised_title(self) -> None:
        if self.showing_residual:
            self.denoised.title.setText("residual: raw - denoised, in noise standard deviations (grey = 0, range ±4)")
            return
        name = self._model_name or "model"
        if self._adapted:
            name += ", adapted"
        waiting = "" if self.denoised.image is not None else " — waiting for first frame"
        self.denoised.title.setText(f"denoised ({name}){waiting}")

    def _on_mouse_moved(self, scene_pos: QtCore.QPointF) -> None:
        """Show the pixel under the cursor with its raw and denoised values (both images share coordinates)."""
        for panel in (self.raw, self.denoised):
            if panel.view.sceneBoundingRect().contains(scene_pos):
                point = panel.view.mapSceneToView(scene_pos)
                self.readout_label.setText(self.pixel_readout(math.floor(point.x()), math.floor(point.y())))
                return
        self.readout_label.setText("")

    def pixel_readout(self, x: int, y: int) -> str:
        """"x, y: raw value | denoised value" for the pixel at column ``x``, row ``y`` ('' outside the frame)."""
        parts = []
        for panel in (self.raw, self.denoised):
            img = panel.image
            if img is not None and 0 <= y < img.shape[0] and 0 <= x < img.shape[1]:
                value = img[y, x]
                parts.append(f"{panel.key} {value:.4g}" if np.issubdtype(img.dtype, np.floating)
                             else f"{panel.key} {value}")
        return f"x {x}, y {y}: " + " | ".join(parts) if parts else ""
