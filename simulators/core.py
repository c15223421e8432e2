"""A real Micro-Manager core (pymmcore-plus ``UniMMCore``) whose devices are the simulated microscope.

Why this exists: livedenoise must run its *real* acquisition path -- pycromanager's
``Acquisition`` or pymmcore-plus' MDA -- without Micro-Manager or hardware, for the demo,
the tests and CI. ``start_simulated_core()`` returns a :class:`SimulatedCore` with a camera, XY
stage, focus drive and light source (``simulators.devices``) loaded and selected, and registers it
as pycromanager's Python backend, so ``pycromanager.Acquisition(...)`` drives it unchanged.

Three traps, each handled here (see docs/design.md, "Verified facts"):

* pycromanager's engine calls snake_case core methods (``snap_image``): :class:`SimulatedCore`
  adds a snake_case alias for every camelCase method, resolved on this class so the aliases reach
  the Python devices (aliases taken from ``pymmcore.CMMCore`` would bypass them).
* pymmcore >= 12.2 aborts the interpreter at exit if the core's C++ callback is still registered:
  :meth:`SimulatedCore.close` unregisters it and is also registered with :mod:`atexit`.
* pycromanager merges consecutive events that differ only in ``properties`` into one hardware
  sequence and drops the property changes. Light power therefore lives in the ``Light`` config
  group (:func:`light_power_event`): a preset change of a non-sequenceable property, or a different
  ``exposure``, or a distinct ``min_start_time`` keeps events apart, so settings really apply.

Example -- a calibration pair (low/high SNR) followed by normal frames::

    core = start_simulated_core()
    events = [
        {"axes": {"time": 0, "snr": 0}, "exposure": 20.0, **light_power_event(core, 5)},
        {"axes": {"time": 0, "snr": 1}, "exposure": 200.0, **light_power_event(core, 50)},
    ]
    with Acquisition(directory=out, name="calib") as acq:
        acq.acquire(events)
"""
from __future__ import annotations

import atexit
import logging
import math
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymmcore

from simulators.config import MicroscopeConfig, load_microscope_config

# UniMMCore comes through simulators.devices, which imports pymmcore-plus without letting it set the
# root logger to DEBUG; importing pymmcore-plus directly here would bring that side effect back.
from simulators.devices import (
    POWER_PROPERTY,
    MicroscopeLink,
    SimulatedCamera,
    SimulatedLightSource,
    SimulatedXYStage,
    SimulatedZStage,
    UniMMCore,
)
from simulators.microscope import SimulatedMicroscope

logger = logging.getLogger("simulators.core")

CAMERA_LABEL = "Camera"
XY_STAGE_LABEL = "XY"
FOCUS_LABEL = "Z"
LIGHT_LABEL = "LightSource"
#: Config group whose presets set the light power; also the core's channel group.
LIGHT_GROUP = "Light"
#: Presets defined up front; :func:`light_power_preset` adds any other level on demand.
DEFAULT_LIGHT_LEVELS: tuple[float, ...] = (0, 1, 2, 5, 10, 20, 50, 100)
PIXEL_SIZE_CONFIG = "Simulated"
#: ``mm_path`` given to UniMMCore: any non-empty path silences "Could not find Micro-Manager".
_MM_PATH = str(Path(__file__).resolve().parent)


def _camel_to_snake(name: str) -> str:
    """``setXYPosition`` -> ``set_xy_position`` (same rule as mmpycorex, which pycromanager expects)."""
    s1 = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z0-9])([A-Z])", r"\1_\2", s1).lower()


def _alias(camel: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, camel)(*args, **kwargs)

    method.__name__ = _camel_to_snake(camel)
    method.__doc__ = f"snake_case alias of :meth:`{camel}` (pycromanager's engine calls these)."
    return method


def snake_case_subclass(base: type, name: str | None = None) -> type:
    """A subclass of ``base`` with a snake_case alias for every public camelCase method of ``base``.

    Aliases look the camelCase name up at call time, so subclass overrides (and UniMMCore's
    Python-device routing) are honoured. Names that already exist are left alone. The aliases go
    into the class namespace at creation because pymmcore's SWIG classes refuse ``setattr``.
    """
    aliases: dict[str, Any] = {}
    for attr_name in dir(base):
        if attr_name.startswith("_") or attr_name == attr_name.lower():
            continue
        try:
            attr = getattr(base, attr_name)
        except AttributeError:  # pragma: no cover - descriptors that refuse class access
            continue
        if not callable(attr) or isinstance(attr, type):
            continue
        snake = _camel_to_snake(attr_name)
        if snake != attr_name and not hasattr(base, snake):
            aliases[snake] = _alias(attr_name)
    return type(name or f"{base.__name__}SnakeCase", (base,), aliases)


