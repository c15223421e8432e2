"""A pymmcore-plus MDA output handler: denoise every frame of any ``useq.MDASequence`` you run.

    core.mda.run(sequence, output=["raw.ome.zarr", MDADenoiser("fast", output="denoised/")])

Raw frames go to pymmcore-plus's own writers (OME-Zarr, OME-TIFF) exactly as acquired; the handler
only hands frames to livedenoise's workers. pymmcore-plus calls output handlers from a relay thread
(``mda_listeners_connected``), so even the hand-over does not run in the acquisition loop. The same
object works with ``mda_listeners_connected(handler)`` for an MDA someone else starts, e.g. from
napari-micromanager's MDA widget. With a Qt application running and the MDA outside its GUI thread, pymmcore-plus's
relay can be called after it is freed (its Qt signals are queued): there, listen with
:func:`livedenoise.acquisition.mda_listeners.listening` instead, as livedenoise's own calibrations do.

useq indices become named axes for the denoised dataset and the per-channel models: ``t`` -> ``time``,
``c`` -> ``channel`` (the channel's config name, e.g. ``"DAPI"``; a config used twice in one sequence,
say DAPI at two exposures, becomes ``"DAPI#0"`` and ``"DAPI#2"`` by its index, so the two never share a
noise fit, a temporal window or a slot in the dataset), ``z`` and ``p`` -> ``z`` and ``position``; any
other index keeps its name.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from livedenoise.acquisition.mda_listeners import CALIBRATION_TAG, listening
from livedenoise.attach.denoiser import CHANNEL_AXIS, Adaptation, AttachedDenoiser, AttachReport
from livedenoise.errors import ConfigError

log = logging.getLogger("livedenoise")

_NAMES = {"t": "time", "z": "z", "p": "position"}


def channel_names(sequence: Any) -> dict[int, str]:
    """Channel index -> name for a ``useq.MDASequence``: the config name, with ``#index`` where a config repeats."""
    configs = [str(c.config) for c in getattr(sequence, "channels", None) or ()]
    return {i: (f"{c}#{i}" if configs.count(c) > 1 else c) for i, c in enumerate(configs)}


def useq_axes(event: Any, names: dict[int, str] | None = None) -> dict[str, Any]:
    """Named axes of a ``useq.MDAEvent``: ``{"time": 3, "channel": "DAPI", "z": 1, "position": 0}``.

    ``names``: channel index -> name from :func:`channel_names` (repeated configs told apart)."""
    axes: dict[str, Any] = {}
    index: dict[str, Any] = dict(event.index)
    for key, value in index.items():
        if key == "c":
            channel = getattr(event, "channel", None)
            if names is not None and int(value) in names:
                axes[CHANNEL_AXIS] = names[int(value)]
            else:
                axes[CHANNEL_AXIS] = channel.config if channel is not None else int(value)
        else:
            axes[_NAMES.get(key, key)] = int(value)
    return axes


def calibration_sequence(sequence: Any, positions: Sequence[tuple[float, float]], *, average: int = 16) -> Any:
    """A ``useq.MDASequence`` that takes reference pairs with ``sequence``'s channels and settings at ``positions``.

    At each ``(x, y)`` (µm; the z stays where it is) every channel of ``sequence`` (same config, group and
    exposure) images ``1 + average`` frames back to back: the first is the low-SNR frame, the mean of the other
    ``average`` the high-SNR reference. Why the average (not a longer exposure): its expected value equals the
    live frame's exactly, camera fixed pattern included, so no intensity matching is needed.
    """
    import useq

    if not positions:
        raise ConfigError("calibration needs at least one stage position (x, y) in micrometres")
    if int(average) < 2:
        raise ConfigError(f"average {average!r} is invalid; expected at least 2 frames per reference")
    # every channel at every calibration frame (a channel imaged every other time point still needs its frames)
    channels = tuple(c.model_copy(update={"acquire_every": 1}) for c in getattr(sequence, "channels", None) or ())
    return useq.MDASequence(
        channels=channels, stage_positions=tuple(useq.Position(x=float(x), y=float(y)) for x, y in positions),
        time_plan=useq.TIntervalLoops(interval=timedelta(0), loops=int(average) + 1), axis_order=tuple("pct"),
        metadata={CALIBRATION_TAG[0]: CALIBRATION_TAG[1]})



