"""Hooks for the user's own ``pycromanager.Acquisition``: denoising added to an acquisition you already run.

Two ways in, for the two pycromanager backends (pycro-manager's own deep-learning tutorial uses the first):

* ``image_process_fn=den.process``: called with each frame before it is saved; hands it over and returns
  it *unchanged*, so the dataset holds exactly what the camera produced. With the Python backend (pymmcore,
  the simulated core) frames never leave the process.
* ``image_saved_fn=den.saved``: called after a frame is on disk; hands over only its axes, and the workers
  read the pixels back from the dataset. Raw is on disk before any denoising, with the Java backend each
  frame crosses the bridge once (an ``image_process_fn`` makes it cross twice), and the recorder's backlog
  is bounded in memory because it can re-read frames.

Any axes work (time, channel, z, position, your own); models are chosen per channel by name.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.attach.denoiser import Adaptation, AttachedDenoiser
from livedenoise.errors import ConfigError

log = logging.getLogger("livedenoise")


class _Stage:
    """The XY stage of a pymmcore core, or of the running Micro-Manager through pycromanager's ``Core`` (Java)."""

    def __init__(self, core: Any) -> None:
        if core is None:
            from pycromanager import Core

            self.java, self.core = True, Core()
        else:
            self.java, self.core = False, core

    def xy(self) -> tuple[float, float] | None:
        device = self.core.get_xy_stage_device() if self.java else self.core.getXYStageDevice()
        if not device:
            return None
        if self.java:
            return float(self.core.get_x_position()), float(self.core.get_y_position())
        return float(self.core.getXPosition()), float(self.core.getYPosition())

    def move(self, xy: tuple[float, float] | None) -> None:
        if xy is None:
            return
        if self.java:
            self.core.set_xy_position(*xy)
            self.core.wait_for_system()
        else:
            self.core.setXYPosition(*xy)
            self.core.waitForSystem()


class PycromanagerDenoiser(AttachedDenoiser):
    """An :class:`AttachedDenoiser` with pycromanager's hook signatures.

    Example (2 channels, z-stacks, 2 positions; the ``BF`` channel left raw)::

        den = PycromanagerDenoiser("fast", channels={"BF": None}, output="denoised/")
        with Acquisition(directory="data", name="exp", image_process_fn=den.process) as acq:
            acq.acquire(multi_d_acquisition_events(num_time_points=5, channel_group="Channel",
                                                   channels=["DAPI", "FITC", "BF"], z_start=0, z_end=4, z_step=2,
                                                   xy_positions=[[0, 0], [100, 0]]))
        print(den.close().summary())
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dataset: Any = None

    def process(self, image: np.ndarray, metadata: Mapping[str, Any]) -> tuple[np.ndarray, Mapping[str, Any]]:
        """``image_process_fn``: hand the frame over, return it unchanged (raw is saved exactly as acquired)."""
        try:
            self.submit(image, metadata.get("Axes", {}))
        except Exception:  # the frame must reach the dataset whatever happens here
            log.exception("handing a frame to livedenoise failed; raw is saved anyway")
        return image, metadata

    def calibrate(self, positions: Sequence[tuple[float, float]], directory: str | Path, *,
                  channel_group: str | None = None, channels: Sequence[str] | None = None,
                  exposures_ms: Sequence[float] | None = None, average: int = 16, core: Any = None,
                  time_budget_s: float = 60.0, training: Any = None,
                  remove_fixed_pattern: bool = True) -> dict[str, cf.Future[Adaptation]]:
        """Acquire reference pairs with your channels at ``positions`` and adapt every channel to them.

        A pycromanager acquisition (saved under ``directory`` as ``livedenoise-calibration``, so nothing taken is
        lost) images, at each ``(x, y)`` (µm) and for each of ``channels`` (presets of ``channel_group``, at
        ``exposures_ms`` if given, else the current exposure), one frame plus ``average`` more whose mean is the
        reference. Then one background fine-tune per channel that has a model starts
        (:meth:`AttachedDenoiser.adapt_from_calibration`); each channel's model is hot-swapped when better, also
        during the acquisition you run next. ``core``: a pymmcore core for pycromanager's Python backend (the
        simulated one); ``None``: the running Micro-Manager. The stage is put back where it was. Returns channel
        name -> future of its outcome.
        """
        from pycromanager import Acquisition

        if not positions:
            raise ConfigError("calibration needs at least one stage position (x, y) in micrometres")
        if int(average) < 2:
            raise ConfigError(f"average {average!r} is invalid; expected at least 2 frames per reference")
        names: list[str | None] = list(channels) if channels else [None]
        self.refuse_adapting_foreign(names, "a calibration (it fine-tunes the model)")  # before anything is acquired
        if channels and not channel_group:
            raise ConfigError("channels need their channel_group (the Micro-Manager config group they are presets of)")
        if exposures_ms is not None and len(exposures_ms) != len(names):
            raise ConfigError(f"{len(exposures_ms)} exposures for {len(names)} channels; give one per channel")
        if len(set(names)) != len(names):
            raise ConfigError(f"channels {list(names)} name a preset twice; the frames of both would be one channel "
                              "(calibrate each setting separately)")
        events = []
        for k, (x, y) in enumerate(positions):
            for i, ch in enumerate(names):
                for t in range(int(average) + 1):
                    event: dict[str, Any] = {"axes": {"position": k, "time": t, **({"channel": ch} if ch else {})},
                                             "x": float(x), "y": float(y)}
                    if ch:
                        event["config_group"] = [channel_group, ch]
                    if exposures_ms is not None:
                        event["exposure"] = float(exposures_ms[i])
                    events.append(event)
        frames: dict[tuple[int, Any], list[np.ndarray]] = {}

        def keep(image: np.ndarray, metadata: Mapping[str, Any]) -> tuple[np.ndarray, Mapping[str, Any]]:
            axes = metadata.get("Axes", {})
            frames.setdefault((int(axes.get("position", 0)), axes.get("channel")), []).append(
                np.array(image, copy=True))
            return image, metadata

        if core is not None:
            from livedenoise.acquisition.pycromanager_python import register_with_pycromanager

            register_with_pycromanager(core)
        Path(directory).mkdir(parents=True, exist_ok=True)
        stage = _Stage(core)
        start = stage.xy()
        if start is None and len(positions) > 1:
            raise ConfigError("calibration at several positions needs an XY stage, and this microscope has none: every "
                              "pair would image the same field; give one position or configure the stage")
        try:
            with Acquisition(directory=str(directory), name="livedenoise-calibration", image_process_fn=keep,
                             show_display=False) as acq:
                acq.acquire(events)
        finally:
            stage.move(start)  # the user's next acquisition starts where the stage was
        return self.adapt_from_calibration(frames, names, len(positions), int(average), time_budget_s=time_budget_s,
                                           training=training, remove_fixed_pattern=remove_fixed_pattern)

    def saved(self, axes: Mapping[str, Any], dataset: Any) -> None:
        """``image_saved_fn``: the frame is on disk; hand over its axes, the workers read it back."""
        if self._dataset is None:
            self._dataset = dataset
            self.read_raw = self._read_saved
        try:
            self.submit(None, axes)
        except Exception:  # never disturb pycromanager's saving thread
            log.exception("handing a saved frame to livedenoise failed")

    def _read_saved(self, axes: dict) -> np.ndarray:
        return np.asarray(self._dataset.read_image(**axes))