#: UniMMCore plus snake_case aliases (what pycromanager's Python backend calls).
SnakeCaseUniMMCore = snake_case_subclass(UniMMCore, "SnakeCaseUniMMCore")


class SimulatedCore(SnakeCaseUniMMCore):  # type: ignore[misc, valid-type]
    """A UniMMCore driving a :class:`SimulatedMicroscope`, usable by pycromanager and pymmcore-plus MDA.

    Use :func:`start_simulated_core` to build one; ``.microscope`` is the simulation behind the
    devices (ground truth via ``core.microscope.lookup(image)``). Auto-shutter is honoured for
    Python devices (UniMMCore leaves it to C++ devices): with it on, the sample is lit only while
    the camera exposes.
    """

    microscope: SimulatedMicroscope

    def __init__(self, microscope: SimulatedMicroscope, *, realtime: bool = False) -> None:
        super().__init__(mm_path=_MM_PATH)
        self.microscope = microscope
        self._link = MicroscopeLink(microscope)
        self._camera = SimulatedCamera(self._link, realtime=realtime)
        self._closed = False
        self._close_lock = threading.Lock()
        self._load_devices()

    # -- setup ---------------------------------------------------------------------------------
    def _load_devices(self) -> None:
        cfg = self.microscope.config
        self.loadPyDevice(CAMERA_LABEL, self._camera)
        self.loadPyDevice(XY_STAGE_LABEL, SimulatedXYStage(self._link))
        self.loadPyDevice(FOCUS_LABEL, SimulatedZStage(self._link))
        self.loadPyDevice(LIGHT_LABEL, SimulatedLightSource(self._link))
        self.initializeAllDevices()
        self.setCameraDevice(CAMERA_LABEL)
        self.setXYStageDevice(XY_STAGE_LABEL)
        self.setFocusDevice(FOCUS_LABEL)
        self.setShutterDevice(LIGHT_LABEL)
        self.setAutoShutter(True)
        self.definePixelSizeConfig(PIXEL_SIZE_CONFIG)
        self.setPixelSizeUm(PIXEL_SIZE_CONFIG, cfg.pixel_size_um)
        self.setPixelSizeConfig(PIXEL_SIZE_CONFIG)
        for level in DEFAULT_LIGHT_LEVELS:
            light_power_preset(self, level)
        self.setChannelGroup(LIGHT_GROUP)

    @property
    def realtime(self) -> bool:
        """Whether snaps take (at least) the exposure time, like a real camera."""
        return self._camera.realtime

    @realtime.setter
    def realtime(self, value: bool) -> None:
        self._camera.realtime = bool(value)

    # -- auto-shutter for the Python camera -----------------------------------------------------
    def _sync_auto_illumination(self) -> None:
        self._camera.auto_illuminate = bool(self.getAutoShutter() and self.getShutterDevice())

    def snapImage(self) -> None:  # noqa: N802 - Micro-Manager API name
        """Snap one image; with auto-shutter on, the light source is on during the exposure."""
        self._sync_auto_illumination()
        super().snapImage()

    def startSequenceAcquisition(self, *args: Any) -> None:  # noqa: N802
        """Start a camera sequence (auto-shutter honoured for every frame)."""
        self._sync_auto_illumination()
        super().startSequenceAcquisition(*args)

    def startContinuousSequenceAcquisition(self, *args: Any) -> None:  # noqa: N802
        """Start live streaming (auto-shutter honoured for every frame)."""
        self._sync_auto_illumination()
        super().startContinuousSequenceAcquisition(*args)

    def getImageBitDepth(self) -> int:  # noqa: N802
        """The camera's ADC bit depth (12 for a 12-bit sCMOS), not just the pixel container size."""
        if self._py_camera() is self._camera:
            return int(self.microscope.camera.config.bit_depth)
        return super().getImageBitDepth()

    # -- shutdown ------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop acquisitions, unregister from pycromanager and the C++ callback, unload devices.

        Idempotent. Unregistering the C++ callback before interpreter exit is what prevents the
        pymmcore >= 12.2 abort (exit code 134) after an otherwise successful run.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self.isSequenceRunning():
                self.stopSequenceAcquisition()
        except Exception:  # pragma: no cover - best effort at shutdown
            logger.debug("stopping the sequence at close failed", exc_info=True)
        unregister_from_pycromanager(self)
        try:
            pymmcore.CMMCore.registerCallback(self, None)
        except Exception:  # pragma: no cover
            logger.debug("unregistering the core callback failed", exc_info=True)
        try:
            self.unloadAllDevices()
        except Exception:  # pragma: no cover
            logger.debug("unloading devices failed", exc_info=True)
        _ACTIVE.discard(self)


