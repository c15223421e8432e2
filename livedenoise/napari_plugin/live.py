"""napari widget "Live denoise": denoise the MDAs that napari-micromanager (or any pymmcore-plus user) runs, show the
newest denoised frame of each channel as a layer (frames that arrive while the model is busy are skipped for display
and counted) and, when *record to* is set, denoise and record every frame; calibrate each channel first.

It listens to the ``mda.events`` of the core napari-micromanager drives (its main window's ``core``, looked up in
the viewer's docks at each *Attach*, since napari-micromanager 0.3 makes its own core rather than the global one;
pymmcore-plus's global ``CMMCorePlus.instance()`` where no napari-micromanager window is docked; or the core given)
and hands each frame to a :class:`livedenoise.attach.MDADenoiser`, one per sequence: the
raw frames are saved by whatever the user chose in the MDA widget, exactly as acquired, and never wait for the
denoiser. Where the slots run depends on pymmcore-plus's signal backend: with a Qt app running when the core was made
(napari-micromanager), in napari's GUI thread, queued; otherwise (psygnal) in the acquisition thread. So a slot only
hands frames over; the end of a sequence (writing every queued frame) runs in a thread of its own, never in napari's;
and a Qt timer moves the newest denoised frames into the layers in napari's thread.

*Calibrate* takes reference pairs with the chosen channel presets at fields beside the current one (1.5 fields of
view apart along x, so the current field is not in the calibration frames), puts the stage back, fine-tunes each
channel's model in the background (:meth:`livedenoise.attach.MDADenoiser.calibrate`) and keeps the adapted models
that beat the current ones on a held-out pair for every later MDA (until the model is changed).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from livedenoise.acquisition.mda_listeners import is_calibration
from livedenoise.errors import ConfigError, LivedenoiseError
from livedenoise.napari_plugin.work import MODEL_TIP

log = logging.getLogger("livedenoise")

#: The layer the newest denoised frame is shown in (with `` [channel]`` appended when the MDA has channels).
LAYER_NAME = "livedenoise: denoised (live)"
REFRESH_MS = 100
#: Calibration fields are this many fields of view apart (and from the current one), so none overlaps another.
FIELD_SPACING = 1.5


class LiveDenoiseWidget(QWidget):
    """Attach / detach livedenoise to a pymmcore-plus core's MDA, and calibrate; see the module docstring."""

    def __init__(self, napari_viewer: Any, core: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._core = core
        self._lock = threading.Lock()
        self._denoiser: Any = None  # the MDADenoiser of the running sequence
        self._last: Any = None  # ... of the last one (its frames stay on screen)
        self._finishing: threading.Thread | None = None  # writing the last sequence's queued frames
        self._shown: dict[str, Any] = {}  # layer name -> the DenoisedFrame now in it
        self._sequences = 0
        self._settings: tuple[str, str] = ("temporal", "")  # model and output folder, read once at attach()
        self.last_report: Any = None
        #: channel preset (None: no channel axis) -> the model a calibration adapted and swapped in
        self.adapted: dict[str | None, Any] = {}
        self.calibration_results: dict[str, Any] = {}  #: channel -> Adaptation of the last calibration
        self.training: Any = None  #: a TrainingConfig for calibration fine-tunes (None: the defaults)
        self._calibrating = False  # the calibration's own MDA is running (its events carry CALIBRATION_TAG)
        self._calibration_thread: threading.Thread | None = None
        self._message = ""  # a calibration's state or a sequence's failure, shown by refresh()
        self._attached_core: Any = None  # the core whose MDA events are connected (see attach)
        self._docked = False  # has had a parent: losing it means napari removed the dock
        # napari's window closing deletes this widget without a closeEvent: finish the recording then too. Only
        # Python state is touched (the Qt side is being destroyed), so it is a plain function, not a bound slot.
        self.destroyed.connect(lambda *_: _release(self))
        self.model = QLineEdit("temporal")
        self.model.setToolTip(MODEL_TIP)
        self.model.textChanged.connect(self._model_changed)
        self.output = QLineEdit("")
        self.output.setPlaceholderText("folder to record every denoised frame in (empty: display only)")
        self.button = QPushButton("Attach to the MDA")
        self.button.setCheckable(True)
        self.button.toggled.connect(self._toggle)
        self.status = QLabel("not attached")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("model", self.model)
        form.addRow("record to", self.output)
        self.channels = QLineEdit("")
        self.channels.setPlaceholderText("presets of the channel group, comma-separated (empty: the current one)")
        self.fields = QSpinBox()
        self.fields.setRange(1, 20)
        self.fields.setValue(3)
        self.average = QSpinBox()
        self.average.setRange(2, 64)
        self.average.setValue(16)
        self.seconds = QDoubleSpinBox()
        self.seconds.setRange(1.0, 3600.0)
        self.seconds.setValue(60.0)
        #: subtract the camera's fixed pattern from the averaged references (MDADenoiser.calibrate); off for
        #: a sample whose fields share fine structure at the same pixels, which the estimate would take away
        self.remove_pattern = QCheckBox("remove the camera's fixed pattern from the references")
        self.remove_pattern.setChecked(True)
        self.calibrate_button = QPushButton("Calibrate")
        self.calibrate_button.clicked.connect(lambda: self._start_calibration())
        box = QGroupBox("Calibrate (reference pairs beside the current field)")
        cal_form = QFormLayout(box)
        cal_form.addRow("channels", self.channels)
        cal_form.addRow("fields", self.fields)
        cal_form.addRow("frames averaged per reference", self.average)
        cal_form.addRow("fine-tune budget (s)", self.seconds)
        cal_form.addRow(self.remove_pattern)
        cal_form.addRow(self.calibrate_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(box)
        layout.addWidget(self.button)
        layout.addWidget(self.status)
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)

    # -- attaching -------------------------------------------------------------------------------------
    @property
    def core(self) -> Any:
        """The core given, else napari-micromanager's (looked up now: it can swap its core), else the global one."""
        if self._core is not None:
            return self._core
        found = napari_micromanager_core(self.viewer)
        if found is not None:
            return found
        from pymmcore_plus import CMMCorePlus

        return CMMCorePlus.instance()

    @property
    def attached(self) -> bool:
        return self.button.isChecked()

    def _model_choice(self) -> str:
        return self.model.text().strip() or "temporal"

    def _model_changed(self, _text: str) -> None:
        if self.adapted:  # adapted from the other model: the new choice applies to every channel again
            self.adapted = {}
            self._message = "the model changed: calibrated channels use it again (calibrate again to adapt it)"

    def _toggle(self, on: bool) -> None:
        try:
            self.attach() if on else self.detach()
        except LivedenoiseError as exc:
            self.button.blockSignals(True)
            self.button.setChecked(False)
            self.button.blockSignals(False)
            self.status.setText(f"error: {exc}")

    def attach(self) -> None:
        """Check the model now (a wrong name fails here, not at the first frame) and listen to the core's MDA."""
        from livedenoise.modelspec import load_model_spec

        load_model_spec(self._model_choice(), foreign=True)  # another tool's Model Zoo .zip runs as it is
        self._settings = (self._model_choice(), self.output.text().strip())
        core = self._attached_core = self.core
        events = core.mda.events
        events.sequenceStarted.connect(self._sequence_started)
        events.frameReady.connect(self._frame_ready)
        events.sequenceFinished.connect(self._sequence_finished)
        self.model.setEnabled(False)
        self.output.setEnabled(False)
        self.button.setText("Detach")
        self._message = ""
        whose = ("" if self._core is not None or napari_micromanager_core(self.viewer) is not None
                 else " (no napari-micromanager window in this viewer: pymmcore-plus's global core)")
        if core.mda.is_running():  # its sequenceStarted has passed: this MDA cannot be followed
            self._message = ("attached: the MDA running now started before Attach and is not denoised; the next one "
                             "will be" + whose)
        self.status.setText(self._message or "attached: waiting for an MDA to start" + whose)
        self.timer.start()

    def detach(self) -> None:
        """Stop listening; a sequence still running is finished (its queued frames written) in the background."""
        _release(self)
        self._message = ""
        self.model.setEnabled(True)
        self.output.setEnabled(True)
        self.button.setText("Attach to the MDA")
        self.refresh()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Closing the widget detaches it, so a running sequence's recording is finished, not abandoned."""
        if self.attached:
            self.button.setChecked(False)
        super().closeEvent(event)

    def event(self, event: Any) -> bool:
        """napari's "close" of a dock takes the widget out of it (no closeEvent): losing the parent it had detaches,
        as closing does; otherwise the removed, invisible widget would go on denoising every MDA."""
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self._docked = False
                if self.attached:
                    self.button.setChecked(False)
                self.timer.stop()
        return super().event(event)

    # -- the MDA's events (napari's thread with Qt signals, the acquisition thread with psygnal) ---------
    def _sequence_started(self, sequence: Any, *_: Any) -> None:
        from livedenoise.attach import MDADenoiser

        # calibration frames are references, not a sequence to record: tagged, so a late (queued) event is known too
        if self._attached_core is None or is_calibration(sequence):
            return
        model, folder = self._settings
        with self._lock:
            self._sequences += 1
            try:
                den = MDADenoiser(self.adapted.get(None, model),
                                  channels={k: v for k, v in self.adapted.items() if k is not None},
                                  output=Path(folder).expanduser() if folder else None,
                                  name=f"denoised_{self._sequences:03d}")
                den.sequenceStarted(sequence)
            except Exception as exc:  # never the user's acquisition's problem: raw frames are saved regardless
                self._message = (f"sequence {self._sequences} is NOT denoised ({exc.__class__.__name__}: {exc}); "
                                 "the raw frames are saved as usual")
                log.error("livedenoise: %s", self._message)
                self._denoiser = None
                return
            self._message = ""
            self._denoiser = den

    def _frame_ready(self, image: Any, event: Any, *_: Any) -> None:
        den = self._denoiser
        if den is not None and not is_calibration(getattr(event, "sequence", None)):
            den.frameReady(image, event)  # a copy and a hand-over: never waits for the model

    def _sequence_finished(self, sequence: Any, *_: Any) -> None:
        if not is_calibration(sequence):
            self._finish_in_background(sequence)

    def _finish_in_background(self, sequence: Any) -> None:
        with self._lock:
            den, self._denoiser = self._denoiser, None
        if den is None:
            return
        self._last = den

        def finish() -> None:
            den.sequenceFinished(sequence)  # writes every queued frame, closes the dataset
            self.last_report = den.result

        self._finishing = threading.Thread(target=finish, name="livedenoise-finish", daemon=True)
        self._finishing.start()

    def wait_until_recorded(self, timeout: float | None = None) -> bool:
        """Block until the last sequence's frames are all written (scripts and tests; napari need not call it)."""
        thread = self._finishing
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    # -- calibration ------------------------------------------------------------------------------------
    def calibration_fields(self, n: int) -> list[tuple[float, float]]:
        """``n`` stage positions (µm) beside the current field, :data:`FIELD_SPACING` fields of view apart along x."""
        core = self.core
        if not core.getXYStageDevice():
            raise ConfigError("calibration needs an XY stage to image fields beside the current one; this core has "
                              "none")
        pixel = float(core.getPixelSizeUm())
        if pixel <= 0:
            raise ConfigError("the core has no pixel size (Micro-Manager's Pixel Size Calibration): without it the "
                              "calibration fields could overlap the current one; set one first")
        step = FIELD_SPACING * pixel * max(int(core.getImageWidth()), int(core.getImageHeight()))
        x0, y0 = float(core.getXPosition()), float(core.getYPosition())
        return [(x0 + k * step, y0) for k in range(1, n + 1)]

    def calibration_sequence(self) -> Any:
        """An MDA sequence with the chosen channel presets (or the current one) of the core's channel group."""
        import useq

        group = self.core.getChannelGroup()
        names = [c.strip() for c in self.channels.text().split(",") if c.strip()]
        if names and not group:
            raise ConfigError("channels were named but the core has no channel group; set one, or leave channels "
                              "empty")
        if not names and group and self.core.getCurrentConfig(group):
            names = [self.core.getCurrentConfig(group)]
        unknown = [n for n in names if n not in self.core.getAvailableConfigs(group)]
        if unknown:
            raise ConfigError(f"channel preset(s) {', '.join(map(repr, unknown))} are not in the channel group "
                              f"{group!r} (presets: {', '.join(self.core.getAvailableConfigs(group))})")
        return useq.MDASequence(channels=tuple(useq.Channel(config=n, group=group) for n in names))

    def _start_calibration(self) -> threading.Thread | None:
        try:
            return self.calibrate()
        except LivedenoiseError as exc:
            self.status.setText(f"error: {exc}")
            return None

    def _calibration_running(self) -> bool:
        thread = self._calibration_thread
        return thread is not None and thread.is_alive()

    def calibrate(self) -> threading.Thread:
        """Check the settings, then acquire the pairs and fine-tune in a background thread (returned): the
        acquisition takes seconds, the fine-tunes the budget; progress and results appear in the status line."""
        from livedenoise.attach import MDADenoiser
        from livedenoise.modelspec import load_model_spec

        if self._calibrating or self._calibration_running():
            raise ConfigError("a calibration is still running; wait for its result")
        if self.core.mda.is_running() or self.core.isSequenceRunning():
            raise ConfigError("an acquisition (an MDA or the live view) is running; stop it, then calibrate")
        sequence = self.calibration_sequence()
        positions = self.calibration_fields(self.fields.value())
        model = self._model_choice()
        load_model_spec(model)  # a wrong model fails now, not in the thread
        average, seconds, training = self.average.value(), self.seconds.value(), self.training
        remove_pattern = self.remove_pattern.isChecked()
        carried = dict(self.adapted)
        self._calibrating = True
        self.calibrate_button.setEnabled(False)
        self._message = f"calibrating: {len(positions)} field(s) x {1 + average} frames per channel"
        self.status.setText(self._message)

        def run() -> None:
            den = None
            try:
                den = MDADenoiser(carried.get(None, model),
                                  channels={k: v for k, v in carried.items() if k is not None})
                try:
                    futures = den.calibrate(self.core, sequence, positions, average=average, time_budget_s=seconds,
                                            training=training, remove_fixed_pattern=remove_pattern)
                finally:
                    self._calibrating = False  # the acquisition part is over; fine-tunes run in the background
                self._message = f"calibration pairs taken; fine-tuning {len(futures)} channel(s), up to {seconds:g} s"
                results = {ch: f.result() for ch, f in futures.items()}
                models = den.current_models()
                adapted = dict(carried)
                for ch, outcome in results.items():
                    key = None if ch == "None" else ch
                    if outcome.swapped and key in models:
                        adapted[key] = models[key]
                self.adapted = adapted
                self.calibration_results = results
                self._message = "calibration: " + "; ".join(
                    f"{ch}: {'adapted' if o.swapped else 'kept the current model'} ({o.steps} steps, {o.reason})"
                    for ch, o in results.items())
            except Exception as exc:  # shown in one sentence; the models stay as they were
                self._message = f"calibration failed: {exc.__class__.__name__}: {exc}"
                log.warning("livedenoise: %s", self._message)
            finally:
                self._calibrating = False
                if den is not None:
                    den.close(progress=False)

        thread = threading.Thread(target=run, name="livedenoise-calibration", daemon=True)
        self._calibration_thread = thread
        thread.start()
        self.timer.start()
        return thread

    # -- display (napari's thread) -----------------------------------------------------------------------
    def _layer_scale(self) -> tuple[float, float]:
        """µm per pixel of the attached core (1 where it has no pixel size), as napari-micromanager scales layers."""
        core = self._attached_core if self._attached_core is not None else self._core
        try:
            pixel = float(core.getPixelSizeUm()) if core is not None else 0.0
        except Exception:  # noqa: BLE001 - a core without a pixel-size configuration
            pixel = 0.0
        return (pixel, pixel) if pixel > 0 else (1.0, 1.0)

    def refresh(self) -> None:
        """Show each channel's newest denoised frame in its layer, and the counts (or calibration) in the status."""
        self.calibrate_button.setEnabled(not self._calibrating and not self._calibration_running())
        running = self._denoiser  # read once: the acquisition thread may replace it meanwhile
        den = running if running is not None else self._last
        latest = den.latest() if den is not None else None
        if latest is not None and latest.denoised is not None:
            channel = (latest.info.get("axes") or {}).get("channel")
            name = LAYER_NAME if channel is None else f"{LAYER_NAME} [{channel}]"
            if self._shown.get(name) is not latest:
                self._shown[name] = latest
                if name in self.viewer.layers:
                    self.viewer.layers[name].data = latest.denoised
                else:  # a new layer sets its contrast from this first frame of its channel; it overlays the raw
                    # layers napari-micromanager adds at the core's pixel size
                    self.viewer.add_image(latest.denoised, name=name, scale=self._layer_scale())
        finishing = self._finishing is not None and self._finishing.is_alive()
        report = self.last_report
        adapted = f" (adapted: {', '.join(str(k) for k in self.adapted)})" if self.adapted else ""
        if self._message:
            self.status.setText(self._message)
        elif running is not None:
            self.status.setText(f"sequence {self._sequences}: {running.written} frames recorded, "
                                f"{running.backlog} queued{adapted}"
                                + (f"; showing {latest.model_name}" if latest is not None else ""))
        elif finishing and self._last is not None:
            self.status.setText(f"sequence {self._sequences} ended: writing the {self._last.backlog} denoised frames "
                                "still queued")
        elif report is not None:
            where = f" in {report.denoised_path}" if report.denoised_path else ""
            self.status.setText(f"sequence {self._sequences} done: {report.frames_written} denoised frames "
                                f"recorded{where}; {report.display_denoised} shown{adapted}"
                                + (f"; {len(report.errors)} error(s): {report.errors[0]}" if report.errors else ""))
        elif not self.attached:
            self.status.setText("not attached" + adapted)
        if not self.attached and not finishing and not self._calibration_running() and not self._calibrating:
            self.timer.stop()


def napari_micromanager_core(viewer: Any) -> Any:
    """The core of a napari-micromanager main window docked in ``viewer``'s window, or None."""
    window = getattr(viewer, "window", None)
    docks = getattr(window, "dock_widgets", None) or getattr(window, "_dock_widgets", None) or {}
    for dock in list(docks.values()):
        inner = dock.widget() if hasattr(dock, "widget") and callable(dock.widget) else dock
        if type(inner).__module__.startswith("napari_micromanager") and getattr(inner, "core", None) is not None:
            return inner.core
    return None


def _release(widget: LiveDenoiseWidget) -> None:
    """Disconnect from the attached core's MDA events and finish a running sequence's recording in the background.
    Python state only: it also runs while the widget's Qt side is being destroyed."""
    core, widget._attached_core = widget._attached_core, None
    if core is not None:
        events = core.mda.events
        for signal, slot in ((events.sequenceStarted, widget._sequence_started),
                             (events.frameReady, widget._frame_ready),
                             (events.sequenceFinished, widget._sequence_finished)):
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError, ValueError, SystemError):
                # already disconnected; or, for Qt signals while the widget is being destroyed, PySide's SystemError:
                # Qt drops those connections itself, and the slots check _attached_core, not the widget
                pass
    widget._finish_in_background(None)
