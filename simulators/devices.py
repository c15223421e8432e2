"""pymmcore-plus Python devices backed by one :class:`~simulators.microscope.SimulatedMicroscope`.

Micro-Manager software (pymmcore-plus' MDA, pycromanager's acquisition engine) only talks to
devices through the core, so the simulated microscope is exposed as four ordinary devices:

* :class:`SimulatedCamera`  -- a ``SimpleCameraDevice``: exposure, pixel type, bit depth, snap;
* :class:`SimulatedXYStage` -- moves the field of view over the virtual slide;
* :class:`SimulatedZStage`  -- the focus drive (defocus blurs the image);
* :class:`SimulatedLightSource` -- a shutter device with a ``Power`` property (0-100 %).

All four share one :class:`MicroscopeLink` (the microscope plus a lock), so the camera can open
the light source for the duration of an exposure exactly like Micro-Manager's auto-shutter does.
UniMMCore does not operate Python shutters around Python-camera snaps itself; the simulated
core (:mod:`simulators.core`) tells the camera whether auto-shutter is active instead.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# Importing pymmcore-plus sets the *root* logger to DEBUG (its configure_logging), which floods any
# application's console with every library's debug messages; keep the level the application chose.
_root_level = logging.getLogger().level
from pymmcore_plus.core._constants import Keyword  # noqa: E402
from pymmcore_plus.experimental.unicore import (  # noqa: E402
    ShutterDevice,
    SimpleCameraDevice,
    StageDevice,
    XYStageDevice,
    pymm_property,
)
from pymmcore_plus.experimental.unicore import UniMMCore as UniMMCore  # noqa: E402 - re-exported for simulators.core

logging.getLogger().setLevel(_root_level)

from simulators.microscope import SimulatedMicroscope  # noqa: E402

#: Name of the light-power property on :class:`SimulatedLightSource`.
POWER_PROPERTY = "Power"
#: Exposure limits accepted by the simulated camera (milliseconds), as in ``MicroscopeConfig``.
EXPOSURE_LIMITS_MS = (0.001, 60000.0)


@dataclass
class MicroscopeLink:
    """The microscope shared by all simulated devices and the lock that serialises their access.

    One lock (rather than the microscope's internal one) is needed because the camera changes the
    shutter state *around* a snap, and that pair of operations must not interleave with a shutter
    command coming from another thread.
    """

    microscope: SimulatedMicroscope
    lock: threading.RLock = field(default_factory=threading.RLock)


class SimulatedCamera(SimpleCameraDevice):
    """sCMOS camera of the simulated microscope: every snap is a fresh noisy frame of the current field.

    ``auto_illuminate`` (set by the simulated core when auto-shutter is on) lights the sample during
    the exposure even if the light source is closed. ``realtime`` makes each snap last at least the
    exposure time, so frame rates look like a real camera's instead of as-fast-as-numpy.
    """

    def __init__(self, link: MicroscopeLink, *, realtime: bool = False) -> None:
        super().__init__()
        self._link = link
        self.realtime = realtime
        self.auto_illuminate = False
        self.set_property_limits(Keyword.Exposure, EXPOSURE_LIMITS_MS)

    @property
    def microscope(self) -> SimulatedMicroscope:
        return self._link.microscope

    # -- mandatory camera API --------------------------------------------------------------
    def sensor_shape(self) -> tuple[int, int]:
        return self.microscope.shape

    def dtype(self) -> np.dtype:
        return self.microscope.camera.dtype

    def get_exposure(self) -> float:
        return float(self.microscope.exposure_ms)

    def set_exposure(self, exposure: float) -> None:
        self.microscope.set_exposure(float(exposure))

    def snap(self, buffer: np.ndarray) -> Mapping:
        """Acquire one frame into ``buffer`` (full ROI) and return per-frame metadata as strings."""
        started = time.perf_counter()
        with self._link.lock:
            scope = self.microscope
            was_open = scope.shutter_open
            if self.auto_illuminate:
                scope.shutter_open = True
            try:
                frame = scope.snap()
            finally:
                scope.shutter_open = was_open
        buffer[...] = frame.image
        if self.realtime:
            remaining = frame.metadata["exposure_ms"] / 1000.0 - (time.perf_counter() - started)
            if remaining > 0:
                time.sleep(remaining)
        meta = frame.metadata
        return {
            "Simulated-FrameIndex": str(meta["frame_index"]),
            "Simulated-ExposureMs": f"{meta['exposure_ms']:g}",
            "Simulated-LightPower": f"{meta['light_power']:g}",
            "Simulated-Illuminated": str(int(bool(meta["shutter_open"]))),
        }

    # -- informative read-only properties ---------------------------------------------------
    @pymm_property(name="BitDepth", is_read_only=True)
    def bit_depth(self) -> int:
        """Bits of the ADC (a 12-bit camera still delivers uint16 pixels)."""
        return int(self.microscope.camera.config.bit_depth)

    @pymm_property(name="CameraPreset", is_read_only=True)
    def camera_preset(self) -> str:
        """Name of the camera preset the simulation uses."""
        return str(self.microscope.camera.config.name)


class SimulatedXYStage(XYStageDevice):
    """XY stage: (x, y) in micrometres selects which part of the virtual slide is in view."""

    def __init__(self, link: MicroscopeLink) -> None:
        super().__init__()
        self._link = link
        self._origin = (0.0, 0.0)

    def set_position_um(self, x: float, y: float) -> None:
        with self._link.lock:
            self._link.microscope.set_position(x_um=x + self._origin[0], y_um=y + self._origin[1])

    def get_position_um(self) -> tuple[float, float]:
        scope = self._link.microscope
        return (scope.x_um - self._origin[0], scope.y_um - self._origin[1])

    def home(self) -> None:
        self.set_position_um(-self._origin[0], -self._origin[1])

    def stop(self) -> None:
        """Moves are instantaneous: nothing to stop."""

    def set_origin_x(self) -> None:
        self._origin = (self._link.microscope.x_um, self._origin[1])

    def set_origin_y(self) -> None:
        self._origin = (self._origin[0], self._link.microscope.y_um)


class SimulatedZStage(StageDevice):
    """Focus drive: distance from ``MicroscopeConfig.focus_z_um`` blurs the image (defocus)."""

    def __init__(self, link: MicroscopeLink) -> None:
        super().__init__()
        self._link = link
        self._origin = 0.0

    def set_position_um(self, val: float) -> None:
        with self._link.lock:
            self._link.microscope.set_position(z_um=val + self._origin)

    def get_position_um(self) -> float:
        return self._link.microscope.z_um - self._origin

    def home(self) -> None:
        self.set_position_um(-self._origin)

    def stop(self) -> None:
        """Moves are instantaneous: nothing to stop."""

    def set_origin(self) -> None:
        self._origin = self._link.microscope.z_um


class SimulatedLightSource(ShutterDevice):
    """Excitation light source: open/close (the shutter) and ``Power`` in percent.

    Power is a property rather than a dedicated API because that is how Micro-Manager exposes
    lasers and LEDs; config groups and acquisition events set it with ``setProperty``.
    """

    def __init__(self, link: MicroscopeLink) -> None:
        super().__init__()
        self._link = link

    def get_open(self) -> bool:
        return bool(self._link.microscope.shutter_open)

    def set_open(self, open: bool) -> None:  # noqa: A002 - name fixed by the base class
        with self._link.lock:
            self._link.microscope.shutter_open = bool(open)

    @pymm_property(name=POWER_PROPERTY, limits=(0.0, 100.0), property_type=float)
    def power(self) -> float:
        """Light power in percent of the maximum."""
        return float(self._link.microscope.light_power)

    # a setter as for @property, which mypy understands for the builtin property only
    @power.setter  # type: ignore[no-redef]
    def power(self, value: float) -> None:
        with self._link.lock:
            self._link.microscope.set_light_power(float(value))