_ACTIVE: weakref.WeakSet[SimulatedCore] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for core in list(_ACTIVE):
        core.close()


atexit.register(_close_all_at_exit)


# -- pycromanager registration (the simulator's own: it never imports livedenoise) ---------------------
from simulators.pycromanager_link import link as register_with_pycromanager  # noqa: E402
from simulators.pycromanager_link import unlink as unregister_from_pycromanager  # noqa: E402


# -- light power ---------------------------------------------------------------------------------
def light_power_property() -> tuple[str, str]:
    """``(device_label, property_name)`` of the light power (percent) on a simulated core."""
    return LIGHT_LABEL, POWER_PROPERTY


def _preset_name(percent: float) -> str:
    return f"{percent:g}%"


def light_power_preset(core: UniMMCore, percent: float) -> str:
    """Name of the ``Light`` preset that sets the power to ``percent`` (defined on first use)."""
    percent = float(percent)
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"light power must be within 0-100 %, got {percent}")
    name = _preset_name(percent)
    if not (core.isGroupDefined(LIGHT_GROUP) and core.isConfigDefined(LIGHT_GROUP, name)):
        core.defineConfig(LIGHT_GROUP, name, LIGHT_LABEL, POWER_PROPERTY, percent)
    return name


def light_power_event(core: UniMMCore, percent: float) -> dict[str, Any]:
    """Event fields that set the light power, e.g. ``{**light_power_event(core, 50), "exposure": 200}``.

    A config-group change of a non-sequenceable property is never merged into a hardware sequence
    by pycromanager, so (unlike a bare ``"properties"`` entry) the power really changes for that
    frame. Add a ``channel`` (or other) axis yourself if frames at different powers must not
    overwrite each other in the dataset.
    """
    return {"config_group": [LIGHT_GROUP, light_power_preset(core, percent)]}


# -- ground truth, for the code that drives the simulated core ------------------------------------------
def truth_of(core: SimulatedCore, *, fixed_pattern: bool = True) -> Callable[[Any], Any]:
    """``frame -> noise-free image`` (or None) for frames this core's camera produced, matched by content.

    ``fixed_pattern``: the camera's expected image, its per-pixel offset, gain and dark current included; False:
    the sample as a camera without that pattern would record it (:meth:`SCMOSCamera.without_pattern`; None for a
    frame of another ROI than the camera's current one).
    """
    def lookup(image: Any) -> Any:
        frame = core.microscope.lookup(image)
        if frame is None or fixed_pattern:
            return None if frame is None else frame.truth
        camera = core.microscope.camera
        if frame.truth.shape != camera.maps.offset.shape:
            return None
        return camera.without_pattern(frame.truth, float(frame.metadata["exposure_ms"]) / 1000.0)

    return lookup


