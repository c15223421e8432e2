"""The live session: IDLE -> CALIBRATING -> LIVE (backbone) -> FINE_TUNING (still live) -> LIVE (adapted) -> STOPPED.

This is the only place that knows the order of events. Acquisition runs in the acquisition library's
threads and only ever hands frames over (:mod:`livedenoise.acquisition.display`,
:mod:`livedenoise.acquisition.recorder`); denoising, recording and fine-tuning run in their own threads, so no
model can slow or stall the camera, and raw frames are saved by the library exactly as acquired whatever the
denoiser does. Fine-tuning failures are reported
and the session keeps acquiring with the backbone.

The adapted model replaces the backbone only when it is measurably better on *full frames* the fine-tune
never trained on (:data:`SWAP_MARGIN`): a held-out calibration pair in pairs mode, consecutive live
frames (Noise2Noise) in self mode; both models are scored identically, in the variance-stabilised units
of the backbone's fitted noise model. The fit's own masked/patch validation loss is not enough: it has
improved in runs whose full-image PSNR fell (5 photons: 21.67 -> 21.07 dB).
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from livedenoise.acquisition.advice import SessionFacts, keep_up_advice
from livedenoise.acquisition.backend import AcquisitionBackend, LiveRunInfo
from livedenoise.acquisition.calibration_set import calibration_set
from livedenoise.acquisition.display import DenoisedFrame, DenoiseWorker
from livedenoise.acquisition.pass_choice import PassChoice, effective_mode
from livedenoise.acquisition.phases import ShownFrame, display_phases
from livedenoise.acquisition.plans import CalibrationPair, Illumination, LivePlan, PairPlan
from livedenoise.acquisition.priority import YieldToDisplay
from livedenoise.acquisition.recorder import DenoisedWriter
from livedenoise.acquisition.status import SessionState, SessionStatus
from livedenoise.checkpoint import Checkpoint
from livedenoise.config import SessionSettings
from livedenoise.errors import ConfigError
from livedenoise.inference import DEFAULT_WINDOW, Denoiser
from livedenoise.metrics import score
from livedenoise.models import model_is_temporal
from livedenoise.noise_model import NoiseFit, fit_noise_model
from livedenoise.swap_check import SWAP_MARGIN, split_held_out, swap_scores
from livedenoise.training.finetune import FinetuneResult, finetune, match_intensity
from livedenoise.training.loop import FitProgress

log = logging.getLogger("livedenoise")

#: The live loop checks the output disk this often (seconds) and stops the acquisition, cleanly, when less
#: than DISK_RESERVE_BYTES or DISK_RESERVE_FRAMES raw+denoised frames' worth of space is left.
DISK_CHECK_S = 1.0
DISK_RESERVE_BYTES = 64 * 1024 * 1024
DISK_RESERVE_FRAMES = 50

SELF_HOLDOUT_FRAMES = 5
"""Self mode: live frames collected after the training frames and never trained on (4 consecutive pairs)."""
SELF_NOISE_FRAMES = 8
"""Self mode: at most this many consecutive live frames for the same-field (temporal) noise fit."""
RECORDER_FIT_WAIT_S = 5.0
"""Self mode: how long the (low-priority) recorder leaves a pending noise-model fit to the running display before it
fits itself, in seconds."""
RECORDER_OFFER_WAIT_S = 0.5
"""A 2-D model's recorder waits this long after a frame arrives for the display's result of it before denoising it
itself: the display takes 40-70 ms at 512² on 2 cores (a frame it skips is denoised by the recorder)."""


@dataclass
class SessionReport:
    """What a session achieved; printed by `livedenoise demo` and saved as JSON."""

    mode: str
    backend: str
    calibration_pairs: int = 0
    finetune: dict | None = None
    swapped_at_frame: int | None = None
    frames_acquired: int = 0
    frames_denoised: int = 0
    frames_dropped: int = 0
    frames_written: int = 0
    camera_fps: float = 0.0
    denoised_fps: float = 0.0
    mean_latency_ms: float = 0.0
    #: {"before fine-tuning"|"while fine-tuning"|"after fine-tuning": {seconds, camera_fps, denoised_fps,
    #: frames_dropped, mean_latency_ms, ...}}: the display shares the CPU with training only while fine-tuning
    display_phases: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)  # {"raw"|"backbone"|"adapted": {"psnr":..,"ssim":..}}
    display_quality: dict = field(default_factory=dict)  # PSNR of displayed frames before/after the swap
    #: PSNR of every 5th recorded denoised frame, by model, as display_quality (simulated microscope only)
    recorded_quality: dict = field(default_factory=dict)
    #: the temporal window of the recorded frames ([live] recorded_window), "" for a 2-D backbone
    recorded_window: str = ""
    #: a temporal display's way ([live] one_pass): {"mode", "one pass": frames, "two passes": frames, "switches":
    #: [{"frame", "to"}]}; empty for a 2-D backbone
    display_passes: dict = field(default_factory=dict)
    #: seconds the recorder took, once acquisition had stopped, to denoise and write the frames still waiting
    recorder_tail_s: float = 0.0
    #: what to change when the display could not keep up with the camera, or the recorder finished long after it
    #: (:mod:`livedenoise.acquisition.advice`); empty when all went well
    advice: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    paths: dict = field(default_factory=dict)
    noise_model: dict = field(default_factory=dict)  # NoiseFit.to_dict() of the backbone's normaliser
    # {"backbone", "adapted": held-out MSE (stabilised units), "margin", "held_out": pairs, "source", "swapped"}
    swap_criterion: dict = field(default_factory=dict)
    #: what was done to the references' fixed pattern (``FixedPatternRemoval.describe()``; empty in self mode)
    fixed_pattern: dict = field(default_factory=dict)
    interrupted: bool = False  # stopped early by interrupt() (Ctrl-C, SIGTERM): raw data kept and closed
    precision: str = ""  # the live denoiser's arithmetic ("fp32", "bf16", "fp16")
    compiled: bool = False  # the live network ran through torch.compile (asked for, and it compiled)


class LiveSession:
    """A calibrate -> fine-tune -> live session on any :class:`AcquisitionBackend`.

    Typical use (what ``livedenoise demo`` does)::

        session = LiveSession(backend, settings, "runs/demo", backbone=load_backbone("temporal"))
        report = session.run(frames_after_swap=100)
    """

    def __init__(self, backend: AcquisitionBackend, settings: SessionSettings, output_dir: str | Path, *,
                 backbone: Checkpoint, calibration=None, device: str = "auto",
                 on_status: Callable[[SessionStatus], None] | None = None,
                 on_frame: Callable[[DenoisedFrame], None] | None = None,
                 finetune_fn: Callable[..., FinetuneResult] = finetune, score_frames: int = 8) -> None:
        self.backend = backend
        self.settings = settings
        self.output_dir = Path(output_dir)
        self.backbone = backbone
        self.calibration = calibration
        self.device = device
        self._on_status = on_status
        self._on_frame = on_frame
        self._finetune_fn = finetune_fn
        self._score_frames = score_frames
        self.status = SessionStatus(model_name=backbone.name)
        from livedenoise.device import configure_cpu_threads, cpu_threads_available, select_device

        self._device_type = select_device(device).type
        if self._device_type == "cpu":
            # Fine-tuning and display denoising run in two threads at once; torch gives every calling thread
            # its own pool, so each gets half the cores (measured: 5-25x slower steps when oversubscribed).
            configure_cpu_threads(max(1, cpu_threads_available() // 2))
        self._lock = threading.RLock()
        self._stop_live = threading.Event()
        self._cancel_finetune = threading.Event()
        self._interrupted = threading.Event()
        self.denoiser: Denoiser | None = None
        self.backbone_normalized: Checkpoint | None = None
        self.noise_fit: NoiseFit | None = None
        self.swap_criterion: dict = {}
        self._fit_lock = threading.Lock()  # noise-model fits (denoise threads, fine-tune thread); never _on_raw
        self._swap_lock = threading.Lock()  # which model the denoiser shows
        self._same_field_fitted = False
        self.adapted: Checkpoint | None = None
        self.finetune_result: FinetuneResult | None = None
        self._yield_to_display: YieldToDisplay | None = None  # the fine-tune's waits for the display (on a CPU)
        self.pairs: list[CalibrationPair] = []
        self._self_frames: list[np.ndarray] = []
        self._score_bank: list[tuple[np.ndarray, np.ndarray]] = []
        self.fixed_pattern: dict = {}  # what finetune_on did to the calibration references' fixed pattern
        self._display_psnr: dict[str, list[float]] = {"backbone": [], "adapted": []}
        self._recorded_psnr: dict[str, list[float]] = {"backbone": [], "adapted": []}  # of the recorder's frames
        self._recorded_count = 0
        self._recorder_tail_s = 0.0
        self._shown: list[ShownFrame] = []  # every denoised frame the display showed: latencies and phases
        self._acquired_at: list[float] = []  # perf_counter of every live camera frame
        self._finetune_span: tuple[float, float | None] | None = None
        self._live_ended = 0.0
        self._finetune_thread: threading.Thread | None = None
        self._live_thread: threading.Thread | None = None
        self._live_info: LiveRunInfo | None = None
        self._worker: DenoiseWorker | None = None
        self._passes = self._pass_choice()  # how a temporal display denoises, frame by frame
        self._writer: DenoisedWriter | None = None
        self._frames_after_swap: int | None = None
        self._max_frames: int | None = None
        self._live_started = 0.0
        self._frame_shape: tuple[int, int] | None = None  # (height, width) of the latest live frame
        self.swapped_at_frame: int | None = None
        self.adapted_saved = False

    # -- status ------------------------------------------------------------------------------------
    def _set(self, **changes) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self.status, k, v)
            snapshot = SessionStatus(**{**self.status.__dict__, "errors": list(self.status.errors)})
        if self._on_status is not None:
            try:
                self._on_status(snapshot)
            except Exception:
                log.exception("status callback failed")

    def _error(self, message: str) -> None:
        log.error(message)
        with self._lock:
            self.status.errors.append(message)
        self._set(message=message)

    @property
    def state(self) -> SessionState:
        return self.status.state

    # -- calibration -------------------------------------------------------------------------------
    def _low(self) -> Illumination:
        """The live illumination: ``[live]`` ``exposure_ms`` / ``light_power`` where set, else the microscope's own
        exposure (``backend.current_illumination``) with the light left as it is."""
        live = self.settings.live
        own = self.backend.current_illumination()
        exposure = live.exposure_ms if live.exposure_ms is not None else (own.exposure_ms if own is not None else None)
        if exposure is None:
            raise ConfigError("the live exposure is unknown: this microscope does not report one; "
                              "set [live] exposure_ms")
        controls_light = bool(getattr(self.backend, "controls_light", False))
        if live.light_power is not None and not controls_light:
            raise ConfigError(f"[live] light_power = {live.light_power:g} is set, but livedenoise has no control of "
                              "this microscope's light (give the backend a light control, or unset light_power to "
                              "leave the light as it is)")
        power = live.light_power if live.light_power is not None else (own.power if own is not None else None)
        if power is None and live.mode == "pairs" and live.reference == "power":
            raise ConfigError("reference 'power' sets the light for each reference and back to the live level after "
                              "it, so the live level must be known: set [live] light_power (percent)")
        return Illumination(float(exposure), power)

    def calibrate(self) -> list[CalibrationPair]:
        """Acquire low/high-SNR pairs at ``calibration_positions`` stage positions (pairs mode)."""
        live = self.settings.live
        self._set(state=SessionState.CALIBRATING, message=f"collecting {live.calibration_positions} calibration pairs")
        low = self._low()
        if live.reference == "exposure":
            high = Illumination(live.reference_exposure_ms, low.power)
        elif live.reference == "power":
            high = Illumination(low.exposure_ms, live.reference_power)
        else:
            high = low
        spacing, why = self.backend.calibration_spacing_um(live.position_spacing_um)
        log.info("calibration fields %.1f µm apart (%s)", spacing, why)
        positions = self.backend.spread_positions(live.calibration_positions, spacing)
        plan = PairPlan(positions, low, high, live.reference, live.reference_average)
        self.pairs = self.backend.acquire_pairs(plan, self.output_dir)
        self._prepare_backbone([p.low for p in self.pairs])
        if self.denoiser is not None and self.denoiser.compiled:  # before live: its first frame must not wait
            shape = self.pairs[0].low.shape[-2:]
            self._set(message=f"compiling the network for {shape[1]}x{shape[0]} frames (once)")
            self.denoiser.warmup(shape)
        self._set(message=f"{len(self.pairs)} calibration pairs collected")
        return self.pairs

    def _prepare_backbone(self, frames: list[np.ndarray], *, same_field: bool = False) -> None:
        """The backbone with a normaliser fitted to this experiment's frames (noise level, offset).

        ``same_field``: the frames are repeated acquisitions of one field (self mode's live frames), so the
        noise is measured from temporal differences; calibration pairs are at different positions (False).
        """
        fit = fit_noise_model(frames, like=self.backbone.normalizer, calibration=self.calibration,
                              same_field=same_field)
        ckpt = self.backbone.clone()
        ckpt.normalizer = fit.normalizer
        with self._swap_lock:
            self.noise_fit = fit
            self.backbone_normalized = ckpt
            if self.denoiser is None:
                self.denoiser = Denoiser(ckpt, device=self.device, precision=self.settings.live.precision,
                                         second_pass=self.settings.live.second_pass,
                                         compiled=self.settings.live.compiled)
            elif self.adapted is None:  # never replace an adapted model already on display
                self.denoiser.swap(ckpt)
        log.info("%s", fit.describe())
        for w in fit.warnings:
            log.warning("noise model: %s", w)
            self._set(message=f"noise model: {w}")

    def _wants_same_field_fit(self) -> bool:
        return (self.settings.live.mode == "self" and not self._same_field_fitted and self.calibration is None
                and len(self._self_frames) >= 2)

    def _fit_from_live(self, raw: np.ndarray | None = None) -> None:
        """Self mode: fit on the first frame (display starts at once), refit on 2+ consecutive frames as soon
        as they exist. Runs in denoise/fine-tune threads, never in the acquisition callback."""
        with self._fit_lock:
            if self._wants_same_field_fit():
                self._same_field_fitted = True
                frames = list(self._self_frames[:SELF_NOISE_FRAMES])
                try:
                    self._prepare_backbone(frames, same_field=True)
                    return
                except Exception as exc:
                    log.warning("same-field noise fit on %d live frames failed: %s", len(frames), exc)
                    self._set(message=f"noise model: same-field fit failed ({exc}); keeping the single-frame fit")
            if self.denoiser is None and raw is not None:
                self._prepare_backbone([raw])

    # -- fine-tuning -------------------------------------------------------------------------------
    def start_finetune(self, noisy: list[np.ndarray], clean: list[np.ndarray] | None, *,
                       held_out: list[tuple[np.ndarray, np.ndarray]] | None = None, source: str | None = None) -> None:
        """Fine-tune in a background thread; the adapted model is hot-swapped in when it finishes, if it beats
        the backbone on held-out full frames (see :data:`SWAP_MARGIN`).

        ``held_out``: (input, target) frame pairs never trained on, to score both models. When None: with 3 or
        more calibration pairs (``clean`` given) the last pair is kept out of the fine-tune and scored; with
        fewer, the pairs' bottom rows, which the fine-tune never trains on; self mode scores consecutive training
        frames (:func:`~livedenoise.swap_check.split_held_out`).
        """
        if self._finetune_thread is not None and self._finetune_thread.is_alive():
            raise RuntimeError("fine-tuning is already running")
        noisy = list(noisy)
        clean = list(clean) if clean is not None else None
        if held_out is not None:
            source = source or ("calibration pairs not used for training" if clean is not None
                                else "consecutive live frames not used for training")
        else:
            split = split_held_out(noisy, clean, self.settings.training.validation_fraction)
            noisy, clean, held_out, source = split.noisy, split.clean, split.pairs, split.source
        self._cancel_finetune.clear()
        self._set(state=SessionState.FINE_TUNING if self._live_thread else self.status.state,
                  finetune_progress=0.0, finetune_loss=None, message="fine-tuning in the background")
        thread = threading.Thread(target=self._finetune_job, args=(noisy, clean, held_out, source),
                                  name="livedenoise-finetune", daemon=True)
        self._finetune_span = (time.perf_counter(), None)  # before it runs: no sliver of a phase "before" it
        thread.start()
        # Published only once running: run() takes a published thread that is not alive for a fine-tune that ended
        # without adapting, and stops imaging soon after; seen between creation and start (a self-mode fine-tune
        # starts from the acquisition thread), it cancelled the fine-tune before its first step (a CI failure).
        self._finetune_thread = thread

    def finetune_on(self, pairs: list[CalibrationPair]) -> None:
        """Fine-tune in the background on calibration pairs (from :meth:`calibrate`), as :meth:`run` does
        (:func:`~livedenoise.acquisition.calibration_set.calibration_set`): the camera's fixed pattern taken out of
        the references (``[live] remove_fixed_pattern``; the calibration fields are ``position_spacing_um`` apart,
        and the removal checks that they differ), and for a temporal backbone the swap decided on the last field's
        live-setting frames fused. :meth:`start_finetune` uses pairs as they are."""
        if not pairs:
            raise ValueError("no calibration pairs to fine-tune on")
        maps_fit = self.calibration is not None and tuple(self.calibration.shape) == tuple(np.shape(pairs[0].high))
        removing = self.settings.live.remove_fixed_pattern and not maps_fit
        cal = calibration_set(pairs, temporal=model_is_temporal(self.backbone.model), remove_pattern=removing,
                              saturation=self.backbone.normalizer.saturation,
                              kept_because=("[live] remove_fixed_pattern is off"
                                            if not self.settings.live.remove_fixed_pattern else
                                            "the camera calibration's per-pixel maps already take the pattern out"))
        self.fixed_pattern = cal.fixed_pattern
        log.info("calibration references: fixed pattern %s", cal.fixed_pattern["note"])
        self.start_finetune(cal.noisy, cal.clean, held_out=cal.held_out, source=cal.source)

    def _held_out_targets(self, held_out: list[tuple[np.ndarray, np.ndarray]], supervised: bool
                          ) -> list[tuple[np.ndarray, np.ndarray]]:
        """References on the live frame's intensity scale (brighter references mapped as the fine-tune does)."""
        if not supervised or self.settings.live.reference == "average":
            return held_out
        return [(x, match_intensity(t, x[-1] if x.ndim == 3 else x)) for x, t in held_out]

    def _swap_scores(self, adapted: Checkpoint, held_out: list[tuple[np.ndarray, np.ndarray]],
                     noisy_targets: bool) -> tuple[float, float]:
        """(backbone, adapted) mean full-frame MSE on ``held_out`` in the backbone's stabilised units;
        ``noisy_targets``: each target is one live frame (self mode; :func:`~livedenoise.swap_check.held_out_mse`)."""
        backbone = self.backbone_normalized
        if backbone is None:
            raise RuntimeError("the backbone has no fitted noise model yet")
        # scored with two passes also for a display in one pass, which runs the backbone's 2-D stage on its averages:
        # there the adaptation changes the recorded frames (their first pass), hardly the display
        b, a, _ = swap_scores(backbone, adapted, held_out, device=self.device, noisy_targets=noisy_targets,
                              second_pass=self.settings.live.second_pass)
        return b, a

    def _finetune_job(self, noisy: list[np.ndarray], clean: list[np.ndarray] | None,
                      held_out: list[tuple[np.ndarray, np.ndarray]], source: str) -> None:
        started = time.perf_counter()
        try:
            self._finetune_and_swap(noisy, clean, held_out, source, started)
        finally:
            self._finetune_span = (self._finetune_span or (started, None))[0], time.perf_counter()

    def _finetune_and_swap(self, noisy: list[np.ndarray], clean: list[np.ndarray] | None,
                           held_out: list[tuple[np.ndarray, np.ndarray]], source: str, started: float) -> None:

        def progress(p: FitProgress) -> None:
            self._set(finetune_progress=p.fraction, finetune_loss=p.best_val_loss,
                      finetune_elapsed_s=time.perf_counter() - started)

        # the display comes first: between steps, wait while it denoises a frame (up to a share of the time); on a
        # CPU, where they share the cores (measured there only)
        self._yield_to_display = (YieldToDisplay(lambda: self._worker, self.settings.live.finetune_yield_share)
                                  if self._device_type == "cpu" else None)
        try:
            # An average of frames at the live settings has the live frame's expected value exactly: matching its
            # intensity could only add estimation noise to the targets (brighter references need it).
            result = self._finetune_fn(
                self.backbone, noisy, clean, calibration=self.calibration,
                training=self.settings.finetune_training(self._device_type),
                time_budget_s=self.settings.live.finetune_time_budget_s, device=self.device,
                progress=progress, cancel=self._cancel_finetune, name=f"{self.backbone.name}+{self.settings.live.mode}",
                match_reference=self.settings.live.reference != "average",
                pause=self._yield_to_display)
        except Exception as exc:
            self._error(f"fine-tuning failed, continuing with the backbone: {exc.__class__.__name__}: {exc}")
            self._set(state=SessionState.LIVE if not self._stop_live.is_set() else self.status.state)
            return
        if self._cancel_finetune.is_set() and result.fit.stopped == "cancelled" and self._stop_live.is_set():
            return
        self.finetune_result = result
        live_state = lambda: SessionState.LIVE if not self._stop_live.is_set() else self.status.state  # noqa: E731
        crit = {"backbone": None, "adapted": None, "margin": SWAP_MARGIN, "held_out": len(held_out),
                "source": source, "swapped": False}
        self.swap_criterion = crit
        if not result.adapted:  # 0 steps, or the initial weights kept: the backbone itself, not an adapted model
            f = result.fit
            crit["reason"] = f"not adapted: {f.not_adapted_reason()}"
            self._set(state=live_state(), finetune_progress=1.0,
                      message=f"not adapted: {f.not_adapted_reason()}; keeping the backbone")
            return
        try:
            if clean is None:
                self._fit_from_live()  # the same-field noise fit, if the display has not done it yet
            with self._fit_lock:
                if self.backbone_normalized is None:  # nothing displayed yet: fit on the training frames
                    self._prepare_backbone(noisy, same_field=clean is None and len(noisy) >= 2)
            b_mse, a_mse = self._swap_scores(result.checkpoint, self._held_out_targets(held_out, clean is not None),
                                             noisy_targets=clean is None)
        except Exception as exc:
            crit["reason"] = f"scoring failed: {exc.__class__.__name__}: {exc}"
            self._error(f"could not score the adapted model on held-out frames, keeping the backbone: "
                        f"{exc.__class__.__name__}: {exc}")
            self._set(state=live_state(), finetune_progress=1.0)
            return
        crit.update(backbone=b_mse, adapted=a_mse)
        if not a_mse < b_mse * (1.0 - SWAP_MARGIN):
            crit["reason"] = "adapted model not better on held-out frames"
            self._set(state=live_state(), finetune_progress=1.0,
                      message=f"adapted model not better on held-out frames (MSE {a_mse:.4g} vs {b_mse:.4g}); "
                              "keeping the backbone")
            return
        crit["swapped"] = True
        saved = ""
        try:
            result.checkpoint.save(self.output_dir / "adapted-model.safetensors")
            self.adapted_saved = True
        except Exception as exc:
            saved = f"; NOT saved to disk ({exc.__class__.__name__}: {exc})"
            self._error(f"could not save the adapted model: {exc}")
        with self._swap_lock:
            self.adapted = result.checkpoint
            if self.denoiser is not None:
                self.denoiser.swap(self.adapted)
        with self._lock:
            self.swapped_at_frame = self.status.frames_acquired
        self._set(state=SessionState.LIVE if not self._stop_live.is_set() else self.status.state, adapted=True,
                  model_name=self.adapted.name, finetune_progress=1.0,
                  message=f"adapted model swapped in at frame {self.swapped_at_frame} (held-out MSE "
                          f"{a_mse:.4g} vs backbone {b_mse:.4g}){saved}")

    def show_adapted(self, adapted: bool) -> None:
        """Compare toggle: display the backbone or the adapted model (when there is one)."""
        if self.denoiser is None:
            return
        target = self.adapted if adapted and self.adapted is not None else self.backbone_normalized
        if target is not None:
            self.denoiser.swap(target)
            self._set(model_name=target.name)

    # -- live --------------------------------------------------------------------------------------
    def _on_raw(self, image: np.ndarray, axes: dict) -> None:
        """Called from the acquisition thread for every frame: hand over, never wait."""
        raw = np.array(image, copy=True)
        self._frame_shape = (int(raw.shape[-2]), int(raw.shape[-1]))
        self._acquired_at.append(time.perf_counter())
        with self._lock:
            self.status.frames_acquired += 1
            n = self.status.frames_acquired
        if self._worker is not None:
            self._worker.submit(raw, {"axes": axes, "index": n})
        if self._writer is not None:
            self._writer.submit(axes, raw)
        live = self.settings.live
        if live.mode == "self" and self.adapted is None and self._finetune_thread is None:
            # Hand-over only: the noise fits on these frames run in the denoise and fine-tune threads.
            self._self_frames.append(raw)
            n_train = max(1, live.self_supervised_frames)
            if len(self._self_frames) >= n_train + SELF_HOLDOUT_FRAMES:
                hold = self._self_frames[n_train:n_train + SELF_HOLDOUT_FRAMES]
                self.start_finetune(self._self_frames[:n_train], None,
                                    held_out=[(hold[i], hold[i + 1]) for i in range(len(hold) - 1)])
        if n % 10 == 0 and len(self._score_bank) < 4 * self._score_frames:
            truth = self.backend.ground_truth(raw)
            if truth is not None:
                self._score_bank.append((raw, truth))
        stop_after = None
        with self._lock:
            if self._frames_after_swap is not None and self.swapped_at_frame is not None:
                stop_after = self.swapped_at_frame + self._frames_after_swap
        if (stop_after is not None and n >= stop_after) or (self._max_frames is not None and n >= self._max_frames):
            self._stop_live.set()

    def _on_denoised(self, frame: DenoisedFrame) -> None:
        if (frame.denoised is not None and self._writer is not None
                and not (self.denoiser and self.denoiser.is_temporal)):
            # Reuse saves a second pass for 2-D models; a temporal model's recorder fuses every frame in order, with
            # its own window (the display's window skips the frames it dropped), reusing the 2-D results the
            # display computed (Denoiser.push shares them by frame content).
            self._writer.offer_denoised(frame.info.get("axes", {}), frame.denoised)
        if frame.denoised is not None:
            w = self._worker
            self._shown.append(ShownFrame(frame.acquired_at, frame.latency_s, w.stats.dropped if w else 0))
            # Display quality on every 5th frame, PSNR only: this runs per frame, next to acquisition.
            if len(self._shown) % 5 == 1:
                assert frame.raw is not None  # a denoised frame has its pixels
                truth = self.backend.ground_truth(frame.raw)
                if truth is not None:
                    key = ("adapted" if self.adapted is not None and frame.model_name == self.adapted.name
                           else "backbone")
                    self._display_psnr[key].append(_psnr(truth, frame.denoised))
        elif frame.error:
            with self._lock:
                if len(self.status.errors) < 20:
                    self.status.errors.append(f"denoising: {frame.error}")
        if self._on_frame is not None:
            self._on_frame(frame)
        w = self._worker
        elapsed = time.perf_counter() - self._live_started
        self._set(frames_denoised=w.stats.denoised if w else 0, frames_dropped=w.stats.dropped if w else 0,
                  camera_fps=self.status.frames_acquired / elapsed if elapsed > 0 else 0.0,
                  denoised_fps=w.stats.fps if w else 0.0, latency_ms=frame.latency_s * 1000,
                  frames_written=self._writer.written if self._writer else 0)

    def start_live(self, *, max_frames: int | None = None, frames_after_swap: int | None = None) -> None:
        """Start live acquisition in the background (returns at once)."""
        self._stop_live.clear()
        self._shown, self._acquired_at, self._live_ended = [], [], 0.0  # a new live run: phases of its own
        self._max_frames = max_frames
        self._frames_after_swap = frames_after_swap
        self._passes = self._pass_choice()  # a temporal display's way, frame by frame: a new live run measures anew
        self._worker = DenoiseWorker(self._denoise_current, self._on_denoised,
                                     model_name=lambda: self.denoiser.name if self.denoiser else "").start()
        if self.settings.live.save_denoised:
            self._writer = DenoisedWriter(self._denoise_recorded, self.output_dir, "denoised",
                                          read_raw=self.backend.read_raw,
                                          summary_metadata={"backbone": self.backbone.name},
                                          output_format=self.settings.live.denoised_format,
                                          # a 2-D model's display hands its results over (_on_denoised): wait for them
                                          offer_wait_s=0.0 if model_is_temporal(self.backbone.model)
                                          else RECORDER_OFFER_WAIT_S,
                                          lookahead=self._recorder_lookahead(),
                                          inspect=self._score_recorded,
                                          on_closing=self._recorder_takes_every_core).start()
        plan = LivePlan(self._low(), self.settings.live.interval_ms)
        self._live_started = time.perf_counter()
        state = (SessionState.FINE_TUNING if (self._finetune_thread and self._finetune_thread.is_alive())
                 else SessionState.LIVE)
        self._set(state=state, message="live")
        self._live_thread = threading.Thread(target=self._live_job, args=(plan,), name="livedenoise-live", daemon=True)
        self._live_thread.start()

    def _pass_choice(self) -> PassChoice:
        live = self.settings.live
        return PassChoice(effective_mode(live.one_pass, live.second_pass), on_switch=self._display_changed_way)

    def _display_changed_way(self) -> None:
        """The display went to one pass or back (in its own thread): the fine-tune's waits judge its new pace."""
        if self._worker is not None:
            self._worker.stats.ways += 1

    def _denoise_current(self, raw: np.ndarray, info: dict | None = None) -> np.ndarray:
        if self.denoiser is None or self._wants_same_field_fit():
            # Self-supervised mode: the backbone's normaliser is fitted on the first frame (display starts at
            # once), then refitted from consecutive frames of the same field (temporal differences) as soon as
            # two exist -- here in a worker thread rather than in the acquisition thread.
            self._fit_from_live(raw)
        denoiser = self.denoiser
        assert denoiser is not None  # set by _fit_from_live, or it raised
        # temporal models: a window of the last frames shown, in two passes while the display keeps up with the
        # camera and one pass while it falls behind ([live] one_pass, livedenoise.acquisition.pass_choice)
        return self._passes.push(denoiser, raw, "display", info or {})

    def _recorder_takes_every_core(self) -> None:
        """Called in the recorder's thread once acquisition has stopped: the display and the fine-tune have ended, so
        on a CPU the frames still waiting get every core (torch counts threads per calling thread; while acquiring,
        each of the two threads that denoise has half of them)."""
        if self._device_type == "cpu":
            import torch

            from livedenoise.device import cpu_threads_available

            torch.set_num_threads(cpu_threads_available())

    def _recorder_lookahead(self) -> int:
        """Frames after each recorded one that its temporal window takes (``[live] recorded_window``): 0 for a 2-D
        backbone or a causal window, else the frames on each side of the window's centre."""
        model = self.backbone.model
        if not model_is_temporal(model) or self.settings.live.recorded_window == "causal":
            return 0
        return max(int(getattr(model, "window", DEFAULT_WINDOW)) - 1, 0)

    def _denoise_recorded(self, raw: np.ndarray, axes: dict | None = None,
                          following: Sequence[np.ndarray] = ()) -> np.ndarray:
        """The recorder's denoising: every frame in order, with its own temporal window (the display may skip
        frames), centred on it where ``following`` holds the frames acquired after it. The recorder runs at a lower
        priority (:mod:`livedenoise.acquisition.priority`), so it leaves the noise-model fit to the display while the
        display runs: holding the fit's lock at a low priority would keep the display waiting behind it."""
        deadline = time.monotonic() + RECORDER_FIT_WAIT_S
        while ((self.denoiser is None or self._wants_same_field_fit()) and self._worker is not None
               and self._worker.running and time.monotonic() < deadline):
            time.sleep(0.02)
        if self.denoiser is None or self._wants_same_field_fit():
            self._fit_from_live(raw)
        denoiser = self.denoiser
        assert denoiser is not None  # set by _fit_from_live, or it raised
        # a causal recorded window records as the display shows (in one pass too); a centred one never in one pass,
        # also where a series' last frames have no following ones
        causal_one_pass = self.settings.live.one_pass is True and self.settings.live.recorded_window == "causal"
        return denoiser.push(raw, stream="recorder", following=following, one_pass=causal_one_pass)

    def _score_recorded(self, raw: np.ndarray, out: np.ndarray) -> None:
        """PSNR of every 5th recorded frame against the simulated microscope's ground truth (nothing on hardware),
        by the model in use when it was written (the adapted one from the swap on), as the display's frames are
        scored."""
        self._recorded_count += 1
        if self._recorded_count % 5 != 1:
            return
        truth = self.backend.ground_truth(raw)
        if truth is not None:
            denoiser = self.denoiser
            key = ("adapted" if self.adapted is not None and denoiser is not None
                   and denoiser.name == self.adapted.name else "backbone")
            self._recorded_psnr[key].append(_psnr(truth, out))

    def _live_job(self, plan: LivePlan) -> None:
        try:
            # The backend queues at most max_frames: stopping from the frame callback alone lets a frame already
            # in flight through (41 of 40).
            self._live_info = self.backend.run_live(plan, self._on_raw, self._stop_live, self.output_dir,
                                                    max_frames=self._max_frames)
        except Exception as exc:
            self._error(f"acquisition failed: {exc.__class__.__name__}: {exc}")
            self._set(state=SessionState.FAILED)
        finally:
            self._live_ended = time.perf_counter()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the live acquisition to end (it ends by ``stop()``, frame limits, or an error)."""
        if self._live_thread is not None:
            self._live_thread.join(timeout)
            return not self._live_thread.is_alive()
        return True

    def interrupt(self) -> None:
        """Ask a running :meth:`run` to end early, cleanly: safe from a signal handler or another thread.

        The live acquisition is stopped through its own stop event (so the camera stops first and the raw
        dataset is closed and readable), fine-tuning is cancelled, and ``run`` returns the report of what was
        done with ``interrupted`` set. Calibration in progress finishes its current position first.
        """
        self._interrupted.set()
        self._cancel_finetune.set()
        self._stop_live.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupted.is_set()

    def _disk_nearly_full(self) -> bool:
        """True (and the session interrupted, with one error line) when the output disk is about to fill.

        Why: on a full disk the acquisition's saving thread fails (ENOSPC) and the session hung with the raw
        dataset never closed. Stopping while there is still room keeps every frame acquired so far readable.
        """
        try:
            free = shutil.disk_usage(self.output_dir).free
        except OSError:
            return False
        pixels = self._frame_shape[0] * self._frame_shape[1] if self._frame_shape else 0  # the reserve scales with it
        reserve = max(DISK_RESERVE_BYTES, DISK_RESERVE_FRAMES * pixels * 4)
        if free >= reserve:
            return False
        self._error(f"the output disk is nearly full ({free / 1e6:.0f} MB free in {self.output_dir}): acquisition was "
                    "stopped so that the raw frames saved so far stay complete and readable")
        self.interrupt()
        return True

    def stop(self, *, wait_for_finetune: bool = False) -> SessionReport:
        """Stop acquisition, cancel fine-tuning unless asked to wait, flush the writer, and report."""
        self._stop_live.set()
        self.wait()
        if self._finetune_thread is not None:
            if not wait_for_finetune:
                self._cancel_finetune.set()
            self._finetune_thread.join()
        if self._worker is not None:
            self._worker.drain()
            self._worker.stop()
        if self._writer is not None:
            started = time.perf_counter()
            self._writer.finish(progress=True)
            self._recorder_tail_s = time.perf_counter() - started
            self.status.errors.extend(self._writer.errors)
        if self.status.state != SessionState.FAILED:
            self._set(state=SessionState.STOPPED, message=(
                f"acquisition ended after {self.status.frames_acquired} frames"
                + (f"; {self._writer.written} denoised frames recorded" if self._writer is not None else "")))
        return self.report()

    # -- the whole session -------------------------------------------------------------------------
    def run(self, *, frames_after_swap: int | None = None, max_frames: int | None = None) -> SessionReport:
        """Calibrate (pairs mode) -> go live with the backbone -> fine-tune in the background -> swap -> stop."""
        live = self.settings.live
        frames_after_swap = live.frames if frames_after_swap is None else frames_after_swap
        if live.mode == "pairs":
            pairs = self.calibrate()
            if self.interrupted:
                return self.stop(wait_for_finetune=False)
            self.finetune_on(pairs)
        if self.interrupted:
            return self.stop(wait_for_finetune=False)
        self.start_live(frames_after_swap=frames_after_swap, max_frames=max_frames)
        if self.interrupted:  # arrived while live was starting (start_live clears the stop event)
            self._stop_live.set()
        next_disk_check = 0.0
        while not self._stop_live.is_set():
            if self._live_thread is not None and not self._live_thread.is_alive():
                break
            if time.monotonic() >= next_disk_check:
                next_disk_check = time.monotonic() + DISK_CHECK_S
                if self._disk_nearly_full():
                    break
            ft = self._finetune_thread
            if (self.status.state != SessionState.FAILED and ft is not None and not ft.is_alive()
                    and self.adapted is None):
                # Fine-tuning failed: keep imaging the requested number of frames with the backbone.
                with self._lock:
                    self.swapped_at_frame = self.swapped_at_frame or self.status.frames_acquired
            time.sleep(0.05)
        return self.stop(wait_for_finetune=False)

    def report(self) -> SessionReport:
        w = self._worker
        info = self._live_info
        rep = SessionReport(mode=self.settings.live.mode, backend=self.backend.describe(),
                            calibration_pairs=len(self.pairs),
                            finetune=self._finetune_record(),
                            swapped_at_frame=self.swapped_at_frame if self.adapted is not None else None,
                            frames_acquired=self.status.frames_acquired,
                            frames_denoised=w.stats.denoised if w else 0, frames_dropped=w.stats.dropped if w else 0,
                            frames_written=self._writer.written if self._writer else 0,
                            camera_fps=info.fps if info else 0.0,
                            denoised_fps=(w.stats.denoised / info.seconds) if (w and info and info.seconds) else 0.0,
                            mean_latency_ms=(float(np.mean([f.latency_s for f in self._shown]) * 1000)
                                             if self._shown else 0.0),
                            display_phases=self._display_phases(),
                            errors=list(self.status.errors),
                            noise_model=self.noise_fit.to_dict() if self.noise_fit is not None else {},
                            swap_criterion=dict(self.swap_criterion), fixed_pattern=dict(self.fixed_pattern),
                            interrupted=self.interrupted,
                            precision=self.denoiser.precision if self.denoiser is not None else "",
                            compiled=(self.denoiser is not None and self.denoiser.compiled
                                      and self.denoiser.compile_failure is None))
        rep.paths = {"output": str(self.output_dir), "raw": str(info.raw_path) if info and info.raw_path else None,
                     "denoised": str(self._writer.path) if self._writer and self._writer.path else None,
                     "adapted_model": (str(self.output_dir / "adapted-model.safetensors") if self.adapted_saved
                                       else None)}
        rep.quality = self.score_models()
        rep.display_quality = {k: float(np.mean(v)) if v else None for k, v in self._display_psnr.items()}
        rep.display_quality.update({f"{k}_frames": len(v) for k, v in self._display_psnr.items()})
        rep.recorded_quality = {k: float(np.mean(v)) if v else None for k, v in self._recorded_psnr.items()}
        rep.recorded_quality.update({f"{k}_frames": len(v) for k, v in self._recorded_psnr.items()})
        rep.recorded_window = self.settings.live.recorded_window if model_is_temporal(self.backbone.model) else ""
        rep.recorder_tail_s = self._recorder_tail_s
        if self.denoiser is not None and self.denoiser.is_temporal:
            rep.display_passes = self._passes.summary()
        rep.advice = keep_up_advice(rep.display_phases, self._facts(), self._recorder_tail_s, self._frame_shape)
        return rep

    def _finetune_record(self) -> dict | None:
        """The fine-tune's summary for the report, with ``stopped_waiting``: True when it stopped waiting for the
        display (which skipped more than :data:`~livedenoise.acquisition.priority.GIVE_UP_SKIPPED` of its frames in
        two windows in a row although it waited), False when it waited throughout, None when it never waited (not on a
        CPU); and ``display_skipped``: the share of its frames the display skipped in each window judged, in order."""
        if self.finetune_result is None:
            return None
        hook = self._yield_to_display
        return self.finetune_result.fit.to_dict() | {
            "stopped_waiting": None if hook is None else hook.gave_up,
            "display_skipped": None if hook is None else [round(s, 3) for s in hook.skipped_shares]}

    def _facts(self) -> SessionFacts:
        """What the end-of-session advice depends on."""
        from livedenoise.device import cpu_has_bf16_matrix_units

        return SessionFacts(backbone=self.backbone.name, temporal=model_is_temporal(self.backbone.model),
                            second_pass=self.settings.live.second_pass, one_pass=self.settings.live.one_pass,
                            precision=self.denoiser.precision if self.denoiser is not None else "",
                            device=self._device_type, bf16_units=cpu_has_bf16_matrix_units())

    def _display_phases(self) -> dict[str, dict]:
        if not self._live_started:
            return {}
        end = self._live_ended or time.perf_counter()
        return display_phases(list(self._shown), list(self._acquired_at), (self._live_started, end),
                              self._finetune_span)

    def score_models(self) -> dict:
        """PSNR/SSIM against ground truth (simulated microscope) of raw, backbone and adapted on held frames."""
        if not self._score_bank or self.backbone_normalized is None:
            return {}
        idx = np.linspace(0, len(self._score_bank) - 1, min(self._score_frames, len(self._score_bank))).astype(int)
        bank = [self._score_bank[i] for i in idx]
        models = {"backbone": self.backbone_normalized}
        if self.adapted is not None:
            models["adapted"] = self.adapted
        out: dict = {"frames": len(bank)}
        out["raw"] = _mean_scores([score(t, r.astype(np.float32)) for r, t in bank])
        for name, ckpt in models.items():
            den = Denoiser(ckpt, device=self.device, precision=self.settings.live.precision,  # as displayed
                           second_pass=self.settings.live.second_pass)
            out[name] = _mean_scores([score(t, den.denoise(r)) for r, t in bank])
        return out


def _psnr(truth: np.ndarray, image: np.ndarray) -> float:
    """PSNR after the same normalisation as :func:`livedenoise.metrics.score`, without the costly SSIM."""
    from skimage.metrics import peak_signal_noise_ratio

    from livedenoise.metrics import normalize_pair

    ref, img = normalize_pair(truth, image)
    return float(peak_signal_noise_ratio(ref, img, data_range=float(ref.max() - ref.min()) or 1.0))


def _mean_scores(scores: list) -> dict:
    return {"psnr": float(np.mean([s.psnr for s in scores])), "ssim": float(np.mean([s.ssim for s in scores]))}
