"""Denoise the frames of an acquisition someone else runs: frames arrive one at a time with their axes.

Why: livedenoise's own live session runs its own acquisition (time points at one position). A user
with a multi-channel, multi-position z-stack experiment already has an acquisition -- a pycromanager
``Acquisition``, a pymmcore-plus MDA, napari-micromanager -- and wants denoising *added* to it, never
slowing it. :class:`AttachedDenoiser` is the part those integrations share
(:mod:`livedenoise.attach.pycromanager`, :mod:`livedenoise.attach.mda`):

* ``submit(frame, axes)`` is all the acquisition thread does: a dictionary lookup and two queue puts,
  never model work, never a wait. The raw frame is saved by the acquisition library exactly as acquired.
* Display: a :class:`~livedenoise.acquisition.display.DenoiseWorker` denoises the *newest* frame and
  drops stale ones (counted), so a slow model shows the latest frame rather than falling behind.
* Record (optional): a :class:`~livedenoise.acquisition.recorder.DenoisedWriter` denoises *every* frame
  in order into an NDTiff dataset with the acquisition's axes, beside the raw data; frames past its
  in-memory bound are re-read from the raw dataset later when the caller can read it back (``read_raw``).
* Channels: each channel (the ``channel`` axis, by name) has its own model and its own noise fit --
  channels differ in brightness and often in camera settings. A channel mapped to ``None`` is not
  denoised at all (e.g. brightfield). The fit runs on the channel's first frame, in a worker thread.
* Time-lapses with a temporal model: every (channel, z, position, ...) combination is its own stream, so
  a temporal window only ever holds frames of one field at successive time points.
* Adaptation: :meth:`AttachedDenoiser.adapt` fine-tunes one channel's model in the background, from a few
  low/high-SNR pairs the user acquired with that channel's settings or from its own noisy frames, and
  hot-swaps it in between two frames only if it is better on held-out full frames
  (:mod:`livedenoise.swap_check`), exactly as the live session does.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.acquisition.axes import TIME_AXES
from livedenoise.acquisition.calibration_set import calibration_set
from livedenoise.acquisition.display import DenoisedFrame, DenoiseWorker
from livedenoise.acquisition.pass_choice import OnePass, PassChoice, effective_mode
from livedenoise.acquisition.plans import HEAD_FRAMES, CalibrationPair
from livedenoise.acquisition.recorder import OUTPUT_FORMATS, RECORDED_WINDOWS, DenoisedWriter
from livedenoise.bioimageio_import import FOREIGN_ARCH, refuse_training
from livedenoise.camera_calibration import CameraCalibration
from livedenoise.checkpoint import DEFAULT_BACKBONE, Checkpoint
from livedenoise.errors import ConfigError, LivedenoiseError
from livedenoise.inference import DEFAULT_WINDOW, Denoiser, canonical_precision
from livedenoise.models import model_is_temporal
from livedenoise.modelspec import load_model_spec
from livedenoise.noise_model import fit_noise_model
from livedenoise.swap_check import SWAP_MARGIN, HeldOut, split_held_out, swap_scores

log = logging.getLogger("livedenoise")

#: What may name a model: a shipped backbone's name, a checkpoint path, or a loaded checkpoint.
ModelChoice = str | Path | Checkpoint
#: The axis whose value names the channel (pycromanager's convention; the MDA handler maps useq's ``c`` to it).
CHANNEL_AXIS = "channel"
#: Memory the temporal windows of all fields may hold (display and recorder together). A z-stack at many
#: positions has many fields; past this, the least recently seen field's window is dropped (it restarts,
#: with fewer frames, when that field comes back).
STREAM_MEMORY_BYTES = 1 << 30


def _maps_fit(calibration: Any, frame: np.ndarray) -> bool:
    """True when ``calibration``'s per-pixel maps apply to ``frame`` (same shape); another ROI gets its medians."""
    return calibration is not None and tuple(getattr(calibration, "shape", ())) == tuple(np.shape(frame))