# -- stage positions ------------------------------------------------------------------------------
def spread_positions(config: MicroscopeConfig, count: int) -> list[tuple[float, float]]:
    """``count`` stage positions (x_um, y_um) on a grid spread evenly over the virtual slide."""
    if count < 1:
        raise ValueError(f"need at least one position, got {count}")
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    px = config.pixel_size_um
    width_um = config.sample.slide_width * px
    height_um = config.sample.slide_height * px
    return [
        ((i % cols + 0.5) / cols * width_um, (i // cols + 0.5) / rows * height_um)
        for i in range(count)
    ]


# -- start / stop --------------------------------------------------------------------------------
def _as_config(config: MicroscopeConfig | str | Path | None) -> MicroscopeConfig:
    if isinstance(config, MicroscopeConfig):
        return config
    return load_microscope_config(config)


def start_simulated_core(
    config: MicroscopeConfig | str | Path | None = None,
    *,
    register_pycromanager: bool = True,
    realtime: bool = False,
) -> SimulatedCore:
    """Build a :class:`SimulatedCore` for ``config`` (a model, a TOML path, or the default preset).

    With ``register_pycromanager`` (default) it becomes pycromanager's Python-backend core, so
    ``pycromanager.Acquisition`` acquires from it. ``realtime=True`` paces snaps at the exposure
    time. Raises ``simulators.config.SimulatorConfigError`` for unusable configuration.
    """
    microscope = SimulatedMicroscope(_as_config(config))
    core = SimulatedCore(microscope, realtime=realtime)
    _ACTIVE.add(core)
    if register_pycromanager:
        register_with_pycromanager(core)
    logger.debug("simulated core started: %s camera, %dx%d", microscope.camera.config.name, *microscope.shape[::-1])
    return core


def stop_simulated_core(core: SimulatedCore | None = None) -> None:
    """Close ``core``, or every simulated core still open when ``None``. Safe to call repeatedly."""
    for c in [core] if core is not None else list(_ACTIVE):
        c.close()


# -- acquisition with pycromanager -------------------------------------------------------------
@dataclass
class AcquisitionResult:
    """What :func:`acquire_with_pycromanager` did: frames received, wall time, where data went."""

    frames: int
    seconds: float
    directory: Path | None
    name: str
    dataset_path: Path | None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def build_events(
    core: UniMMCore,
    *,
    frames: int = 1,
    positions: Sequence[tuple[float, float]] | None = None,
    exposures_ms: Sequence[float] | None = None,
    light_power: float | None = None,
    interval_s: float | None = None,
) -> list[dict[str, Any]]:
    """Acquisition events, time-major: for t, for position, for exposure.

    Axes: ``time`` always, ``position`` when ``positions`` is given, ``exposure`` (index into
    ``exposures_ms``) when more than one exposure is given. ``interval_s`` sets ``min_start_time``
    per time point.
    """
    events: list[dict[str, Any]] = []
    pos_list: list[tuple[float, float] | None] = list(positions) if positions else [None]
    exp_list: list[float | None] = list(exposures_ms) if exposures_ms else [None]
    power_fields = light_power_event(core, light_power) if light_power is not None else {}
    for t in range(frames):
        for p, pos in enumerate(pos_list):
            for e, exposure in enumerate(exp_list):
                axes: dict[str, Any] = {"time": t}
                if positions:
                    axes["position"] = p
                if len(exp_list) > 1:
                    axes["exposure"] = e
                event: dict[str, Any] = {"axes": axes, **power_fields}
                if power_fields:
                    event["axes"].setdefault("channel", power_fields["config_group"][1])
                if pos is not None:
                    event["x"], event["y"] = pos
                if exposure is not None:
                    event["exposure"] = float(exposure)
                if interval_s:
                    event["min_start_time"] = t * float(interval_s)
                events.append(event)
    return events


def acquire_with_pycromanager(
    core: SimulatedCore,
    events: Iterable[dict[str, Any]] | dict[str, Any],
    *,
    directory: str | Path | None = None,
    name: str = "acquisition",
    image_process_fn: Callable[..., Any] | None = None,
    image_saved_fn: Callable[..., Any] | None = None,
    stop: threading.Event | None = None,
    **acquisition_kwargs: Any,
) -> AcquisitionResult:
    """Run one pycromanager ``Acquisition`` of ``events`` on ``core`` and wait for it to finish.

    ``directory`` saves NDTiff (camera dtype); ``None`` keeps data in RAM. ``image_process_fn``
    and ``image_saved_fn`` are passed to pycromanager unchanged (an ``image_process_fn`` must
    return the image, or ``None`` to drop it). Frames are counted at the saving stage. Setting
    ``stop`` aborts the acquisition cleanly: frames acquired so far are saved and the dataset closed.
    """
    import time

    from pycromanager import Acquisition

    register_with_pycromanager(core)
    saved = 0
    lock = threading.Lock()

    def _count(axes: Any, dataset: Any) -> None:
        nonlocal saved
        with lock:
            saved += 1
        if image_saved_fn is not None:
            image_saved_fn(axes, dataset)

    started = time.perf_counter()
    acq = Acquisition(
        directory=str(directory) if directory is not None else None,
        name=name,
        image_process_fn=image_process_fn,
        image_saved_fn=_count,
        **acquisition_kwargs,
    )
    finished = threading.Event()

    def watch() -> None:
        while not finished.is_set():
            if stop is not None and stop.wait(0.1):
                acq.abort()
                return

    if stop is not None:
        threading.Thread(target=watch, name="acquisition-stop", daemon=True).start()
    try:
        with acq:
            acq.acquire(events if isinstance(events, dict) else list(events))
    finally:
        finished.set()
    seconds = time.perf_counter() - started
    dataset = acq.get_dataset()
    path = Path(dataset.path) if directory is not None and getattr(dataset, "path", None) else None
    try:
        dataset.close()
    except Exception:  # pragma: no cover
        logger.debug("closing the dataset failed", exc_info=True)
    return AcquisitionResult(saved, seconds, Path(directory) if directory else None, name, path)
