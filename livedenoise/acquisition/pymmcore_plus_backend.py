"""pymmcore-plus integration: the same session on ``core.mda`` with frames from ``mda.events.frameReady``.

For users of pymmcore-plus / napari-micromanager. Raw frames are saved by pymmcore-plus's own
``ImageSequenceWriter`` (one TIFF per frame, exactly as acquired); the session's frame hook only
hands the frame over. Light power is set per event through ``MDAEvent.properties``.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from livedenoise.acquisition.backend import AcquisitionBackend, FrameCallback, LiveRunInfo
from livedenoise.acquisition.plans import CalibrationPair, Illumination, LivePlan, PairPlan

log = logging.getLogger("livedenoise")


class RawTiffRecorder:
    """A pymmcore-plus output handler writing each frame as ``<prefix>_<axes>.tif`` exactly as acquired.

    Names are derived from the event index alone (e.g. ``raw_t000012.tif``), so a frame can be read
    back by its axes while acquisition goes on (the DenoisedWriter's catch-up path).
    """

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self.directory.mkdir(parents=True, exist_ok=True)
        self.frames = 0

    def path_for(self, index: dict) -> Path:
        return self.directory / (self.prefix + "".join(f"_{k}{int(v):06d}" for k, v in sorted(index.items())) + ".tif")

    def frameReady(self, frame: np.ndarray, event: Any, meta: Any = None) -> None:  # noqa: N802 - pymmcore-plus API
        import tifffile

        path = self.path_for(dict(event.index))
        tmp = path.with_name(path.name + ".partial")
        tifffile.imwrite(tmp, frame, metadata={"exposure_ms": event.exposure, "index": dict(event.index)})
        tmp.replace(path)  # atomic: a reader never sees half a frame
        self.frames += 1


class PymmcorePlusBackend(AcquisitionBackend):
    """Runs calibration and live acquisitions with ``core.mda.run`` on a ``CMMCorePlus``/``UniMMCore``.

    ``light_property``: ``(device, property)`` holding the light power in percent; found automatically on
    the simulated core, otherwise pass yours (or use ``reference="exposure"``/``"average"``).
    """

    name = "pymmcore-plus"

    def __init__(self, core: Any, *, light_property: tuple[str, str] | None = None) -> None:
        self.core = core
        if light_property is None and hasattr(core, "microscope"):
            from simulators.core import light_power_property

            light_property = light_power_property()
        self.light_property = light_property
        self._recorder: RawTiffRecorder | None = None

    def describe(self) -> str:
        kind = "simulated microscope" if hasattr(self.core, "microscope") else "MMCore"
        return f"pymmcore-plus MDA ({kind})"

    def current_illumination(self) -> Illumination | None:
        """The core's own exposure, light untouched, unless a light-power property was given (the simulator's is)."""
        if self.light_property is not None:
            return None
        return Illumination(float(self.core.getExposure()), None)

    def current_xy(self) -> tuple[float, float]:
        return float(self.core.getXPosition()), float(self.core.getYPosition())

    def ground_truth(self, image: np.ndarray) -> np.ndarray | None:
        scope = getattr(self.core, "microscope", None)
        frame = scope.lookup(image) if scope is not None else None
        return None if frame is None else frame.truth

    def _event(self, ill: Illumination, index: dict, xy: tuple[float, float] | None = None, min_start: float | None = None):
        import useq

        props = []
        if ill.power is not None:
            if self.light_property is None:
                raise ValueError("no light-power property configured; use reference='exposure' or 'average'")
            props = [(self.light_property[0], self.light_property[1], float(ill.power))]
        kw: dict[str, Any] = {"index": index, "exposure": float(ill.exposure_ms), "properties": props or None}
        if xy is not None:
            kw.update(x_pos=float(xy[0]), y_pos=float(xy[1]))
        if min_start:
            kw["min_start_time"] = float(min_start)
        return useq.MDAEvent(**kw)

    def _run(self, events, on_frame, output=None) -> None:
        def relay(img: np.ndarray, event: Any, *_: Any) -> None:
            try:
                on_frame(img, dict(event.index))
            except Exception:
                log.exception("frame hook failed; the raw frame is saved anyway")

        self.core.mda.events.frameReady.connect(relay)
        try:
            self.core.mda.run(events, output=output)
        finally:
            self.core.mda.events.frameReady.disconnect(relay)

    def acquire_pairs(self, plan: PairPlan, directory: Path) -> list[CalibrationPair]:
        events = []
        for k, xy in enumerate(plan.positions):
            events.append(self._event(plan.low, {"p": k, "r": 0, "n": 0}, xy))
            refs = plan.average if plan.reference == "average" else 1
            high = plan.low if plan.reference == "average" else plan.high
            events += [self._event(high, {"p": k, "r": 1, "n": i}, xy) for i in range(refs)]
        store: dict[tuple[int, int, int], np.ndarray] = {}
        self._run(events, lambda img, idx: store.__setitem__((idx["p"], idx["r"], idx["n"]), np.array(img, copy=True)),
                  output=RawTiffRecorder(directory / "calibration", "calibration"))
        pairs = []
        for k in range(len(plan.positions)):
            refs = [v for (p, r, _), v in sorted(store.items()) if p == k and r == 1]
            high = np.mean(np.stack(refs).astype(np.float32), axis=0) if len(refs) > 1 else refs[0]
            pairs.append(CalibrationPair(k, store[(k, 0, 0)], high, {"position_um": plan.positions[k]}))
        return pairs

    def run_live(self, plan: LivePlan, on_frame: FrameCallback, stop: threading.Event, directory: Path,
                 max_frames: int | None = None) -> LiveRunInfo:
        count = 0

        def events() -> Iterator[Any]:
            t = 0
            interval = plan.interval_ms / 1000.0
            while not stop.is_set() and (max_frames is None or t < max_frames):
                yield self._event(plan.illumination, {"t": t}, plan.position, t * interval if interval else None)
                t += 1

        def counted(img: np.ndarray, idx: dict) -> None:
            nonlocal count
            count += 1
            on_frame(img, idx)

        self._recorder = RawTiffRecorder(directory / "raw", "raw")
        started = time.perf_counter()
        self._run(events(), counted, output=self._recorder)
        return LiveRunInfo(count, time.perf_counter() - started, self._recorder.directory)

    def read_raw(self, axes: dict) -> np.ndarray:
        import tifffile

        if self._recorder is None:
            raise RuntimeError("no live dataset to read from")
        path = self._recorder.path_for(axes)
        for _ in range(200):  # the frame hook runs just before the recorder writes this frame
            if path.exists():
                return tifffile.imread(path)
            time.sleep(0.01)
        raise FileNotFoundError(f"{path}: raw frame was never written")