def _mean(frames: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of ``frames`` (float32), accumulated in float64."""
    return np.mean(np.stack(frames).astype(np.float64), axis=0).astype(np.float32)


def stream_key(axes: Mapping[str, Any]) -> str:
    """The field a frame belongs to: its axes without time (``"channel=GFP|z=2"``), one temporal stream each."""
    return "|".join(f"{k}={axes[k]}" for k in sorted(axes, key=str) if k not in TIME_AXES) or "all"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


#: What a channel run by another tool's Model Zoo package reports instead of a fitted noise model.
FOREIGN_NOISE = "no noise model fitted (another tool's BioImage Model Zoo package, run on raw values as it is)"


@dataclass
class ChannelState:
    """One channel's model, as prepared on its first frame."""

    checkpoint: Checkpoint  #: the channel's model with its fitted normaliser (what swaps are scored against)
    denoiser: Denoiser  #: runs ``checkpoint``; swapped together with it
    noise: str = ""
    warnings: list[str] = field(default_factory=list)
    frames: int = 0
    adaptations: list[dict] = field(default_factory=list)
    #: held while the recorder denoises a frame and while a swap happens: a recorded frame's model name is exact
    swap_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model(self) -> str:
        return self.checkpoint.name


@dataclass
class Adaptation:
    """What :meth:`AttachedDenoiser.adapt` did for one channel."""

    channel: str | None
    mode: str  #: "pairs" or "self"
    steps: int
    adapted: bool  #: the fine-tune changed the weights
    swapped: bool  #: ... and was better on held-out frames, so it replaced the channel's model
    backbone_mse: float | None
    adapted_mse: float | None
    held_out: str
    reason: str
    saved_to: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AttachReport:
    """What an attached denoiser did; ``denoised_path``: the denoised frames' dataset (NDTiff or OME-Zarr), if any."""

    frames_submitted: int = 0
    frames_skipped: int = 0  #: frames of channels mapped to ``None`` (not denoised, by choice)
    display_denoised: int = 0
    display_dropped: int = 0  #: display frames replaced by a newer one before the model got to them
    frames_written: int = 0
    frames_reread: int = 0  #: frames the recorder read back from the raw dataset instead of holding in memory
    #: frames the recorder parked on disk until it got to them (no ``read_raw``), instead of holding them in memory
    frames_parked: int = 0
    denoised_path: str | None = None
    #: a temporal model's display ways (``one_pass``): {"mode", "one pass", "two passes", "switches"}; else empty
    display_passes: dict = field(default_factory=dict)
    channels: dict[str, dict] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        parts = [f"{self.frames_submitted} frames handed over"]
        if self.frames_skipped:
            parts.append(f"{_plural(self.frames_skipped, 'frame')} of channels left raw")
        parts.append(f"{self.display_denoised} denoised for display ({self.display_dropped} stale "
                     f"{'one' if self.display_dropped == 1 else 'ones'} skipped)")
        if self.denoised_path:
            parts.append(f"{self.frames_written} denoised frames written to {self.denoised_path}")
        if self.frames_parked:
            parts.append(f"{_plural(self.frames_parked, 'frame')} parked on disk while the recorder caught up")
        if self.errors:
            parts.append(f"{len(self.errors)} errors (first: {self.errors[0]})")
        return "; ".join(parts)


class AttachedDenoiser:
    """Denoise frames handed over by any acquisition, per channel, for display and (optionally) on disk.

    ``model``: the model for every channel not named in ``channels`` (a shipped backbone name such as
    ``"fast"`` or ``"temporal"``, a ``.safetensors`` path, or a :class:`Checkpoint`). ``channels``: per
    channel name, a model or ``None`` to leave that channel raw. ``output``: a folder to record every
    denoised frame in (an NDTiff dataset called ``name``); ``None`` records nothing. ``display``: called
    in a worker thread with each :class:`DenoisedFrame` shown (newest wins). ``read_raw(axes)``: reads a
    saved raw frame back, so the recorder need not park its backlog on disk itself. ``calibration``: the camera's
    per-pixel maps (``livedenoise calibrate-camera``), used by every channel's noise fit. ``threads``: torch
    CPU threads for the models (process-wide; leave a core to the acquisition where it needs the CPU).
    ``display_fps``: at most this many display frames denoised per second (``None``: as many as the model
    manages); a screen needs ~10, and the CPU left over goes to the acquisition and the recorder.
    ``output_format``: ``"ndtiff"`` or ``"ome-zarr"`` (recorded as NDTiff while acquiring, copied into
    ``<name>.ome.zarr`` when closed; see :class:`~livedenoise.acquisition.recorder.DenoisedWriter`).
    ``precision``: the network's arithmetic (``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``; see
    :class:`~livedenoise.inference.Denoiser`): ``"bf16"`` roughly halves the CPU time per frame on CPUs with
    native bfloat16, at the quality cost the README's precision table measures. ``second_pass``: with the
    temporal backbone, also denoise each frame's motion-compensated average with the frames before it (better,
    at a second 2-D pass per frame; :mod:`livedenoise.second_pass`). ``recorded_window``: with a temporal model,
    ``"centred"`` (default) records each frame fused with the frames of its field before and after it, as batch
    denoising does (the recorder waits for them; past ``max_queued`` the frames waiting are read back from the raw
    data with ``read_raw``, or without it parked on disk beside the denoised dataset until their turn);
    ``"causal"`` records the frames before it, as the display shows it. ``one_pass``: with the temporal backbone,
    ``"auto"`` (default) denoises the display in two 2-D passes while it keeps up with the frames handed over and in
    one pass while it falls behind (:mod:`livedenoise.acquisition.pass_choice`; with ``second_pass=False`` the fusion
    alone throughout); ``True`` always in one pass, each
    frame's motion-compensated average with the frames of its field shown before it (:mod:`livedenoise.one_pass`:
    about 1.2x a 2-D frame's cost instead of 2.2x; a causal ``recorded_window`` then records that way too);
    ``False`` always in two.
    """

    def __init__(self, model: ModelChoice = DEFAULT_BACKBONE, *,
                 channels: Mapping[str, ModelChoice | None] | None = None, output: str | Path | None = None,
                 name: str = "denoised",
                 display: Callable[[DenoisedFrame], None] | None = None,
                 read_raw: Callable[[dict], np.ndarray] | None = None, calibration: CameraCalibration | None = None,
                 device: str = "auto", threads: int | None = None, display_fps: float | None = None,
                 max_queued: int = 32, precision: str = "auto", output_format: str = "ndtiff",
                 second_pass: bool = True, recorded_window: str = "centred",
                 one_pass: OnePass = "auto") -> None:
        if output_format not in OUTPUT_FORMATS:  # checked now, not when the first frame arrives
            raise ConfigError(f"output_format {output_format!r} is unknown; expected one of "
                              f"{', '.join(OUTPUT_FORMATS)}.")
        self._output_format = output_format
        if max_queued < 1:
            raise ConfigError(f"max_queued {max_queued} is invalid; expected a positive number of frames.")
        self._precision = canonical_precision(precision)  # a wrong value fails here, before acquisition starts
        self._second_pass = bool(second_pass)
        if not (isinstance(one_pass, bool) or one_pass == "auto"):
            raise ConfigError(f"one_pass {one_pass!r} is invalid; expected True, False or \"auto\".")
        if display_fps is not None and not display_fps > 0:
            raise ConfigError(f"display_fps {display_fps} is invalid; expected a positive frame rate or None.")
        # the display's way for a temporal model, frame by frame; under the rate cap, a frame interval is never shorter
        self._passes = PassChoice(effective_mode(one_pass, self._second_pass),
                                  min_interval_s=1.0 / display_fps if display_fps else 0.0)
        if recorded_window not in RECORDED_WINDOWS:
            raise ConfigError(f"recorded_window {recorded_window!r} is unknown; expected one of "
                              f"{', '.join(RECORDED_WINDOWS)}.")
        self._recorded_window = recorded_window
        self._device = device
        self._threads = threads
        self._calibration = calibration
        self._display = display
        self.read_raw = read_raw
        self._checkpoints: dict[str, Checkpoint] = {}
        self._choices: dict[str | None, ModelChoice | None] = {None: model}
        for channel, choice in dict(channels or {}).items():
            self._choices[str(channel)] = choice
        # Load every named model now: a wrong name or a missing file fails here, before acquisition starts.
        for choice in self._choices.values():
            if choice is not None:
                self._checkpoint(choice)
        self._states: dict[str | None, ChannelState] = {}
        #: each channel's first frame handed over (or its axes, when handed over without pixels): the noise fit's
        #: input, whichever worker gets to the channel first, so results do not depend on thread timing
        self._first: dict[str | None, tuple[np.ndarray | None, dict]] = {}
        self._prepare_lock = threading.Lock()
        self._latest: DenoisedFrame | None = None
        self.report = AttachReport()
        self._closed = False
        self._worker = DenoiseWorker(self._denoise_for_display, self._shown, model_name=self._model_names,
                                     read_raw=self._read_for_worker, max_fps=display_fps).start()
        self._output = None if output is None else Path(output)
        self._name = name
        self._max_queued = int(max_queued)
        self._writer: DenoisedWriter | None = None  # opened on the first frame, when read_raw is known
        self._adapt_pool: cf.ThreadPoolExecutor | None = None
        self._record_model = ""  # set in the recorder's thread just before its frame is written
        self._fields: dict[str, dict[str, None]] = {"display": {}, "record": {}}  # per consumer, least recent first
        self._fields_lock = threading.Lock()
        self._dropped_windows = 0

    # -- models per channel --------------------------------------------------------------------------
    def _checkpoint(self, choice: ModelChoice) -> Checkpoint:
        if isinstance(choice, Checkpoint):
            return choice
        key = str(choice)
        if key not in self._checkpoints:
            # another tool's Model Zoo package runs as it is (no noise fit, no adaptation)
            self._checkpoints[key] = load_model_spec(choice, foreign=True)
        return self._checkpoints[key]

    def _choice_for(self, channel: str | None) -> ModelChoice | None:
        return self._choices.get(channel, self._choices[None]) if channel is not None else self._choices[None]

    def _model_names(self) -> str:
        named = {k: (None if v is None else self._checkpoint(v).name) for k, v in self._choices.items()
                 if k is not None}
        default_choice = self._choices[None]
        default = self._checkpoint(default_choice).name if default_choice is not None else "none"
        return default if not named else f"{default}; " + ", ".join(f"{k}: {v or 'raw'}" for k, v in named.items())

    def _state(self, channel: str | None) -> ChannelState:
        """The channel's denoiser, prepared on its first frame: the model's normaliser fitted to that frame (another
        tool's Model Zoo package gets none: it runs on the raw values with the processing its package describes)."""
        with self._prepare_lock:
            state = self._states.get(channel)
            if state is not None:
                return state
            frame, axes = self._first[channel]
            if frame is None:
                frame = np.asarray(self.read_raw(axes))  # type: ignore[misc]
            ckpt = self._checkpoint(self._choice_for(channel)).clone()  # type: ignore[arg-type]
            if ckpt.arch == FOREIGN_ARCH:
                noise, warnings = FOREIGN_NOISE, []
                if self._calibration is not None:
                    warnings.append("the camera calibration is not used: another tool's package runs on raw values")
            else:
                fit = fit_noise_model([frame], like=ckpt.normalizer, calibration=self._calibration)
                ckpt.normalizer = fit.normalizer
                noise, warnings = fit.describe(), list(fit.warnings)
            den = Denoiser(ckpt, device=self._device, threads=self._threads, precision=self._precision,
                           second_pass=self._second_pass)
            state = ChannelState(ckpt, den, noise, warnings)
            self._states[channel] = state
            label = channel if channel is not None else "frames"
            log.info("%s: %s; %s", label, ckpt.name, noise)
            for w in warnings:
                log.warning("%s: noise model: %s", label, w)
            return state

    # -- the acquisition side: never blocks ----------------------------------------------------------
    def submit(self, frame: np.ndarray | None, axes: Mapping[str, Any]) -> bool:
        """Hand over one acquired frame (``None``: already saved, read back with ``read_raw`` in a worker).

        Returns False for a channel that is left raw. Never waits for a model and never raises for a
        frame: a frame the denoiser cannot handle is reported in :attr:`report`, the acquisition goes on.
        """
        if self._closed:
            raise RuntimeError("this attached denoiser is closed; make a new one for the next acquisition")
        if frame is None and self.read_raw is None:
            raise ValueError("a frame handed over without pixels needs read_raw (how to read it back from disk)")
        axes = dict(axes)
        self.report.frames_submitted += 1
        channel = axes.get(CHANNEL_AXIS)
        channel = None if channel is None else str(channel)
        if self._choice_for(channel) is None:
            self.report.frames_skipped += 1
            return False
        if channel not in self._first:  # a copy: a library may reuse its frame buffers
            self._first[channel] = (None if frame is None else np.array(frame, copy=True), axes)
        self._worker.submit(frame, {"axes": axes})
        if self._output is not None:
            if self._writer is None:
                # With read_raw the recorder's backlog past max_queued is re-read from the raw data; without it
                # the writer parks it on disk beside the denoised dataset until its turn.
                self._writer = DenoisedWriter(self._denoise_for_record, self._output, self._name,
                                              read_raw=self._read_for_writer if self.read_raw is not None else None,
                                              max_queued=self._max_queued,
                                              summary_metadata={"models": self._model_names()},
                                              frame_metadata=self._recorded_with,
                                              lookahead=self._recorder_lookahead(),
                                              output_format=self._output_format).start()
            self._writer.submit(axes, frame)
        return True

    # -- worker side ---------------------------------------------------------------------------------
    def _read_for_worker(self, info: dict) -> np.ndarray:
        if self.read_raw is None:
            raise ValueError("a frame was handed over without pixels and no read_raw was given")
        return np.asarray(self.read_raw(info["axes"]))

    def _read_for_writer(self, axes: dict) -> np.ndarray:
        self.report.frames_reread += 1
        return np.asarray(self.read_raw(axes))  # type: ignore[misc]

    def _channel_state(self, axes: dict) -> ChannelState:
        channel = axes.get(CHANNEL_AXIS)
        return self._state(None if channel is None else str(channel))

    def _stream(self, consumer: str, axes: dict, state: ChannelState, frame: np.ndarray) -> str:
        """The field's stream name for ``consumer``; bounds the memory temporal windows hold (least recent out)."""
        key = f"{consumer}|{stream_key(axes)}"
        den = state.denoiser
        if not den.is_temporal:
            return key
        per_window = max(1, den.window * frame.size * 12)  # 2-D result + registration spectrum per kept frame
        limit = max(2, STREAM_MEMORY_BYTES // (2 * per_window))
        with self._fields_lock:
            seen = self._fields[consumer]
            seen.pop(key, None)
            seen[key] = None
            while len(seen) > limit:
                old = next(iter(seen))
                del seen[old]
                for s in list(self._states.values()):
                    s.denoiser.drop_stream(old)
                self._dropped_windows += 1
                if self._dropped_windows == 1:
                    log.warning("more fields than temporal windows fit in %d MB: the least recently seen field's "
                                "window restarts when it comes back", STREAM_MEMORY_BYTES >> 20)
        return key

    def _denoise_for_display(self, frame: np.ndarray, info: dict) -> np.ndarray:
        axes = info["axes"]
        state = self._channel_state(axes)
        info["model"] = state.model  # names this frame's model on the display (channels differ; swaps happen)
        # a temporal model: two passes while the display keeps up, one while it falls behind (one_pass="auto")
        return self._passes.push(state.denoiser, frame, self._stream("display", axes, state, frame), info)

    def _recorder_lookahead(self) -> int:
        """Later frames of its field each recorded frame is fused with (``recorded_window``): the widest temporal
        model's window less one; 0 for ``recorded_window="causal"``."""
        if self._recorded_window != "centred":
            return 0
        windows = [int(getattr(ch.model, "window", DEFAULT_WINDOW))
                   for ch in (self._checkpoint(c) for c in self._choices.values() if c is not None)
                   if model_is_temporal(ch.model)]
        return max(windows, default=1) - 1

    def _denoise_for_record(self, frame: np.ndarray, axes: dict, following: Sequence[np.ndarray] = ()) -> np.ndarray:
        state = self._channel_state(axes)
        stream = self._stream("record", axes, state, frame)
        with state.swap_lock:
            out = state.denoiser.push(frame, stream=stream, following=following,
                                      one_pass=self._passes.mode is True and self._recorded_window == "causal")
            self._record_model = state.model
        state.frames += 1
        return out

    def _recorded_with(self, axes: dict) -> dict:
        """Each recorded frame names the model that denoised it (a channel's model changes when adapted)."""
        return {"model": self._record_model}

    def _shown(self, result: DenoisedFrame) -> None:
        self._latest = result
        if self._display is not None:
            self._display(result)

    # -- adaptation ----------------------------------------------------------------------------------
    def refuse_adapting_foreign(self, channels: Sequence[str | None], what: str) -> None:
        """One sentence, before anything is acquired or trained, if a channel to adapt runs another tool's package."""
        for channel in dict.fromkeys(channels):
            choice = self._choice_for(channel)
            if choice is not None:
                refuse_training(self._checkpoint(choice), what)

    def adapt_from_calibration(self, frames: dict[tuple[int, Any], list[np.ndarray]], channels: Sequence[Any],
                               positions: int, average: int, *, time_budget_s: float = 60.0,
                               training: Any = None, remove_fixed_pattern: bool = True
                               ) -> dict[str, cf.Future[Adaptation]]:
        """Adapt every channel to calibration frames: ``frames[(position, channel)]`` holds ``1 + average`` frames of
        one field at one channel's settings; the first is the low-SNR frame, the mean of the rest its reference.
        Channels left raw are skipped. Returns channel name (``"None"`` without a channel axis) -> future.

        ``remove_fixed_pattern``: subtract the camera's fixed pattern, estimated across the positions' references
        (:func:`livedenoise.training.fixed_pattern.remove_fixed_pattern`; 3 or more positions whose fields do not
        overlap; it leaves the references alone, and logs why, when fields look alike or the sample's texture
        outweighs the pattern), so the fine-tune does not learn to keep what the backbone removes. Skipped with a
        camera calibration, whose per-pixel maps already take the pattern out."""
        self.refuse_adapting_foreign([None if c is None else str(c) for c in channels], "adapting it")
        incomplete = [f"{channel!r} at position {p}: {len(frames.get((p, channel), []))}" for channel in channels
                       for p in range(positions) if len(frames.get((p, channel), [])) != average + 1]
        if incomplete:  # checked for every channel before any fine-tune starts
            raise LivedenoiseError(f"the calibration acquisition did not deliver {average + 1} frames per position "
                                   "and channel (it was stopped or a channel skipped frames): "
                                   f"{'; '.join(incomplete[:4])}")
        futures: dict[str, cf.Future[Adaptation]] = {}
        for channel in channels:
            if channel is not None and self._choice_for(str(channel)) is None:
                continue  # left raw
            stacks = [frames[(p, channel)] for p in range(positions)]
            # one CalibrationPair per position, its first reference frames kept as acquired (the live window)
            pairs = [CalibrationPair(p, st[0], _mean(st[1:]), {"reference_frames": len(st) - 1},
                                     [np.asarray(f) for f in st[1:1 + HEAD_FRAMES]]) for p, st in enumerate(stacks)]
            model = self._checkpoint(self._choice_for(None if channel is None else str(channel)))  # type: ignore[arg-type]
            # a camera calibration whose per-pixel maps fit these frames already takes the pattern out
            maps_fit = _maps_fit(self._calibration, pairs[0].high)
            cal = calibration_set(pairs, temporal=model_is_temporal(model.model),
                                  remove_pattern=remove_fixed_pattern and not maps_fit,
                                  saturation=model.normalizer.saturation,
                                  kept_because="the camera calibration's per-pixel maps already take the pattern out"
                                  if maps_fit else "remove_fixed_pattern=False")
            log.info("calibration references of channel %r: fixed pattern %s", channel, cal.fixed_pattern["note"])
            futures[str(channel)] = self.adapt(
                cal.noisy, cal.clean, channel=None if channel is None else str(channel), time_budget_s=time_budget_s,
                training=training, match_reference=False, held_out=cal.held_out, held_out_source=cal.source)
        return futures

    def adapt(self, noisy: Sequence[np.ndarray], clean: Sequence[np.ndarray] | None = None, *,
              channel: str | None = None, time_budget_s: float = 60.0, training: Any = None,
              match_reference: bool = True, save_to: str | Path | None = None,
              held_out: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
              held_out_source: str | None = None) -> cf.Future[Adaptation]:
        """Fine-tune ``channel``'s model in the background and hot-swap it in if it is better on held-out frames.

        ``clean`` given: few-pair supervised (``noisy[i]``/``clean[i]`` low/high-SNR frames of one field, taken
        with this channel's settings; with 3+ pairs the last is held out for the swap decision, with fewer the
        pairs' bottom rows, which the fine-tune never trains on). ``clean`` None: self-supervised on ``noisy``,
        consecutive frames of one field (the swap is scored with each frame as the next one's target).
        ``match_reference``: map each reference onto its noisy frame's intensity (pass False for references
        that are averages of frames at the same settings). The fine-tune starts from the channel's current
        model (an earlier adaptation, if one was swapped in) and is scored against it. Returns a future whose
        :class:`Adaptation` says what happened, failures included (one sentence in ``reason``); acquisition
        and display go on meanwhile, and frames after the swap use the adapted model. ``save_to``: write the
        adapted model there when it is swapped in. ``held_out``: (input, target) pairs to decide the swap on
        instead (never trained on; an input may be a [T, Y, X] sequence of consecutive frames, scored as the
        display shows its last frame: :func:`livedenoise.swap_check.held_out_mse`), with ``held_out_source``
        saying what they are.
        """
        from livedenoise.config import TrainingConfig
        from livedenoise.training.finetune import finetune, match_intensity

        if self._closed:
            raise RuntimeError("this attached denoiser is closed")
        seen = sorted(str(k) for k in self._first if k is not None)
        if channel is None and seen:
            raise ConfigError(f"these frames carry a channel axis ({', '.join(seen)}); name the channel to adapt")
        key = None if channel is None else str(channel)
        if key is not None and self._choice_for(key) is None:
            raise ConfigError(f"channel {key!r} is left raw (mapped to None); give it a model to adapt it")
        self.refuse_adapting_foreign([key], "adapting it")
        if key is not None and key not in seen and key not in self._choices:
            log.info("adapting channel %r, which no frame has named yet: its frames will use the result", key)
        noisy = [np.asarray(f) for f in noisy]
        clean_list = None if clean is None else [np.asarray(f) for f in clean]
        if clean_list is not None and len(clean_list) != len(noisy):
            raise ValueError(f"{len(noisy)} noisy frames but {len(clean_list)} references; pairs must match")
        if len(noisy) < (1 if clean_list is not None else 2):
            raise ValueError("adapt needs at least one pair, or two consecutive frames of one field without references")
        mode = "pairs" if clean_list is not None else "self"
        cfg = training or TrainingConfig()
        if held_out is not None:
            split = HeldOut(noisy, clean_list, [(np.asarray(x), np.asarray(t)) for x, t in held_out],
                            held_out_source or "held-out frames given by the caller")
        else:
            split = split_held_out(noisy, clean_list, cfg.validation_fraction)
        original = self._checkpoint(self._choice_for(key)).name  # type: ignore[arg-type]
        name = f"{original}+{mode}" + (f" ({key})" if key else "")

        def job() -> Adaptation:
            out = Adaptation(key, mode, 0, False, False, None, None, split.source, "")
            try:
                if key not in self._first:  # no frame of this channel yet: its noise fit comes from these frames
                    self._first[key] = (noisy[0], {})
                state = self._state(key)
                current = state.checkpoint
                result = finetune(current, split.noisy, split.clean, calibration=self._calibration, training=cfg,
                                  time_budget_s=time_budget_s, device=self._device, name=name,
                                  match_reference=match_reference)
                out.steps = int(result.fit.steps)
                out.adapted = bool(result.adapted)
                if not result.adapted:
                    out.reason = f"not adapted: {result.fit.not_adapted_reason()}"
                else:
                    pairs = split.pairs
                    if clean_list is not None and match_reference:
                        pairs = [(x, match_intensity(t, x[-1] if x.ndim == 3 else x)) for x, t in pairs]
                    b, a, better = swap_scores(current, result.checkpoint, pairs, device=self._device,
                                               second_pass=self._second_pass, noisy_targets=clean_list is None)
                    out.backbone_mse, out.adapted_mse, out.swapped = b, a, better
                    out.reason = f"held-out MSE {a:.4g} vs {b:.4g}" + (
                        "" if better else f": not better by {SWAP_MARGIN:.0%}, the current model is kept")
                    if better:
                        with state.swap_lock:
                            state.denoiser.swap(result.checkpoint)
                            state.checkpoint = result.checkpoint
                        if save_to is not None:
                            try:
                                out.saved_to = str(result.checkpoint.save(save_to))
                            except Exception as exc:  # swapped in all the same: saving is not what makes it better
                                out.reason += f"; NOT saved to {save_to} ({exc.__class__.__name__}: {exc})"
            except Exception as exc:  # reported in one sentence; the channel keeps its model
                out.reason = f"adaptation failed, the current model is kept: {exc.__class__.__name__}: {exc}"
                log.warning("%s: %s", key or "frames", out.reason)
            if key in self._states:
                self._states[key].adaptations.append(out.to_dict())
            log.info("%s: adaptation (%s, %d steps): %s", key or "frames", mode, out.steps,
                     ("swapped in; " if out.swapped else "") + out.reason)
            return out

        if self._adapt_pool is None:
            self._adapt_pool = cf.ThreadPoolExecutor(1, thread_name_prefix="livedenoise-adapt")
        return self._adapt_pool.submit(job)

    # -- results -------------------------------------------------------------------------------------
    def current_models(self) -> dict[str | None, Checkpoint]:
        """Each channel's model now, an adapted one once swapped in (``None``: frames without a channel axis).

        Why: a handler serves one acquisition; pass these as ``channels=`` (and the ``None`` entry as ``model``) to
        the next one to keep what a calibration adapted.
        """
        return {key: state.checkpoint for key, state in self._states.items()}

    def latest(self) -> DenoisedFrame | None:
        """The newest frame denoised for display (raw and denoised, with its axes in ``info``)."""
        return self._latest

    @property
    def written(self) -> int:
        """Denoised frames recorded so far."""
        return self._writer.written if self._writer is not None else 0

    @property
    def backlog(self) -> int:
        """Frames the recorder has still to denoise and write."""
        return self._writer.backlog if self._writer is not None else 0

    def close(self, *, progress: bool = True, timeout: float | None = None) -> AttachReport:
        """Finish the frame on display, write every frame still queued (with progress), close the dataset."""
        if not self._closed:
            self._closed = True
            if self._adapt_pool is not None:  # a running fine-tune finishes first: its swap applies to queued frames
                self._adapt_pool.shutdown(wait=True)
            self._worker.stop()  # shows the frame still pending, if any, then ends
            if self._writer is not None:
                self._writer.finish(progress=progress, timeout=timeout)
        r = self.report
        stats = self._worker.stats
        r.display_denoised, r.display_dropped = stats.denoised, stats.dropped
        if any(s.denoiser.is_temporal for s in self._states.values()):
            r.display_passes = self._passes.summary()
        r.errors = list(stats.errors)
        if self._writer is not None:
            r.frames_written = self._writer.written
            r.frames_parked = self._writer.parked
            r.errors += self._writer.errors
            r.denoised_path = str(self._writer.path) if self._writer.path else None
        r.channels = {str(k) if k is not None else "(all)": {"model": s.model, "noise_model": s.noise,
                                                             "warnings": s.warnings, "frames_recorded": s.frames,
                                                             "adaptations": s.adaptations}
                      for k, s in self._states.items()}
        return r

    def __enter__(self) -> AttachedDenoiser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
