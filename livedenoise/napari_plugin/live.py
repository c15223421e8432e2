"""napari widget "Live denoise": denoise every frame of the MDAs that napari-micromanager (or any pymmcore-plus user)
runs, show the newest denoised frame as a layer, and record all of them.

It listens to the core's ``mda.events`` (the global ``CMMCorePlus.instance()``, which napari-micromanager drives,
unless a core is given) and hands each frame to a :class:`livedenoise.attach.MDADenoiser`, one per sequence: the
raw frames are saved by whatever the user chose in the MDA widget, exactly as acquired, and never wait for the
denoiser. A Qt timer moves the newest denoised frame into the layer in napari's own thread (layers must not be
touched from the acquisition thread).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFormLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from livedenoise.errors import LivedenoiseError

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
        layout = QVBoxLayout(self)
        layout.addLayout(form)
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
        self.timer.stop()
        self.refresh()
        self.model.setEnabled(True)
        self.output.setEnabled(True)
        self.button.setText("Attach to the MDA")

    # -- the MDA's events (called in the acquisition thread) -------------------------------------------
    def _sequence_started(self, sequence: Any, *_: Any) -> None:
        from livedenoise.attach import MDADenoiser

        folder = self.output.text().strip()
        with self._lock:
            self._sequences += 1
            try:
                den = MDADenoiser(self.model.text().strip() or "fast", output=Path(folder).expanduser() if folder
                                  else None, name=f"denoised_{self._sequences:03d}")
            except LivedenoiseError as exc:  # the acquisition goes on without denoising
                log.error("livedenoise: %s", exc)
                self._denoiser = None
                return
            den.sequenceStarted(sequence)
            self._denoiser = den

    def _frame_ready(self, image: Any, event: Any, *_: Any) -> None:
        den = self._denoiser
        if den is not None:
            den.frameReady(image, event)

    def _sequence_finished(self, sequence: Any, *_: Any) -> None:
        self._finish(sequence)

    def _finish(self, sequence: Any) -> None:
        with self._lock:
            den, self._denoiser = self._denoiser, None
        if den is not None:
            den.sequenceFinished(sequence)  # writes every queued frame, closes the dataset
            self.last_report = den.result
            self._last = den

    # -- display (napari's thread) -----------------------------------------------------------------------
    def refresh(self) -> None:
        """Show the newest denoised frame in the layer, and the counts in the status line."""
        den = self._denoiser or getattr(self, "_last", None)
        if den is None:
            return
        latest = den.latest()
        if latest is not None and latest is not self._shown and latest.denoised is not None:
            self._shown = latest
            if LAYER_NAME in self.viewer.layers:
                self.viewer.layers[LAYER_NAME].data = latest.denoised
            else:
                self.viewer.add_image(latest.denoised, name=LAYER_NAME)
        report = self.last_report if self._denoiser is None else None
        if report is not None:
            where = f" in {report.denoised_path}" if report.denoised_path else ""
            self.status.setText(f"sequence {self._sequences} done: {report.frames_written} denoised frames "
                                f"recorded{where}; {report.display_denoised} shown"
                                + (f"; {len(report.errors)} error(s): {report.errors[0]}" if report.errors else ""))
        elif self._denoiser is not None:
            self.status.setText(f"sequence {self._sequences}: {den.written} frames recorded, {den.backlog} queued"
                                + (f"; showing {latest.model_name}" if latest is not None else ""))
