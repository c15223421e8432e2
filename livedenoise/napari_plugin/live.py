"""napari widget "Live denoise": denoise every frame of the MDAs that napari-micromanager (or any pymmcore-plus user)
runs, show the newest denoised frame as a layer, and record all of them; calibrate each channel first.

It listens to the core's ``mda.events`` (the global ``CMMCorePlus.instance()``, which napari-micromanager drives,
unless a core is given) and hands each frame to a :class:`livedenoise.attach.MDADenoiser`, one per sequence: the
raw frames are saved by whatever the user chose in the MDA widget, exactly as acquired, and never wait for the
denoiser. A Qt timer moves the newest denoised frame into the layer in napari's own thread (layers must not be
touched from the acquisition thread).

*Calibrate* takes reference pairs with the chosen channel presets at fields beside the current one (one field of view
apart along x, so the experiment's own field gets no extra light), fine-tunes each channel's model in the background
(:meth:`livedenoise.attach.MDADenoiser.calibrate`) and keeps the adapted models that beat the current ones on a
held-out pair for every later MDA.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
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

from livedenoise.errors import ConfigError, LivedenoiseError

log = logging.getLogger("livedenoise")

#: The layer the newest denoised frame is shown in.
LAYER_NAME = "livedenoise: denoised (live)"
REFRESH_MS = 100


class LiveDenoiseWidget(QWidget):
    """Attach / detach livedenoise to a pymmcore-plus core's MDA; see the module docstring."""

    def __init__(self, napari_viewer: Any, core: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._core = core
        self._lock = threading.Lock()
        self._denoiser: Any = None  # the MDADenoiser of the running (or last) sequence
        self._shown: Any = None  # the DenoisedFrame now in the layer
        self._sequences = 0
        self.last_report: Any = None
        #: channel preset (None: no channel axis) -> the model a calibration adapted and swapped in
        self.adapted: dict[str | None, Any] = {}
        self.calibration_results: dict[str, Any] = {}  #: channel -> Adaptation of the last calibration
        self.training: Any = None  #: a TrainingConfig for calibration fine-tunes (None: the defaults)
        self._calibrating = False  # the calibration's own MDA is running: its events are not a sequence to record
        self._calibration_thread: threading.Thread | None = None
        self._message = ""  # set by the calibration thread, shown by refresh()
        self.model = QLineEdit("fast")
        self.model.setToolTip("a shipped backbone (fast, standard, temporal), a .safetensors checkpoint or a Model "
                              "Zoo .zip")
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
        self.calibrate_button = QPushButton("Calibrate")
        self.calibrate_button.clicked.connect(lambda: self._start_calibration())
        box = QGroupBox("Calibrate (reference pairs beside the current field)")
        cal_form = QFormLayout(box)
        cal_form.addRow("channels", self.channels)
        cal_form.addRow("fields", self.fields)
        cal_form.addRow("frames averaged per reference", self.average)
        cal_form.addRow("fine-tune budget (s)", self.seconds)
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
        if self._core is None:
            from pymmcore_plus import CMMCorePlus

            self._core = CMMCorePlus.instance()  # the core napari-micromanager drives
        return self._core

    @property
    def attached(self) -> bool:
        return self.button.isChecked()

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

        load_model_spec(self.model.text().strip() or "fast")
        events = self.core.mda.events
        events.sequenceStarted.connect(self._sequence_started)
        events.frameReady.connect(self._frame_ready)
        events.sequenceFinished.connect(self._sequence_finished)
        self.model.setEnabled(False)
        self.output.setEnabled(False)
        self.button.setText("Detach")
        self.status.setText("attached: waiting for an MDA to start")
        self.timer.start()

    def detach(self) -> None:
        """Stop listening; a sequence still running is finished first (every queued frame written)."""
        events = self.core.mda.events
        for signal, slot in ((events.sequenceStarted, self._sequence_started), (events.frameReady, self._frame_ready),
                             (events.sequenceFinished, self._sequence_finished)):
            signal.disconnect(slot)
        self._finish(None)
        if not self._calibration_running():
            self.timer.stop()
        self.refresh()
        self.model.setEnabled(True)
        self.output.setEnabled(True)
        self.button.setText("Attach to the MDA")

    # -- the MDA's events (called in the acquisition thread) -------------------------------------------
    def _sequence_started(self, sequence: Any, *_: Any) -> None:
        from livedenoise.attach import MDADenoiser

        if self._calibrating:  # the calibration's own MDA: its frames are references, not a sequence to record
            return
        self._message = ""
        folder = self.output.text().strip()
        with self._lock:
            self._sequences += 1
            try:
                den = MDADenoiser(self.adapted.get(None, self._model_choice()),
                                  channels={k: v for k, v in self.adapted.items() if k is not None},
                                  output=Path(folder).expanduser() if folder else None,
                                  name=f"denoised_{self._sequences:03d}")
            except LivedenoiseError as exc:  # the acquisition goes on without denoising
                log.error("livedenoise: %s", exc)
                self._denoiser = None
                return
            den.sequenceStarted(sequence)
            self._denoiser = den

    def _frame_ready(self, image: Any, event: Any, *_: Any) -> None:
        den = self._denoiser
        if den is not None and not self._calibrating:
            den.frameReady(image, event)

    def _sequence_finished(self, sequence: Any, *_: Any) -> None:
        if not self._calibrating:
            self._finish(sequence)

    def _model_choice(self) -> str:
        return self.model.text().strip() or "fast"

    # -- calibration ------------------------------------------------------------------------------------
    def calibration_fields(self, n: int) -> list[tuple[float, float]]:
        """``n`` stage positions (µm) beside the current field, one field of view apart along x."""
        core = self.core
        if not core.getXYStageDevice():
            raise ConfigError("calibration needs an XY stage to image fields beside the current one; this core has "
                              "none")
        pixel = float(core.getPixelSizeUm())
        if pixel <= 0:
            raise ConfigError("the core has no pixel size (Micro-Manager's Pixel Size Calibration): without it the "
                              "calibration fields could overlap the current one; set one first")
        step = pixel * max(int(core.getImageWidth()), int(core.getImageHeight()))
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

    def calibrate(self) -> threading.Thread:
        """Check the settings, then acquire the pairs and fine-tune in a background thread (returned): the
        acquisition takes seconds, the fine-tunes the budget; progress and results appear in the status line."""
        from livedenoise.attach import MDADenoiser
        from livedenoise.modelspec import load_model_spec

        if self.core.mda.is_running() or self._calibrating or self._calibration_running():
            raise ConfigError("an acquisition is running; calibrate before starting the MDA")
        sequence = self.calibration_sequence()
        positions = self.calibration_fields(self.fields.value())
        load_model_spec(self._model_choice())  # a wrong model fails now, not in the thread
        average, seconds = self.average.value(), self.seconds.value()
        self._calibrating = True
        self.calibrate_button.setEnabled(False)
        self._message = f"calibrating: {len(positions)} field(s) x {1 + average} frames per channel"
        self.status.setText(self._message)

        def run() -> None:
            try:
                den = MDADenoiser(self.adapted.get(None, self._model_choice()),
                                  channels={k: v for k, v in self.adapted.items() if k is not None})
                try:
                    futures = den.calibrate(self.core, sequence, positions, average=average, time_budget_s=seconds,
                                            training=self.training)
                finally:
                    self._calibrating = False  # the acquisition part is over; fine-tunes run in the background
                self._message = f"calibration pairs taken; fine-tuning {len(futures)} channel(s), up to {seconds:g} s"
                results = {ch: f.result() for ch, f in futures.items()}
                models = den.current_models()
                for ch, outcome in results.items():
                    key = None if ch == "None" else ch
                    if outcome.swapped and key in models:
                        self.adapted[key] = models[key]
                den.close(progress=False)
                self.calibration_results = results
                self._message = "calibration: " + "; ".join(
                    f"{ch}: {'adapted' if o.swapped else 'kept the current model'} ({o.steps} steps, {o.reason})"
                    for ch, o in results.items())
            except Exception as exc:  # shown in one sentence; the models stay as they were
                self._message = f"calibration failed: {exc.__class__.__name__}: {exc}"
                log.warning("livedenoise: %s", self._message)
            finally:
                self._calibrating = False

        thread = threading.Thread(target=run, name="livedenoise-calibration", daemon=True)
        self._calibration_thread = thread
        thread.start()
        self.timer.start()
        return thread

    def _finish(self, sequence: Any) -> None:
        with self._lock:
            den, self._denoiser = self._denoiser, None
        if den is not None:
            den.sequenceFinished(sequence)  # writes every queued frame, closes the dataset
            self.last_report = den.result
            self._last = den

    # -- display (napari's thread) -----------------------------------------------------------------------
    def refresh(self) -> None:
        """Show the newest denoised frame in the layer, and the counts (or the calibration's state) in the status."""
        self.calibrate_button.setEnabled(not self._calibrating and not self._calibration_running())
        den = self._denoiser or getattr(self, "_last", None)
        latest = den.latest() if den is not None else None
        if latest is not None and latest is not self._shown and latest.denoised is not None:
            self._shown = latest
            if LAYER_NAME in self.viewer.layers:
                self.viewer.layers[LAYER_NAME].data = latest.denoised
            else:
                self.viewer.add_image(latest.denoised, name=LAYER_NAME)
        report = self.last_report if self._denoiser is None else None
        if self._message:  # a calibration's state, until the next sequence starts
            self.status.setText(self._message)
        elif self._denoiser is not None:
            running = self._denoiser
            self.status.setText(f"sequence {self._sequences}: {running.written} frames recorded, "
                                f"{running.backlog} queued"
                                + (f"; showing {latest.model_name}" if latest is not None else ""))
        elif report is not None:
            where = f" in {report.denoised_path}" if report.denoised_path else ""
            self.status.setText(f"sequence {self._sequences} done: {report.frames_written} denoised frames "
                                f"recorded{where}; {report.display_denoised} shown"
                                + (f"; {len(report.errors)} error(s): {report.errors[0]}" if report.errors else ""))

    def _calibration_running(self) -> bool:
        thread = self._calibration_thread
        return thread is not None and thread.is_alive()