class MDADenoiser(AttachedDenoiser):
    """An :class:`AttachedDenoiser` with pymmcore-plus's handler methods (one sequence per handler).

    When the sequence finishes, every queued frame is written and the denoised dataset closed before
    ``core.mda.run`` returns (pymmcore-plus waits for its handlers); :attr:`result` then holds the report.
    """

    result: AttachReport | None = None
    _names: dict[int, str] | None = None

    def sequenceStarted(self, sequence: Any, meta: Any = None) -> None:  # noqa: N802 - pymmcore-plus API
        self._names = channel_names(sequence)
        log.info("livedenoise attached to an MDA (channels: %s)", ", ".join(self._names.values()) or "none")

    def frameReady(self, image: np.ndarray, event: Any, meta: Any = None) -> None:  # noqa: N802
        try:
            self.submit(image, useq_axes(event, self._names))
        except Exception:  # a handler error must not end the user's acquisition
            log.exception("handing a frame to livedenoise failed; raw is saved anyway")

    def sequenceFinished(self, sequence: Any) -> None:  # noqa: N802
        self.result = self.close(progress=False)
        log.info("livedenoise: %s", self.result.summary())

    def calibrate(self, core: Any, sequence: Any, positions: Sequence[tuple[float, float]], *, average: int = 16,
                  time_budget_s: float = 60.0, training: Any = None,
                  remove_fixed_pattern: bool = True) -> dict[str, cf.Future[Adaptation]]:
        """Acquire reference pairs with ``sequence``'s channels at ``positions`` and adapt every channel to them.

        Runs :func:`calibration_sequence` on ``core`` (a pymmcore-plus ``CMMCorePlus``; blocks for the few
        seconds the frames take, before you start your own ``core.mda.run(sequence, ...)``), then starts one
        background fine-tune per channel that has a model (:meth:`AttachedDenoiser.adapt`, few-pair mode, the
        averaged references unmatched). Returns channel name -> future of its :class:`Adaptation`; each
        channel's model is hot-swapped when its adaptation is better on a held-out pair, also mid-acquisition.
        The stage is returned to where it was.
        """
        names: Mapping[int, str | None] = channel_names(sequence) or {0: None}
        self.refuse_adapting_foreign(list(names.values()), "a calibration (it fine-tunes the model)")
        if len(positions) > 1 and not core.getXYStageDevice():
            raise ConfigError("calibration at several positions needs an XY stage, and this core has none: every pair "
                              "would image the same field; give one position or configure the stage")
        frames: dict[tuple[int, Any], list[np.ndarray]] = {}
        plan = calibration_sequence(sequence, positions, average=average)

        class _Collect:
            def frameReady(self, image: np.ndarray, event: Any, meta: Any = None) -> None:  # noqa: N802
                index = dict(event.index)
                frames.setdefault((int(index.get("p", 0)), names.get(int(index.get("c", 0)))), []).append(
                    np.array(image, copy=True))

        xy = (float(core.getXPosition()), float(core.getYPosition())) if core.getXYStageDevice() else None
        try:
            with listening(core.mda.events, _Collect()):  # in the acquisition thread: every frame in when run returns
                core.mda.run(plan)
        finally:
            if xy is not None:
                core.setXYPosition(*xy)
                core.waitForSystem()
        return self.adapt_from_calibration(frames, list(dict.fromkeys(names.values())), len(positions), average,
                                           time_budget_s=time_budget_s, training=training,
                                           remove_fixed_pattern=remove_fixed_pattern)
