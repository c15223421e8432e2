"""The papers' experiments, on the simulator or on real pairs, with one report (``livedenoise evaluate``).

What is reproduced (see ``../shared/papers``):

* **Wang et al.** (self-supervised transfer learning): transfer (pretrained backbone + Noise2Self)
  vs Noise2Self from scratch vs supervised, across peak signals (Fig. 1c/2: MSE, SSIM, mean FRC);
  rerun stability over seeds (error bars); self-supervised training-set size 1..50 (Fig. 3);
  L1 vs L2 loss (Fig. 4).
* **CNNT** (Rehman et al.): fine-tuning the backbone with 5/10/20 low/high pairs vs training on
  them from scratch, and robustness across input SNR by averaging 1..64 frames (Fig. 5).

How the simulated tasks are made, and why: a task is one sample type (default filaments, like the
papers' microtubules) on a virtual slide, imaged by a camera whose per-pixel maps the backbone never
saw, at a chosen peak signal in photons. Training images, calibration pairs and test images are
different fields of that slide (test fields come from a band of the slide no training field
touches), so no method is scored on the structure it was trained on. The clean image of a pair is
the mean of ``reference_average`` exposures (CNNT's "average 64" ground truth). Every simulated
score is computed twice: against the simulator's noise-free expected image, which contains the
camera's fixed pattern (per-pixel offset, gain and dark current: averaging frames keeps it, a
spatial denoiser smooths it away), and against the same expected photoelectrons through the
camera's *median* offset, gain and dark current (``*_flat`` columns: the sample alone).

Every trained method records its steps, the step whose weights it kept (``best_step``), why it
stopped and whether it changed the weights at all (``adapted``): a fit that ran 0 steps or kept its
initial weights is labelled so in the report, never shown as a trained result. ``scratch`` (and
``pairs-scratch``) trains a randomly initialised network at the pretraining learning rate with its
own, larger budget until early stopping (``scratch_*`` settings); the report says when it stopped
for another reason and makes no transfer-vs-scratch claim for those settings. Everything is seeded: a seed picks the fields, the noise and
the training randomness; fields are the same at every peak (as in the papers, where one image set
was rescaled to each peak).

Every method is scored by the same code (:func:`livedenoise.metrics.score`, with FRC), and every
model is applied through the product's own :class:`~livedenoise.inference.Denoiser`.
Fits are cached by what defines them, so experiments that share a configuration share the fit.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from livedenoise.checkpoint import Checkpoint
from livedenoise.config import TrainingConfig
from livedenoise.errors import ConfigError, InputDataError
from livedenoise.metrics import score

log = logging.getLogger("livedenoise")

#: Experiments in report order.
EXPERIMENTS: tuple[str, ...] = ("sweep", "stability", "size", "loss", "pairs", "averages")
EXPERIMENT_TITLES = {
    "sweep": "Transfer vs from scratch vs supervised across peak signal (Wang Fig. 1c/2)",
    "stability": "Rerun stability over seeds (Wang: error bars)",
    "size": "Self-supervised training-set size (Wang Fig. 3)",
    "loss": "L1 vs L2 self-supervised loss (Wang Fig. 4)",
    "pairs": "Fine-tuning with few low/high pairs (CNNT)",
    "averages": "Robustness across input SNR: averages of 1..64 frames (CNNT Fig. 5)",
    "real": "Real low/high pairs",
}
#: What each method is, for the report.
METHOD_DESCRIPTIONS = {
    "noisy": "the noisy input itself",
    "gaussian": "Gaussian blur, sigma 1 px (scikit-image)",
    "nlm": "non-local means (scikit-image; h = 0.8 sigma, sigma estimated from the image)",
    "backbone": "pretrained backbone applied zero-shot (normaliser fitted to the task's frames)",
    "transfer": "backbone + Noise2Self fine-tuning on the task's noisy frames (Wang et al.)",
    "transfer-n2same": "backbone + Noise2Same fine-tuning on the same frames (livedenoise's default objective)",
    "scratch": "same network, randomly initialised, + Noise2Self on the same frames (no pretraining), trained until "
               "early stopping within its own budget",
    "pairs": "backbone + supervised fine-tuning on low/high pairs (CNNT protocol)",
    "pairs-scratch": "same network, randomly initialised, supervised on the same pairs until early stopping",
}
TRAINED_METHODS = ("transfer", "transfer-n2same", "scratch", "pairs", "pairs-scratch")
METRICS = ("mse", "psnr", "ssim", "frc")
#: Scratch methods: a randomly initialised network (their fits use the ``scratch_*`` settings).
SCRATCH_METHODS = ("scratch", "pairs-scratch")


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class EvalConfig:
    """Sizes, budgets and grids of the experiments. :func:`preset` gives ``tiny``/``quick``/``full``."""

    name: str = "quick"
    experiments: tuple[str, ...] = EXPERIMENTS
    image_size: int = 64
    structure: str = "filaments"
    camera: str = "andor-zyla-4.2"
    n_train: int = 4  # noisy frames per task for self-supervised fine-tuning
    n_test: int = 2  # held-out test fields per task
    peaks: tuple[float, ...] = (5.0, 50.0, 500.0)
    sweep_methods: tuple[str, ...] = ("noisy", "gaussian", "backbone", "transfer", "transfer-n2same", "scratch", "pairs")
    sweep_seeds: int = 1
    sweep_pairs: int = 5  # pairs for the "pairs" (supervised) method of the sweep
    stability_peak: float = 20.0
    stability_seeds: int = 5
    train_sizes: tuple[int, ...] = (1, 2, 5, 10)
    size_peak: float = 20.0
    size_seeds: int = 1
    loss_peaks: tuple[float, ...] = (5.0, 500.0)
    loss_seeds: int = 1
    pair_counts: tuple[int, ...] = (5, 10, 20)
    pairs_peak: float = 20.0
    pairs_seeds: int = 1
    averages: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    reference_average: int = 64
    background_fraction: float = 0.05  # uniform background, as a fraction of the peak
    # training (every fit; the papers' learning rates come from TrainingConfig). Validations every
    # 5 steps: the loop keeps weights only at a validation, so a fit that stops between two keeps
    # nothing it learnt since the last one.
    max_steps: int = 400
    patience: int = 8
    steps_per_validation: int = 5
    patch_size: int = 64
    batch_size: int = 4
    time_budget_s: float = 10.0
    # "scratch" fits: a network from random weights needs far more steps than a fine-tune and the
    # pretraining learning rate; it trains until early stopping or this budget. Its validations are
    # sparser: patience 8 x 5 steps would stop a random network on the first noisy plateau (measured:
    # 100-400 steps), which is not convergence; 8 x 20 steps without improvement is closer to it.
    scratch_max_steps: int = 5000
    scratch_time_budget_s: float = 60.0
    scratch_lr: float = 1e-3
    scratch_steps_per_validation: int = 20
    # real pairs
    real_max_pairs_per_set: int | None = 1
    real_crop: int | None = 128
    real_methods: tuple[str, ...] = ("noisy", "gaussian", "nlm", "backbone", "transfer", "transfer-n2same", "scratch",
                                     "pairs")
    real_max_train_pairs: int = 5
    seed: int = 0

    def training(self, loss: str = "l2", method: str = "transfer") -> TrainingConfig:
        """The :class:`TrainingConfig` of a fit: the papers' Noise2Self, except for ``transfer-n2same``.

        Scratch methods get their own step/time budget and the pretraining learning rate: with the
        fine-tuning rate (1e-4) and a fine-tune's budget a random network barely moves, and the
        comparison would measure the budget, not the value of pretraining.
        """
        extra: dict = {}
        if "self_supervised" in TrainingConfig.model_fields:
            extra["self_supervised"] = "noise2same" if method == "transfer-n2same" else "noise2self"
        max_steps, budget, every = self.max_steps, self.time_budget_s, self.steps_per_validation
        if method in SCRATCH_METHODS:
            max_steps, budget, every = self.scratch_max_steps, self.scratch_time_budget_s, self.scratch_steps_per_validation
            extra.update(lr_self_supervised=self.scratch_lr, lr_pairs=self.scratch_lr)
        return TrainingConfig(
            max_steps=max_steps, patience=self.patience, steps_per_validation=every,
            patch_size=max(16, min(self.patch_size, 1024)), batch_size=self.batch_size, loss=loss,
            time_budget_s=budget, seed=self.seed, **extra,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "EvalConfig":
        unknown = sorted(set(self.experiments) - set(EXPERIMENTS))
        if unknown:
            raise ConfigError(f"Unknown experiment(s) {', '.join(unknown)}; expected some of {', '.join(EXPERIMENTS)}.")
        if self.image_size < 16:
            raise ConfigError(f"image_size {self.image_size} is too small; expected at least 16 pixels.")
        for name in ("peaks", "loss_peaks"):
            if any(p <= 0 for p in getattr(self, name)):
                raise ConfigError(f"{name} {getattr(self, name)} must be positive photon counts.")
        if any(a < 1 for a in self.averages) or any(n < 1 for n in (*self.train_sizes, *self.pair_counts)):
            raise ConfigError("averages, train_sizes and pair_counts must be positive integers.")
        if (self.scratch_max_steps < 1 or self.scratch_time_budget_s <= 0 or self.scratch_lr <= 0
                or self.scratch_steps_per_validation < 1):
            raise ConfigError(f"scratch_max_steps ({self.scratch_max_steps}), scratch_time_budget_s "
                              f"({self.scratch_time_budget_s}) and scratch_lr ({self.scratch_lr}) must be positive.")
        return self


def preset(name: str) -> EvalConfig:
    """``tiny`` (test suite, seconds), ``quick`` (a few minutes on a 2-core CPU) or ``full`` (hours on a CPU)."""
    if name == "quick":
        return EvalConfig()  # the dataclass defaults
    if name == "tiny":
        return EvalConfig(
            name="tiny", image_size=32, n_train=2, n_test=1, peaks=(10.0, 200.0), sweep_seeds=1, sweep_pairs=2,
            stability_peak=10.0, stability_seeds=2, train_sizes=(1, 2), size_peak=10.0, loss_peaks=(10.0,),
            pair_counts=(2, 3), pairs_peak=10.0, averages=(1, 4), reference_average=8, max_steps=2,
            steps_per_validation=2, patience=2, patch_size=32, batch_size=2, time_budget_s=5.0,
            scratch_max_steps=4, scratch_time_budget_s=5.0, scratch_steps_per_validation=2,
            real_max_pairs_per_set=1, real_crop=48, real_max_train_pairs=2,
        )
    if name == "full":
        return EvalConfig(
            name="full", image_size=128, n_train=10, n_test=4, peaks=(5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0),
            sweep_seeds=5, sweep_pairs=5, stability_peak=20.0, stability_seeds=5, train_sizes=(1, 2, 5, 10, 20, 50),
            size_peak=20.0, size_seeds=3, loss_peaks=(5.0, 20.0, 100.0, 500.0), loss_seeds=3, pair_counts=(5, 10, 20),
            pairs_peak=20.0, pairs_seeds=3, max_steps=2000, patience=8, steps_per_validation=10, patch_size=64,
            batch_size=8, time_budget_s=60.0, scratch_max_steps=50_000, scratch_time_budget_s=900.0,
            scratch_steps_per_validation=50, real_max_pairs_per_set=None, real_crop=None, real_max_train_pairs=5,
        )
    raise ConfigError(f"Evaluation preset {name!r} is unknown; expected 'tiny', 'quick' or 'full'.")


# ---------------------------------------------------------------------------------------------
# the machine, for every report
# ---------------------------------------------------------------------------------------------
def machine_info(device: str | None = None) -> dict:
    """CPU model, cores, memory, accelerator, library versions and date: printed with every figure."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    from livedenoise import __version__

    try:
        load = [round(x, 2) for x in os.getloadavg()]  # other work on the machine skews every timing
    except (AttributeError, OSError):  # pragma: no cover
        load = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu, "cores": cores, "memory_gb": mem_gb, "gpu": gpu, "device": device,
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "numpy": np.__version__, "livedenoise": __version__,
        "load_average": load,
    }


