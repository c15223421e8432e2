"""Listen to an MDA that livedenoise runs itself, in the acquisition's own thread, with Qt signals or psygnal.

Why not ``core.mda.run(..., output=[handler])``: pymmcore-plus then relays events to the handler through
a helper thread (``MDARelayThread``) whose slots are connected to the core's signals. When the core
has Qt signals (a Qt application was running when it was made: napari, napari-micromanager, the live
viewer) and the MDA runs outside the GUI thread, those signals are *queued* to the GUI thread's event
loop; events still queued when ``run`` returns reach the relay after it is gone. Seen beside
napari-micromanager (a calibration of one field finishes fast): ``AttributeError: 'UnitDefinition'
object has no attribute '_deque'`` and a segmentation fault, i.e. slots called on freed memory. Even
without the crash, queued frames arrive after ``run`` returns, so the frames of a calibration would
depend on a GUI loop running.

:func:`listening` connects the handlers' methods *directly* (Qt ``DirectConnection``; psygnal always
calls in the emitting thread): they run in the acquisition thread as each frame is acquired, every
frame has arrived when ``run`` returns, and nothing is left queued when they are disconnected. The
handlers therefore must be quick and thread-safe (they copy a frame or hand it over).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("livedenoise")

#: ``metadata`` item of a calibration's own MDA (``livedenoise.attach.calibration_sequence``), so a listener can tell
#: its events from the user's whenever they arrive, even queued after the calibration has ended.
CALIBRATION_TAG = ("livedenoise", "calibration")


def is_calibration(sequence: Any) -> bool:
    """Whether ``sequence`` (an ``MDASequence``, or None) is a calibration's own MDA."""
    metadata = getattr(sequence, "metadata", None) or {}
    return metadata.get(CALIBRATION_TAG[0]) == CALIBRATION_TAG[1]


#: The MDA signals of pymmcore-plus a handler may implement (same names as its output handlers').
MDA_SIGNALS = ("sequenceStarted", "frameReady", "sequencePauseToggled", "sequenceCanceled", "sequenceFinished")


def _connect_direct(signal: Any, slot: Any) -> None:
    from psygnal import SignalInstance

    if isinstance(signal, SignalInstance):  # psygnal calls its slots in the emitting thread
        signal.connect(slot)
    else:  # pymmcore-plus's other backend: Qt signals (through qtpy), connected so they are never queued
        from qtpy.QtCore import Qt

        signal.connect(slot, Qt.ConnectionType.DirectConnection)


@contextlib.contextmanager
def listening(events: Any, *handlers: Any) -> Iterator[None]:
    """Within the block, each handler's methods named as MDA signals are called in the acquisition's thread."""
    connected: list[tuple[Any, Any]] = []
    try:
        for handler in handlers:
            for name in MDA_SIGNALS:
                slot = getattr(handler, name, None)
                signal = getattr(events, name, None)
                if callable(slot) and signal is not None:
                    _connect_direct(signal, slot)
                    connected.append((signal, slot))
        yield
    finally:
        for signal, slot in reversed(connected):
            try:
                signal.disconnect(slot)
            except Exception as exc:  # left connected, it would hear every later MDA: say so
                log.warning("could not disconnect %r from the MDA signals (%s)", slot, exc)
