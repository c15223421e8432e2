"""pycromanager integration: calibration and live events, and a frame hook that never waits for a model.

Works with pycromanager's Python backend (the simulated core, or pymmcore with real device adapters)
and its Java backend (a running Micro-Manager with its ZMQ server on). The ``image_process_fn`` hands
the frame to the session and returns it *unchanged*, so NDTiff saves exactly what the camera produced;
it does a dictionary lookup and a queue put, never model work.

Event pitfall (docs/design.md, "Verified facts"): consecutive events that differ only in ``properties`` are merged into
one hardware sequence and the property change is dropped. Exposure changes are never merged, and the
simulated core sets light power through a config-group preset, which is not merged either.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from livedenoise.acquisition.axes import axes_key
from livedenoise.acquisition.backend import NO_XY_STAGE, AcquisitionBackend, FrameCallback, LiveRunInfo
from livedenoise.acquisition.plans import CalibrationPair, Illumination, LivePlan, PairPlan, assemble_pairs
from livedenoise.acquisition.pycromanager_python import register_with_pycromanager
from livedenoise.errors import MicroManagerUnavailable

log = logging.getLogger("livedenoise")

#: Micro-Manager core calls livedenoise makes, as pycromanager's Java bridge spells them (its camelCase-to-snake
#: conversion keeps a run of capitals together: getXYPosition is get_xy_position).
JAVA_CORE_CALLS = {
    "getExposure": "get_exposure", "getXPosition": "get_x_position", "getYPosition": "get_y_position",
    "getPixelSizeUm": "get_pixel_size_um", "getImageWidth": "get_image_width", "getImageHeight": "get_image_height",
    "getBufferTotalCapacity": "get_buffer_total_capacity",
}

#: Frames of live acquisition events handed to pycromanager per ``acquire`` call. pycromanager runs the events of one
#: call that differ in nothing but time as one camera sequence (with no interval set), and stops the camera at the end
#: of each call: with 16 the free-running simulated camera at 512² lost 7.7 % of its frame rate to the livedenoise
#: hook, with 64 2.7 % (README, "Live acquisition overhead"). A stop of the session still takes effect at once: it
#: aborts the acquisition, which cancels a running sequence between two frames.
LIVE_CHUNK_FRAMES = 64
#: The fewest frames per call, whatever the camera's buffer (the value before 64 was chosen).
MIN_LIVE_CHUNK_FRAMES = 16

MM_HINT = ("Start Micro-Manager and enable its server (Tools > Options > 'Run server on port 4827'), "
           "or try livedenoise without hardware with `livedenoise live --simulate`.")


def connect_micro_manager(timeout_s: float = 3.0) -> Any:
    """Check that a Micro-Manager with its ZMQ server is reachable; one clear sentence if not."""
    import contextlib
    import io

    try:
        from pycromanager import Core
    except Exception as exc:  # pragma: no cover - broken install
        raise MicroManagerUnavailable(f"pycromanager cannot be imported ({exc}). {MM_HINT}") from None
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            core = Core(timeout=int(timeout_s * 1000))
            core.get_version_info()
    except Exception:
        raise MicroManagerUnavailable(f"No running Micro-Manager was found on port 4827. {MM_HINT}") from None
    return core


class PycromanagerBackend(AcquisitionBackend):
    """Runs calibration and live acquisitions through ``pycromanager.Acquisition``.

    ``core``: the MMCore to drive (any pymmcore core: real device adapters, a pymmcore-plus ``UniMMCore``,
    the simulated microscope's); ``None`` uses the Java backend of a running Micro-Manager.
    ``light_event(power) -> dict`` returns event fields that set the light power: pass one built on your
    config group (or leave ``None`` and use ``reference="exposure"`` or ``"average"``). ``ground_truth(frame)``
    returns the noise-free image behind a frame where one exists (a simulator), for the session's quality
    report; ``label`` names the source in logs. The simulated microscope passes all three
    (``simulators.core.pycromanager_backend``); nothing here looks inside the core.
    """

    name = "pycromanager"

    def __init__(self, core: Any = None, *, light_event: Callable[[float], dict] | None = None,
                 ground_truth: Callable[[np.ndarray], np.ndarray | None] | None = None,
                 label: str | None = None) -> None:
        self.core = core
        self._java_core: Any = None  # Micro-Manager's own core through the Java bridge, made on first use
        self._light_event = light_event
        self._ground_truth = ground_truth
        self._label = label
        if core is None:
            connect_micro_manager()
        self._live_dataset: Any = None
        self._live_lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------------
    def _illumination_fields(self, ill: Illumination) -> dict:
        fields: dict[str, Any] = {"exposure": float(ill.exposure_ms)}
        if ill.power is not None:
            if self._light_event is None:
                raise MicroManagerUnavailable(
                    "this microscope has no light-power control given to livedenoise (PycromanagerBackend(core, "
                    "light_event=...)), so the light cannot be set: unset [live] light_power and use reference "
                    "'exposure' or 'average'")
            fields.update(self._light_event(ill.power))
        return fields

    def _acquisition(self, directory: Path, name: str, process: Callable,
                     finished: threading.Event | None = None) -> Any:
        """A pycromanager ``Acquisition`` saving to ``directory``, every frame through ``process``; ``finished`` is
        set when pycromanager says its events are finished (the end, or an abort of its own)."""
        from pycromanager import Acquisition

        if self.core is not None:
            register_with_pycromanager(self.core)
        directory.mkdir(parents=True, exist_ok=True)

        def notified(notification: Any) -> None:
            if finished is not None and notification.is_acquisition_finished_notification():
                finished.set()

        return Acquisition(directory=str(directory), name=name, image_process_fn=process, show_display=False,
                           notification_callback_fn=notified)

    @property
    def controls_light(self) -> bool:
        return self._light_event is not None

    def _core_value(self, method: str) -> float:
        """A number from the core: the given core's camelCase ``method``, or Micro-Manager's own core through
        pycromanager's Java bridge, which spells it in snake_case (:data:`JAVA_CORE_CALLS`)."""
        if self.core is not None:
            return float(getattr(self.core, method)())
        if self._java_core is None:
            from pycromanager import Core

            self._java_core = Core()
        return float(getattr(self._java_core, JAVA_CORE_CALLS[method])())

    def current_illumination(self) -> Illumination | None:
        """Micro-Manager's own exposure, the light untouched (a session sets ``[live]`` light_power to change it)."""
        return Illumination(self._core_value("getExposure"), None)

    def current_xy(self) -> tuple[float, float]:
        # Micro-Manager's own stage too: calibration fields are spread around where the user is looking, never
        # around the stage's origin.
        try:
            return self._core_value("getXPosition"), self._core_value("getYPosition")
        except Exception as exc:  # noqa: BLE001 - Micro-Manager's error for a missing stage, through the bridge
            raise MicroManagerUnavailable(NO_XY_STAGE + f" (Micro-Manager: {str(exc).strip()[:200]})") from None


    def ground_truth(self, image: np.ndarray) -> np.ndarray | None:
        return self._ground_truth(image) if self._ground_truth is not None else None

    def describe(self) -> str:
        if self.core is None:
            return "pycromanager (Java backend, running Micro-Manager)"
        return f"pycromanager ({self._label or 'Python backend'})"

    # -- calibration pairs -------------------------------------------------------------------------
    def acquire_pairs(self, plan: PairPlan, directory: Path) -> list[CalibrationPair]:
        events = []
        for k, (x, y) in enumerate(plan.positions):
            pos = {"x": float(x), "y": float(y)}
            events.append({**pos, "axes": {"position": k, "reference": 0, "repeat": 0},
                           **self._illumination_fields(plan.low)})
            if plan.reference == "average":
                for i in range(plan.average):
                    events.append({**pos, "axes": {"position": k, "reference": 1, "repeat": i},
                                   **self._illumination_fields(plan.low)})
            else:
                events.append({**pos, "axes": {"position": k, "reference": 1, "repeat": 0},
                               **self._illumination_fields(plan.high)})
        store: dict[tuple, np.ndarray] = {}

        def keep(image: np.ndarray, metadata: dict) -> Any:
            store[axes_key(metadata.get("Axes", {}))] = np.array(image, copy=True)
            return image, metadata

        with self._acquisition(directory, "calibration", keep) as acq:
            acq.acquire(events)
        frames = {(d.get("position"), d.get("reference"), d.get("repeat")): v
                  for key, v in store.items() for d in [dict(key)]}
        # the axes of the events above: ints (a frame missing from the acquisition is refused by assemble_pairs)
        return assemble_pairs(plan, cast("dict[tuple[int, int, int], np.ndarray]", frames))

    # -- live --------------------------------------------------------------------------------------
    def run_live(self, plan: LivePlan, on_frame: FrameCallback, stop: threading.Event, directory: Path,
                 max_frames: int | None = None) -> LiveRunInfo:
        count = 0
        count_lock = threading.Lock()

        def tap(image: np.ndarray, metadata: dict) -> Any:
            nonlocal count
            with count_lock:
                count += 1
            try:
                on_frame(image, dict(metadata.get("Axes", {})))
            except Exception:  # the raw frame must be saved whatever happens downstream
                log.exception("live frame hook failed; the raw frame is saved anyway")
            return image, metadata

        base = self._illumination_fields(plan.illumination)
        if plan.position is not None:
            base.update(x=float(plan.position[0]), y=float(plan.position[1]))
        interval_s = plan.interval_ms / 1000.0
        chunk = self._live_chunk()
        started = time.perf_counter()
        ended = threading.Event()  # pycromanager finished the events: an abort of its own (e.g. a camera error)
        acq = self._acquisition(directory, "raw", tap, ended)
        with self._live_lock:
            self._live_dataset = acq.get_dataset()
        with acq:
            queued = 0
            while not stop.is_set() and not ended.is_set() and (max_frames is None or queued < max_frames):
                n = chunk if max_frames is None else min(chunk, max_frames - queued)
                batch = []
                for t in range(queued, queued + n):
                    ev = {**base, "axes": {"time": t}}
                    if interval_s > 0:
                        ev["min_start_time"] = t * interval_s
                    batch.append(ev)
                acq.acquire(batch)
                queued += n
                # Keep at most ~1.5 chunks queued so a stop takes effect quickly.
                while not stop.is_set() and not ended.is_set() and count < queued - chunk // 2:
                    time.sleep(0.002)
            if stop.is_set():
                acq.abort()
            elif ended.is_set() and (max_frames is None or count < max_frames):
                log.error("pycromanager ended the live acquisition by itself after %d frames (see its log for the "
                          "cause, e.g. a camera error or a full sequence buffer); every frame it acquired is saved",
                          count)
        seconds = time.perf_counter() - started
        path = getattr(self._live_dataset, "path", None)
        return LiveRunInfo(count, seconds, Path(path) if path else directory)

    def _live_chunk(self) -> int:
        """Frames per ``acquire`` call: :data:`LIVE_CHUNK_FRAMES`, or fewer when the camera's circular buffer holds
        less than twice that many frames. A sequence that runs ahead of the saving fills that buffer, and a full
        buffer aborts the acquisition (large frames: a 250 MB buffer holds 31 frames of 2048² at 16 bits)."""
        try:
            capacity = int(self._core_value("getBufferTotalCapacity"))
        except Exception as exc:  # a core that cannot say: the size used before 64 was chosen
            log.debug("camera buffer capacity unknown (%s); %d frames per live call", exc, MIN_LIVE_CHUNK_FRAMES)
            return MIN_LIVE_CHUNK_FRAMES
        return max(MIN_LIVE_CHUNK_FRAMES, min(LIVE_CHUNK_FRAMES, capacity // 2))

    def read_raw(self, axes: dict) -> np.ndarray:
        with self._live_lock:
            if self._live_dataset is None:
                raise RuntimeError("no live dataset to read from")
            return np.asarray(self._live_dataset.read_image(**axes))