def describe_machine(info: dict) -> str:
    """One line: CPU (cores), GPU, torch, date."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    load = info.get("load_average")
    busy = f"; load average {load[0]:g} at the end" if load else ""
    return (f"{info['cpu']} ({info['cores']} cores, {info.get('memory_gb')} GB){gpu}; torch {info['torch']} "
            f"({info['torch_threads']} threads); {info['platform']}; {info['date']}{busy}")


# ---------------------------------------------------------------------------------------------
# simulated tasks
# ---------------------------------------------------------------------------------------------
class SimulatedTask:
    """One sample type under one (unseen) camera: fields, noisy frames, pairs, averaged frames.

    Fields are drawn with a minimum amount of structure (an empty field says nothing about a
    denoiser and makes percentile-normalised metrics meaningless). Test fields come from the bottom
    quarter of the slide, training and pair fields from the rest.
    """

    #: Seeds of the task's slide and camera maps: far from those used for backbone pretraining.
    SLIDE_SEED = 90_001
    CAMERA_SEED = 4_242

    def __init__(self, structure: str, size: int, camera: str = "andor-zyla-4.2", *,
                 background_fraction: float = 0.05, exposure_s: float = 0.02) -> None:
        from simulators.camera import SCMOSCamera
        from simulators.config import SampleConfig, SimulatorConfigError, load_camera_preset
        from simulators.sample import Sample

        self.size = int(size)
        slide = max(512, 6 * self.size)
        try:
            cfg = SampleConfig(slide_width=slide, slide_height=slide, structures=[structure], density=1.0,
                               peak_rate=1.0, background_rate=0.0, psf_sigma=1.0, seed=self.SLIDE_SEED)
            # A sensor exactly the size of the field: the per-pixel maps are drawn for the ROI only
            # (a 2048² preset would cost seconds per task for pixels never used).
            cam_cfg = load_camera_preset(camera).model_copy(
                update={"seed": self.CAMERA_SEED, "width": self.size, "height": self.size})
        except (SimulatorConfigError, ValueError) as exc:
            raise ConfigError(f"Simulated task ({structure!r} on {camera!r}) cannot be built: {exc}") from exc
        self.sample = Sample(cfg)
        self.camera = SCMOSCamera(cam_cfg, roi=(self.size, self.size))
        self.slide = slide
        self.background_fraction = background_fraction
        self.exposure_s = exposure_s
        self._fields: dict[tuple[str, int], list[np.ndarray]] = {}

    def fields(self, kind: str, seed: int, n: int) -> list[np.ndarray]:
        """``n`` photon-rate maps (peak ~1) for ``kind`` in {"train", "pairs", "test"}; nested in ``n``."""
        key = (kind, seed)
        have = self._fields.setdefault(key, [])
        if len(have) >= n:
            return have[:n]
        band = int(self.slide * 0.75)
        lo, hi = (band, self.slide - self.size) if kind == "test" else (0, band - self.size)
        while len(have) < n:
            # one generator per field index: field i is the same whatever was asked for before
            rng = np.random.default_rng([seed, {"train": 1, "pairs": 2, "test": 3}[kind], len(have)])
            best, best_p = None, -1.0
            for _ in range(30):
                y0 = float(rng.uniform(lo, hi))
                x0 = float(rng.uniform(0, self.slide - self.size))
                rate = self.sample.field(y0, x0, self.size, self.size, self.sample.config.psf_sigma)
                p = float(np.percentile(rate, 99))
                if p > best_p:
                    best, best_p = rate, p
                if p >= 0.3:
                    break
            have.append(best.astype(np.float32))
        return have[:n]

    def photons(self, rate: np.ndarray, peak: float) -> np.ndarray:
        """Expected photons per pixel during the exposure for a field scaled to ``peak`` photons."""
        scaled = rate / max(float(rate.max()), 1e-6) * peak
        return (scaled + self.background_fraction * peak).astype(np.float32)

    def expose(self, rate: np.ndarray, peak: float, rng: np.random.Generator, average: int = 1) -> np.ndarray:
        """One frame (camera dtype), or the float32 mean of ``average`` frames."""
        ph = self.photons(rate, peak)  # photons per exposure; exposure_s only scales the dark current
        if average == 1:
            return self.camera.expose(ph, self.exposure_s, rng)
        acc = np.zeros(rate.shape, np.float64)
        for _ in range(average):
            acc += self.camera.expose(ph, self.exposure_s, rng)
        return (acc / average).astype(np.float32)

    def truth(self, rate: np.ndarray, peak: float) -> np.ndarray:
        """Noise-free expected ADU image (the simulator's ground truth: the camera's fixed pattern included)."""
        return self.camera.expected(self.photons(rate, peak), self.exposure_s)

    def truth_flat(self, rate: np.ndarray, peak: float) -> np.ndarray:
        """The expected image without the camera's fixed pattern: the sample alone, in the same ADU units.

        The simulator's ground truth is ``gain_i * E[e_i] + offset_i`` with per-pixel maps (and
        per-pixel dark current: hot pixels). Averaging frames converges to that pattern, while a
        spatial denoiser smooths it away, so scores against it favour averaging. Here the expected
        photoelectrons (dark current at its median) go through the *median* gain and offset, with
        the same full-well and ADC clipping as :meth:`SCMOSCamera.expected`.
        """
        cam, maps = self.camera, self.camera.maps
        e = cam.config.quantum_efficiency * self.photons(rate, peak) + float(np.median(maps.dark_current)) * self.exposure_s
        e = np.minimum(e, cam.config.full_well)
        adu = float(np.median(maps.gain)) * e + float(np.median(maps.offset))
        return np.clip(adu, 0, cam.max_adu).astype(np.float32)

    def _rng(self, kind: str, seed: int, peak: float, extra: int = 0) -> np.random.Generator:
        return np.random.default_rng([seed, {"train": 11, "pairs": 12, "test": 13}[kind], int(round(peak * 1000)), extra])

    def train_frames(self, peak: float, seed: int, n: int) -> list[np.ndarray]:
        rng = self._rng("train", seed, peak)
        return [self.expose(r, peak, rng) for r in self.fields("train", seed, n)]

    def pairs(self, peak: float, seed: int, n: int, reference_average: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        rng = self._rng("pairs", seed, peak)
        noisy, clean = [], []
        for r in self.fields("pairs", seed, n):
            noisy.append(self.expose(r, peak, rng))
            clean.append(self.expose(r, peak, rng, average=reference_average))
        return noisy, clean

    def test_set(self, peak: float, seed: int, n: int, average: int = 1) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``n`` noisy test frames (each the mean of ``average`` exposures) and their truth (fixed pattern included)."""
        rng = self._rng("test", seed, peak, average)
        rates = self.fields("test", seed, n)
        return [self.expose(r, peak, rng, average) for r in rates], [self.truth(r, peak) for r in rates]

    def test_truth_flat(self, peak: float, seed: int, n: int) -> list[np.ndarray]:
        """:meth:`truth_flat` of the test fields of :meth:`test_set` (same order)."""
        return [self.truth_flat(r, peak) for r in self.fields("test", seed, n)]


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------
def gaussian_baseline(frame: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Gaussian blur (the floor a denoiser must beat)."""
    from skimage.filters import gaussian

    return gaussian(np.asarray(frame, np.float32), sigma=sigma, preserve_range=True, mode="nearest").astype(np.float32)


def nlm_baseline(frame: np.ndarray) -> np.ndarray:
    """Non-local means with the noise level estimated from the image (MANIFEST.md's settings)."""
    from skimage.restoration import denoise_nl_means, estimate_sigma

    x = np.asarray(frame, np.float64)
    lo, hi = np.percentile(x, (0.1, 99.9))
    span = hi - lo if hi > lo else 1.0
    n = (x - lo) / span
    s = float(estimate_sigma(n))
    out = denoise_nl_means(n, h=0.8 * s, sigma=s, fast_mode=True, patch_size=5, patch_distance=6) if s > 0 else n
    return (out * span + lo).astype(np.float32)


def scratch_model(like: Checkpoint) -> Checkpoint:
    """An untrained network of the same architecture as ``like``, in the backbone's normaliser convention."""
    from livedenoise.models import build_model
    from livedenoise.normalization import Normalizer
    from livedenoise.training.simdata import BACKBONE_SCALE

    model = build_model(like.arch, **like.arch_kwargs)
    return Checkpoint(model=model, arch=like.arch, arch_kwargs=dict(like.arch_kwargs),
                      normalizer=Normalizer(vst=True, scale=BACKBONE_SCALE), metadata={}, name=f"scratch-{like.name}")


def with_normalizer(ckpt: Checkpoint, frames: Sequence[np.ndarray]) -> Checkpoint:
    """A copy of ``ckpt`` whose normaliser is fitted to ``frames`` (the zero-shot way to use a backbone)."""
    from livedenoise.noise_model import normalizer_for

    out = ckpt.clone()
    out.normalizer = normalizer_for(list(frames), like=ckpt.normalizer, saturation=ckpt.normalizer.saturation)
    return out


def apply_method(method: str, ckpt: Checkpoint | None, frames: Sequence[np.ndarray], *, renormalize: bool = False,
                 device: str = "cpu") -> tuple[list[np.ndarray], float]:
    """Denoise ``frames`` with a baseline (``noisy``/``gaussian``/``nlm``) or a model; returns outputs and ms/frame.

    Models run through the product's :class:`~livedenoise.inference.Denoiser`. ``renormalize`` fits
    the normaliser to each input frame (what a session does for data whose noise level changed).
    """
    from livedenoise.inference import Denoiser

    outs: list[np.ndarray] = []
    t0 = time.perf_counter()
    if method == "noisy":
        outs = [np.asarray(f, np.float32) for f in frames]
    elif method == "gaussian":
        outs = [gaussian_baseline(f) for f in frames]
    elif method == "nlm":
        outs = [nlm_baseline(f) for f in frames]
    else:
        if ckpt is None:
            raise ConfigError(f"Method {method!r} needs a model.")
        if renormalize:
            outs = [Denoiser(with_normalizer(ckpt, [f]), device=device).denoise(f) for f in frames]
        else:
            den = Denoiser(ckpt, device=device)
            outs = [den.denoise(f) for f in frames]
    return outs, (time.perf_counter() - t0) * 1000 / max(len(frames), 1)


@dataclass(frozen=True)
class ModelKey:
    """What defines one model on the simulator (fits are cached by it)."""

    method: str
    peak: float = 0.0
    seed: int = 0
    n_train: int = 0
    n_pairs: int = 0
    loss: str = "l2"


@dataclass(frozen=True)
class EvalKey:
    """A model applied to a test set (``average`` frames per input; optional per-input normaliser)."""

    model: ModelKey
    test_peak: float
    test_seed: int
    average: int = 1
    renormalize: bool = False


@dataclass
class FitInfo:
    """How one fit went: what every trained row records (empty for baselines and the zero-shot backbone)."""

    train_s: float = 0.0
    steps: int = 0
    stopped: str = ""
    best_val_loss: float = math.nan
    best_step: int = 0
    initial_val_loss: float = math.nan
    adapted: bool | None = None  # None: not a fit; False: 0 steps or the initial weights kept

    @classmethod
    def from_fit(cls, seconds: float, fit) -> "FitInfo":
        """From a :class:`~livedenoise.training.loop.FitResult`.

        ``adapted`` is the loop's own flag when it has one; otherwise a fit counts as adapted only
        when it ran steps *and* kept weights from a later validation than the initial one.
        """
        adapted = getattr(fit, "adapted", None)
        if adapted is None:
            adapted = fit.steps > 0 and fit.best_step > 0
        return cls(float(seconds), int(fit.steps), str(fit.stopped), float(fit.best_val_loss), int(fit.best_step),
                   float(fit.initial_val_loss), bool(adapted))

    def row_fields(self) -> dict:
        """The fields a scored :class:`Row` carries."""
        return {"train_s": self.train_s, "steps": self.steps, "stopped": self.stopped, "best_step": self.best_step,
                "adapted": self.adapted}


@dataclass
class Row:
    """One scored image; the report aggregates rows (images within a seed, then seeds)."""

    experiment: str
    method: str
    image: str
    peak: float | None = None
    seed: int | None = None
    n_train: int | None = None
    n_pairs: int | None = None
    loss: str | None = None
    average: int | None = None
    renormalize: bool | None = None
    set: str | None = None
    affine: bool | None = None
    mse: float = math.nan
    mae: float = math.nan
    psnr: float = math.nan
    ssim: float = math.nan
    frc: float = math.nan
    psnr_other: float = math.nan  # the other normalisation (raw percentile when affine, and vice versa)
    ssim_other: float = math.nan
    # simulated only: against the truth without the camera's fixed pattern (median offset/gain/dark current)
    mse_flat: float = math.nan
    psnr_flat: float = math.nan
    ssim_flat: float = math.nan
    train_s: float = 0.0
    infer_ms: float = 0.0
    steps: int = 0
    stopped: str = ""
    best_step: int = 0
    adapted: bool | None = None  # trained methods: False when the fit ran 0 steps or kept its initial weights

    def to_dict(self) -> dict:
        return asdict(self)


ProgressFn = Callable[[str, int, int], None]  # (what, done, total)


class Evaluator:
    """Runs the experiments of an :class:`EvalConfig` with one backbone; fits are cached and shared."""

    def __init__(self, config: EvalConfig, backbone: Checkpoint, *, device: str = "auto",
                 progress: ProgressFn | None = None) -> None:
        from livedenoise.device import select_device

        self.config = config.validate()
        self.backbone = backbone
        self.device = str(select_device(device))
        self.progress = progress
        self._task: SimulatedTask | None = None
        self._models: dict[ModelKey, tuple[Checkpoint | None, FitInfo]] = {}

    # ---- data and models ---------------------------------------------------------------------
    @property
    def task(self) -> SimulatedTask:
        if self._task is None:
            c = self.config
            self._task = SimulatedTask(c.structure, c.image_size, c.camera, background_fraction=c.background_fraction)
        return self._task

    def _fit(self, key: ModelKey) -> tuple[Checkpoint | None, FitInfo]:
        from livedenoise.training.finetune import finetune

        if key in self._models:
            return self._models[key]
        c, task = self.config, self.task
        ckpt: Checkpoint | None = None
        info = FitInfo()
        if key.method == "backbone":
            ckpt = with_normalizer(self.backbone, task.train_frames(key.peak, key.seed, key.n_train))
        elif key.method in TRAINED_METHODS:
            start = scratch_model(self.backbone) if key.method.endswith("scratch") else self.backbone
            if key.method.startswith("pairs"):
                noisy, clean = task.pairs(key.peak, key.seed, key.n_pairs, c.reference_average)
            else:
                noisy, clean = task.train_frames(key.peak, key.seed, key.n_train), None
            t0 = time.perf_counter()
            res = finetune(start, noisy, clean, training=c.training(key.loss, key.method), seed=c.seed + key.seed,
                           device=self.device, name=f"{key.method}-p{key.peak:g}-s{key.seed}")
            info = FitInfo.from_fit(time.perf_counter() - t0, res.fit)
            ckpt = res.checkpoint
        elif key.method not in ("noisy", "gaussian", "nlm"):
            raise ConfigError(f"Method {key.method!r} is unknown; expected one of {', '.join(METHOD_DESCRIPTIONS)}.")
        self._models[key] = (ckpt, info)
        return ckpt, info

    def _score(self, key: EvalKey) -> list[dict]:
        c = self.config
        ckpt, info = self._fit(key.model)
        noisy, truth = self.task.test_set(key.test_peak, key.test_seed, c.n_test, key.average)
        flat = self.task.test_truth_flat(key.test_peak, key.test_seed, c.n_test)
        outs, ms = apply_method(key.model.method, ckpt, noisy, renormalize=key.renormalize, device=self.device)
        rows = []
        for i, (out, ref, ref_flat) in enumerate(zip(outs, truth, flat)):
            s = score(ref, out, frc=True)
            f = score(ref_flat, out)
            rows.append({"image": f"test{i}", "mse": s.mse, "mae": s.mae, "psnr": s.psnr, "ssim": s.ssim, "frc": s.frc,
                         "mse_flat": f.mse, "psnr_flat": f.psnr, "ssim_flat": f.ssim, "infer_ms": ms,
                         **info.row_fields()})
        return rows

    # ---- experiment plans ----------------------------------------------------------------------
    def _model(self, method: str, peak: float, seed: int, *, n_train: int | None = None, n_pairs: int | None = None,
               loss: str = "l2") -> ModelKey:
        c = self.config
        if method in ("noisy", "gaussian", "nlm"):
            return ModelKey(method)
        if method == "backbone":
            return ModelKey(method, peak, seed, n_train or c.n_train)
        if method.startswith("pairs"):
            return ModelKey(method, peak, seed, 0, n_pairs or c.sweep_pairs)
        return ModelKey(method, peak, seed, n_train or c.n_train, 0, loss)

    def plan(self) -> list[tuple[str, EvalKey]]:
        """Every (experiment, evaluation) of the configured experiments, in report order."""
        c = self.config
        out: list[tuple[str, EvalKey]] = []

        def add(exp: str, model: ModelKey, peak: float, seed: int, **kw) -> None:
            out.append((exp, EvalKey(model, peak, seed, **kw)))

        for exp in c.experiments:
            if exp == "sweep":
                for peak in c.peaks:
                    for seed in range(c.sweep_seeds):
                        for m in c.sweep_methods:
                            add(exp, self._model(m, peak, seed), peak, seed)
            elif exp == "stability":
                for seed in range(c.stability_seeds):
                    for m in ("backbone", "transfer", "scratch", "pairs"):
                        add(exp, self._model(m, c.stability_peak, seed), c.stability_peak, seed)
            elif exp == "size":
                for n in c.train_sizes:
                    for seed in range(c.size_seeds):
                        for m in ("transfer", "scratch"):
                            add(exp, self._model(m, c.size_peak, seed, n_train=n), c.size_peak, seed)
            elif exp == "loss":
                for peak in c.loss_peaks:
                    for seed in range(c.loss_seeds):
                        for loss in ("l2", "l1"):
                            for m in ("transfer", "scratch"):
                                add(exp, self._model(m, peak, seed, loss=loss), peak, seed)
            elif exp == "pairs":
                for n in c.pair_counts:
                    for seed in range(c.pairs_seeds):
                        for m in ("pairs", "pairs-scratch"):
                            add(exp, self._model(m, c.pairs_peak, seed, n_pairs=n), c.pairs_peak, seed)
                for seed in range(c.pairs_seeds):
                    add(exp, self._model("transfer", c.pairs_peak, seed), c.pairs_peak, seed)
            elif exp == "averages":
                n_pairs = c.pair_counts[0] if c.pair_counts else c.sweep_pairs
                for avg in c.averages:
                    for m, renorm in (("noisy", False), ("gaussian", False), ("pairs", False), ("pairs", True),
                                      ("transfer", False), ("transfer", True)):
                        add(exp, self._model(m, c.pairs_peak, 0, n_pairs=n_pairs), c.pairs_peak, 0,
                            average=avg, renormalize=renorm)
        return out

    def run(self) -> list[Row]:
        """Run every planned evaluation (each distinct fit once) and return scored rows."""
        plan = self.plan()
        fits = list(dict.fromkeys(k.model for _, k in plan if k.model.method in TRAINED_METHODS))
        evals = list(dict.fromkeys(k for _, k in plan))
        total = len(fits) + len(evals)
        done = 0
        for key in fits:
            self._report(f"fit {key.method} peak {key.peak:g} seed {key.seed}", done, total)
            self._fit(key)
            done += 1
        scored: dict[EvalKey, list[dict]] = {}
        for key in evals:
            self._report(f"score {key.model.method} peak {key.test_peak:g}", done, total)
            scored[key] = self._score(key)
            done += 1
        self._report("done", total, total)
        rows: list[Row] = []
        for exp, key in plan:
            m = key.model
            for r in scored[key]:
                rows.append(Row(
                    experiment=exp, method=m.method, peak=key.test_peak, seed=key.test_seed,
                    n_train=m.n_train or None, n_pairs=m.n_pairs or None,
                    loss=m.loss if m.method in ("transfer", "transfer-n2same", "scratch") else None,
                    average=key.average, renormalize=key.renormalize, **r))
        return rows

    def _report(self, what: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(what, done, total)


# ---------------------------------------------------------------------------------------------
# real pairs
# ---------------------------------------------------------------------------------------------
def _crop(arr: np.ndarray, size: int | None) -> np.ndarray:
    if size is None:
        return arr
    h, w = arr.shape
    ch, cw = min(h, size), min(w, size)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return arr[y0:y0 + ch, x0:x0 + cw]


def affine_sets_from(spec: str | Iterable[str] | None, sets: Iterable[str]) -> set[str]:
    """Which sets use the affine-fit metric: ``"all"``, ``"none"``, or names (comma-separated or a list)."""
    sets = set(sets)
    if spec is None or spec == "all":
        return sets
    if spec == "none":
        return set()
    names = {s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()}
    unknown = sorted(names - sets)
    if unknown:
        raise ConfigError(f"--affine names set(s) {', '.join(unknown)} that are not in the pair folder; "
                          f"expected 'all', 'none' or some of {', '.join(sorted(sets))}.")
    return names


def evaluate_pairs(folder: str | Path, config: EvalConfig, backbone: Checkpoint, *, affine: str | Iterable[str] | None = "all",
                   device: str = "auto", progress: ProgressFn | None = None) -> list[Row]:
    """The same comparisons on real low/high pairs (``<set>/<name>_noisy.tif`` + ``_clean.tif``).

    Per evaluated pair: classical baselines, the backbone zero-shot, transfer and scratch Noise2Self
    trained on that noisy image alone (Wang's single-shot case), and ``pairs``: the backbone
    fine-tuned on up to ``real_max_train_pairs`` *other* pairs of the same set (leave-one-out;
    skipped for sets with one pair). Images are centre-cropped to ``real_crop`` (all methods alike).
    Scores use the clean image as reference; sets in ``affine`` use the affine-fit normalisation
    (the other one is kept in ``psnr_other``/``ssim_other``).
    """
    from livedenoise.device import select_device
    from livedenoise.training.finetune import finetune
    from livedenoise.training.pairs import load_pair_folder

    config.validate()
    dev = str(select_device(device))
    pairs = load_pair_folder(folder)
    by_set: dict[str, list] = {}
    for p in pairs:
        by_set.setdefault(p.set or "(root)", []).append(p)
    use_affine = affine_sets_from(affine, by_set)
    jobs = []
    for set_name, items in by_set.items():
        chosen = items[: config.real_max_pairs_per_set] if config.real_max_pairs_per_set else items
        for p in chosen:
            jobs.append((set_name, p, items))
    n_fits = sum(1 for m in config.real_methods if m in TRAINED_METHODS)
    total = max(1, len(jobs) * max(1, n_fits))
    done = 0
    rows: list[Row] = []
    for set_name, p, items in jobs:
        noisy = _crop(np.asarray(p.noisy), config.real_crop)
        clean = _crop(np.asarray(p.clean), config.real_crop).astype(np.float32)
        if min(noisy.shape) < 16:
            raise InputDataError(f"{p.noisy_path}: image {noisy.shape} is smaller than 16x16 pixels after cropping.")
        affine_here = set_name in use_affine
        for method in config.real_methods:
            info = FitInfo()
            ckpt: Checkpoint | None = None
            if method in TRAINED_METHODS:
                if progress is not None:
                    progress(f"{set_name}/{p.name}: {method}", done, total)
                t0 = time.perf_counter()
                start = scratch_model(backbone) if method.endswith("scratch") else backbone
                if method.startswith("pairs"):
                    others = [q for q in items if q.name != p.name][: config.real_max_train_pairs]
                    if not others:
                        done += 1
                        continue  # leave-one-out needs another pair in the set
                    tn = [_crop(np.asarray(q.noisy), config.real_crop) for q in others]
                    tc = [_crop(np.asarray(q.clean), config.real_crop).astype(np.float32) for q in others]
                    res = finetune(start, tn, tc, training=config.training(method=method), seed=config.seed,
                                   device=dev)
                else:
                    res = finetune(start, [noisy], None, training=config.training(method=method), seed=config.seed,
                                   device=dev)
                ckpt = res.checkpoint
                info = FitInfo.from_fit(time.perf_counter() - t0, res.fit)
                done += 1
            elif method == "backbone":
                ckpt = with_normalizer(backbone, [noisy])
            (out,), ms = apply_method(method, ckpt, [noisy], device=dev)
            s = score(clean, out, affine=affine_here, frc=True)
            o = score(clean, out, affine=not affine_here)
            rows.append(Row(experiment="real", method=method, image=p.name, set=set_name, affine=affine_here,
                            mse=s.mse, mae=s.mae, psnr=s.psnr, ssim=s.ssim, frc=s.frc if s.frc is not None else math.nan,
                            psnr_other=o.psnr, ssim_other=o.ssim, infer_ms=ms, **info.row_fields()))
    if progress is not None:
        progress("done", total, total)
    return rows


# ---------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Rows, machine, configuration and the files written."""

    rows: list[Row]
    config: EvalConfig
    machine: dict
    backbone: str
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    source: str = "simulator"

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "machine": self.machine, "backbone": self.backbone,
                "seconds": self.seconds, "source": self.source, "rows": [r.to_dict() for r in self.rows]}


def run_evaluation(output: str | Path, config: EvalConfig | None = None, *, backbone: Checkpoint,
                   pairs_dir: str | Path | None = None, affine: str | Iterable[str] | None = "all",
                   device: str = "auto", progress: ProgressFn | None = None, plots: bool = True) -> EvalResult:
    """Run the evaluation and write ``report.md``, ``results.json``, ``results.csv`` and PNG plots to ``output``.

    Without ``pairs_dir`` the simulated experiments of ``config`` run; with it, the real-pair comparison.
    """
    from livedenoise.evaluate_report import write_report

    config = (config or preset("quick")).validate()
    t0 = time.perf_counter()
    if pairs_dir is not None:
        rows = evaluate_pairs(pairs_dir, config, backbone, affine=affine, device=device, progress=progress)
        source = str(pairs_dir)
    else:
        rows = Evaluator(config, backbone, device=device, progress=progress).run()
        source = "simulator"
    import torch

    dev = "cuda" if (device == "auto" and torch.cuda.is_available()) else device
    result = EvalResult(rows, config, machine_info(dev), backbone.name, time.perf_counter() - t0, source=source)
    result.files = write_report(result, Path(output), plots=plots)
    return result


def load_result(path: str | Path) -> EvalResult:
    """Read back a ``results.json`` written by :func:`run_evaluation` (a file or its folder).

    With :func:`livedenoise.evaluate_report.write_report` this re-renders a report (e.g. after the
    report code changed) without re-running any fit.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data = json.loads(p.read_text())
        known = {f.name for f in fields(EvalConfig)}
        cfg = EvalConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["config"].items() if k in known})
        metric_fields = {"mse", "mae", "psnr", "ssim", "frc", "psnr_other", "ssim_other", "mse_flat", "psnr_flat",
                         "ssim_flat"}

        def value(k, v):
            if k in metric_fields:
                return math.nan if v is None else (math.inf if v == "inf" else -math.inf if v == "-inf" else float(v))
            return v

        rows = [Row(**{k: value(k, v) for k, v in r.items()}) for r in data["rows"]]
        return EvalResult(rows, cfg, data["machine"], data["backbone"], float(data["seconds"]),
                          source=data.get("source", "simulator"))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputDataError(f"{p}: not a readable evaluation result ({exc.__class__.__name__}: {exc}).") from exc


__all__ = [
    "EXPERIMENTS", "EvalConfig", "EvalResult", "Evaluator", "Row", "apply_method", "SimulatedTask", "evaluate_pairs", "gaussian_baseline",
    "machine_info", "describe_machine", "nlm_baseline", "preset", "run_evaluation", "scratch_model", "with_normalizer",
    "load_result", "affine_sets_from", "FitInfo", "SCRATCH_METHODS", "TRAINED_METHODS",
]
