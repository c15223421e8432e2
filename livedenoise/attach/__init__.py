"""Attach livedenoise to an acquisition you already run (pycromanager, pymmcore-plus MDA, napari-micromanager).

* :class:`PycromanagerDenoiser` -- ``Acquisition(image_process_fn=den.process)`` or ``image_saved_fn=den.saved``;
* :class:`MDADenoiser` -- ``core.mda.run(sequence, output=[..., den])`` or ``mda_listeners_connected(den)``;
* :class:`AttachedDenoiser` -- the shared part, for any other source: ``den.submit(frame, axes)``.

Each denoises for display (newest frame wins) and, with ``output=``, records every frame denoised in an
NDTiff dataset with the acquisition's axes; raw frames are saved by the acquisition library as acquired.
"""
from __future__ import annotations

from livedenoise.attach.denoiser import AttachedDenoiser, AttachReport, stream_key
from livedenoise.attach.mda import MDADenoiser, calibration_sequence, channel_names, useq_axes
from livedenoise.attach.pycromanager import PycromanagerDenoiser

__all__ = ["AttachReport", "AttachedDenoiser", "MDADenoiser", "PycromanagerDenoiser", "calibration_sequence",
           "channel_names", "stream_key", "useq_axes"]
