"""pymmcore-plus integration: the same session on ``core.mda`` with frames from ``mda.events.frameReady``.

For users of pymmcore-plus / napari-micromanager. Live raw frames are saved by pymmcore-plus's own
OME-TIFF writer (``raw.ome.tif``, exactly as acquired, readable by ``livedenoise denoise`` and any OME
tool); the session's frame hook only hands the frame over, and the recorder reads frames back through
``core.mda.get_view()`` while acquiring and from the file afterwards. Calibration frames are few and are
kept as one TIFF each. Light power is set per event through ``MDAEvent.properties``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from livedenoise.acquisition.backend import NO_XY_STAGE, AcquisitionBackend, FrameCallback, LiveRunInfo
from livedenoise.acquisition.mda_listeners import listening
from livedenoise.acquisition.plans import CalibrationPair, Illumination, LivePlan, PairPlan, assemble_pairs
from livedenoise.errors import LivedenoiseError, MicroManagerUnavailable

log = logging.getLogger("livedenoise")


def load_mm_configuration(config: Path, mm_path: Path | None = None) -> Any:
    """A ``CMMCorePlus`` with a Micro-Manager hardware configuration (``.cfg``) loaded; one clear sentence if not.

    ``mm_path``: the folder holding Micro-Manager's device adapters (a Micro-Manager install, or what
    ``mmcore install`` downloaded); ``None`` lets pymmcore-plus look for one.
    """
    from livedenoise.errors import ConfigError, MicroManagerUnavailable

    config = Path(config)
    if not config.is_file():
        raise ConfigError(f"{config}: no such Micro-Manager configuration file (expected a .cfg saved by "
                          "Micro-Manager's Hardware Configuration Wizard).")
    import pymmcore_plus

    adapters = str(mm_path) if mm_path is not None else None
    if adapters is None:
        logger = logging.getLogger("pymmcore-plus")
        level = logger.level
        logger.setLevel(logging.CRITICAL)  # its own multi-line "please run mmcore install" would repeat ours
        try:
            adapters = pymmcore_plus.find_micromanager()
        finally:
            logger.setLevel(level)
    if not adapters or not Path(adapters).is_dir():
        raise MicroManagerUnavailable(
            f"{config}: no Micro-Manager device adapters were found{f' in {mm_path}' if mm_path else ''}; install them "
            "with `mmcore install` (pymmcore-plus) or pass --mm-path with your Micro-Manager folder.")
    core = pymmcore_plus.CMMCorePlus(mm_path=adapters)
    try:
        core.loadSystemConfiguration(str(config))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise MicroManagerUnavailable(f"{config}: Micro-Manager could not load this configuration with the device "
                                      f"adapters in {adapters} ({first}).") from None
    if not core.getCameraDevice():
        raise MicroManagerUnavailable(f"{config}: this configuration sets no camera (Core-Camera); choose one in "
                                      "Micro-Manager's Hardware Configuration Wizard.")
    return core


#: How long a read-back waits for pymmcore-plus's writer to put a queued live frame on disk.
RAW_READ_TIMEOUT_S = 30.0


class RawTiffRecorder:
    """A pymmcore-plus output handler writing each calibration frame as ``<prefix>_<axes>.tif`` exactly as acquired.

    Names are derived from the event index alone (e.g. ``calibration_n000000_p000001_r000000.tif``): a
    calibration mixes positions, references and repeats, which an OME writer would need declared up front.
    """

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self.directory.mkdir(parents=True, exist_ok=True)
        self.frames = 0
        self.failures: list[str] = []  # frames that could not be written (disk full...): reported after the run

    def path_for(self, index: dict) -> Path:
        return self.directory / (self.prefix + "".join(f"_{k}{int(v):06d}" for k, v in sorted(index.items())) + ".tif")

    def frameReady(self, frame: np.ndarray, event: Any, meta: Any = None) -> None:  # noqa: N802 - pymmcore-plus API
        import tifffile

        path = self.path_for(dict(event.index))
        tmp = path.with_name(path.name + ".partial")
        try:  # runs in the acquisition thread: never raise into the MDA, say it after the run
            tifffile.imwrite(tmp, frame, metadata={"exposure_ms": event.exposure, "index": dict(event.index)})
            tmp.replace(path)  # atomic: a reader never sees half a frame
        except Exception as exc:
            self.failures.append(f"{path.name}: {exc.__class__.__name__}: {exc}")
            return
        self.frames += 1


class PymmcorePlusBackend(AcquisitionBackend):
    """Runs calibration and live acquisitions with ``core.mda.run`` on a ``CMMCorePlus``/``UniMMCore``.

    ``light_property``: ``(device, property)`` holding the light power in percent (or leave ``None`` and use
    ``reference="exposure"``/``"average"``). ``ground_truth(frame)``: the noise-free image behind a frame
    where one exists (a simulator), for the quality report; ``label`` names the source. The simulated
    microscope passes all three (``livedenoise.commands.simulated.pymmcore_plus_backend``); nothing here looks
    inside the core.
    """

    name = "pymmcore-plus"

    def __init__(self, core: Any, *, light_property: tuple[str, str] | None = None,
                 ground_truth: Callable[[np.ndarray], np.ndarray | None] | None = None,
                 label: str | None = None) -> None:
        self.core = core
        self._ground_truth = ground_truth
        self._label = label
        self.light_property = light_property
        self._raw_path: Path | None = None
        self._view: Any = None
        self._acquiring = False
        self._tiff: Any = None  # the finished raw.ome.tif, opened once for read-backs after acquisition

    def describe(self) -> str:
        return f"pymmcore-plus MDA ({self._label or 'MMCore'})"

    @property
    def controls_light(self) -> bool:
        return self.light_property is not None

    def current_illumination(self) -> Illumination | None:
        """The core's own exposure, the light untouched (a session sets ``[live]`` light_power to change it)."""
        return Illumination(float(self.core.getExposure()), None)

    def current_xy(self) -> tuple[float, float]:
        if not self.core.getXYStageDevice():
            raise MicroManagerUnavailable(NO_XY_STAGE)
        return float(self.core.getXPosition()), float(self.core.getYPosition())

    def _core_value(self, method: str) -> float:
        return float(getattr(self.core, method)())

    def ground_truth(self, image: np.ndarray) -> np.ndarray | None:
        return self._ground_truth(image) if self._ground_truth is not None else None

    def _event(self, ill: Illumination, index: dict, xy: tuple[float, float] | None = None,
               min_start: float | None = None):
        import useq

        props = []
        if ill.power is not None:
            if self.light_property is None:
                raise MicroManagerUnavailable(
                    "this microscope has no light-power property given to livedenoise (PymmcorePlusBackend(core, "
                    "light_property=(device, property))), so the light cannot be set: unset [live] light_power and use "
                    "reference 'exposure' or 'average'")
            props = [(self.light_property[0], self.light_property[1], float(ill.power))]
        kw: dict[str, Any] = {"index": index, "exposure": float(ill.exposure_ms), "properties": props or None}
        if xy is not None:
            kw.update(x_pos=float(xy[0]), y_pos=float(xy[1]))
        if min_start:
            kw["min_start_time"] = float(min_start)
        return useq.MDAEvent(**kw)

    def _run(self, events, on_frame, output: str | None = None, handler: Any = None) -> None:
        """Run ``events``; ``on_frame`` and ``handler`` hear every frame in the acquisition thread, as it is acquired
        (:func:`~livedenoise.acquisition.mda_listeners.listening`); ``output``: a path pymmcore-plus writes to."""
        def relay(img: np.ndarray, event: Any, *_: Any) -> None:
            try:
                on_frame(img, dict(event.index))
            except Exception:
                log.exception("frame hook failed; the raw frame is saved anyway")

        handlers = [SimpleNamespace(frameReady=relay)] + ([handler] if handler is not None else [])
        with listening(self.core.mda.events, *handlers):
            self.core.mda.run(events, output=output)

    def acquire_pairs(self, plan: PairPlan, directory: Path) -> list[CalibrationPair]:
        events = []
        for k, xy in enumerate(plan.positions):
            events.append(self._event(plan.low, {"p": k, "r": 0, "n": 0}, xy))
            refs = plan.average if plan.reference == "average" else 1
            high = plan.low if plan.reference == "average" else plan.high
            events += [self._event(high, {"p": k, "r": 1, "n": i}, xy) for i in range(refs)]
        store: dict[tuple[int, int, int], np.ndarray] = {}
        recorder = RawTiffRecorder(directory / "calibration", "calibration")
        self._run(events, lambda img, idx: store.__setitem__((idx["p"], idx["r"], idx["n"]), np.array(img, copy=True)),
                  handler=recorder)
        if recorder.failures:
            raise LivedenoiseError(f"{recorder.directory}: {len(recorder.failures)} of {len(events)} calibration "
                                   f"frames could not be saved (first: {recorder.failures[0]}); free space or choose "
                                   "another output folder, then calibrate again.")
        return assemble_pairs(plan, store)

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
            if count == 0:
                self._view = self.core.mda.get_view()  # the sink has appended this frame before frameReady
            count += 1
            on_frame(img, idx)

        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "raw.ome.tif"
        k = 1
        while path.exists():  # a second live run in the same folder never overwrites the first
            k += 1
            path = directory / f"raw_{k}.ome.tif"
        if self._tiff is not None:
            self._tiff.close()
        self._raw_path, self._view, self._acquiring, self._tiff = path, None, True, None
        started = time.perf_counter()
        try:
            self._run(events(), counted, output=str(path))
        finally:
            self._acquiring = False
        return LiveRunInfo(count, time.perf_counter() - started, path)

    def read_raw(self, axes: dict) -> np.ndarray:
        """A live frame by its time index: from the writer's view while acquiring, from the OME-TIFF after."""
        import tifffile

        if self._raw_path is None:
            raise RuntimeError("no live dataset to read from")
        t = int(axes["t"])
        deadline = time.perf_counter() + RAW_READ_TIMEOUT_S
        while self._acquiring and self._view is not None:
            # ome-writers writes queued frames in its own thread; until then its view is shorter or shows zeros
            try:
                frame = np.asarray(self._view[t])
            except IndexError:
                frame = None
            if frame is not None and frame.any():
                return frame
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{self._raw_path}: frame t={t} was not written within {RAW_READ_TIMEOUT_S:g} s")
            time.sleep(0.01)
        if self._tiff is None:
            self._tiff = tifffile.TiffFile(self._raw_path)
        return self._tiff.pages[t].asarray()
