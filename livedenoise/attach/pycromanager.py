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

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from livedenoise.attach.denoiser import AttachedDenoiser

log = logging.getLogger("livedenoise")


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
