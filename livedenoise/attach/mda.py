"""A pymmcore-plus MDA output handler: denoise every frame of any ``useq.MDASequence`` you run.

    core.mda.run(sequence, output=["raw.ome.zarr", MDADenoiser("fast", output="denoised/")])

Raw frames go to pymmcore-plus's own writers (OME-Zarr, OME-TIFF) exactly as acquired; the handler
only hands frames to livedenoise's workers. pymmcore-plus calls output handlers from a relay thread
(``mda_listeners_connected``), so even the hand-over does not run in the acquisition loop. The same
object works with ``mda_listeners_connected(handler)`` for an MDA someone else starts, e.g. from
napari-micromanager's MDA widget.

useq indices become named axes for the denoised dataset and the per-channel models: ``t`` -> ``time``,
``c`` -> ``channel`` (the channel's config name, e.g. ``"DAPI"``; a config used twice in one sequence,
say DAPI at two exposures, becomes ``"DAPI#0"`` and ``"DAPI#2"`` by its index, so the two never share a
noise fit, a temporal window or a slot in the dataset), ``z`` and ``p`` -> ``z`` and ``position``; any
other index keeps its name.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from livedenoise.attach.denoiser import CHANNEL_AXIS, AttachedDenoiser, AttachReport

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
    for key, value in dict(event.index).items():
        if key == "c":
            channel = getattr(event, "channel", None)
            if names is not None and int(value) in names:
                axes[CHANNEL_AXIS] = names[int(value)]
            else:
                axes[CHANNEL_AXIS] = channel.config if channel is not None else int(value)
        else:
            axes[_NAMES.get(key, key)] = int(value)
    return axes


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
