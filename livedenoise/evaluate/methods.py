"""The compared methods (baselines, backbone, transfer, scratch, pairs), their fits (cached) and scores."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from livedenoise.checkpoint import Checkpoint
from livedenoise.errors import ConfigError
from livedenoise.evaluate.experiments import METHOD_DESCRIPTIONS, TRAINED_METHODS
from livedenoise.evaluate.settings import EvalConfig, Loss
from livedenoise.evaluate.tasks import SimulatedTask
from livedenoise.metrics import score


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
    loss: Loss = "l2"


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
    def from_fit(cls, seconds: float, fit) -> FitInfo:
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
        for i, (out, ref, ref_flat) in enumerate(zip(outs, truth, flat, strict=True)):
            s = score(ref, out, frc=True)
            f = score(ref_flat, out)
            rows.append({"image": f"test{i}", "mse": s.mse, "mae": s.mae, "psnr": s.psnr, "ssim": s.ssim, "frc": s.frc,
                         "mse_flat": f.mse, "psnr_flat": f.psnr, "ssim_flat": f.ssim, "infer_ms": ms,
                         **info.row_fields()})
        return rows

    # ---- experiment plans ----------------------------------------------------------------------
    def _model(self, method: str, peak: float, seed: int, *, n_train: int | None = None, n_pairs: int | None = None,
               loss: Loss = "l2") -> ModelKey:
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
        for ev in evals:
            self._report(f"score {ev.model.method} peak {ev.test_peak:g}", done, total)
            scored[ev] = self._score(ev)
            done += 1
        self._report("done", total, total)
        rows: list[Row] = []
        for exp, ev in plan:
            m = ev.model
            for r in scored[ev]:
                rows.append(Row(
                    experiment=exp, method=m.method, peak=ev.test_peak, seed=ev.test_seed,
                    n_train=m.n_train or None, n_pairs=m.n_pairs or None,
                    loss=m.loss if m.method in ("transfer", "transfer-n2same", "scratch") else None,
                    average=ev.average, renormalize=ev.renormalize, **r))
        return rows

    def _report(self, what: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(what, done, total)
