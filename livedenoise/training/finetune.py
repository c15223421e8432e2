"""Transfer fine-tuning of a pretrained backbone on one experiment's own data.

Two modes, one loop (:func:`livedenoise.training.loop.fit`):

* **self-supervised** (Wang et al.): blind-spot training on the experiment's noisy frames with cycled grid
  masks, lr 1e-4, patience 8; works from a single image. The default objective is Noise2Same (Xie et al.
  2020), which keeps Noise2Self's masks but adds a reconstruction term with the known noise level; plain
  Noise2Self is available (``TrainingConfig.self_supervised = "noise2self"``). Why: the backbone is a
  residual network pretrained on full images; Noise2Self only shapes its output on *masked* inputs, and the
  full-image prediction (what inference uses) then passes noise through — measured on simulated data it
  ended below the raw image. Noise2Same trains the full-image function directly and needs the noise
  standard deviation, which the variance-stabilising normaliser makes known (1/scale).
* **few pairs** (CNNT): supervised on a handful of low/high-SNR pairs, small learning rate.

The backbone is never modified: fine-tuning works on a deep copy and returns a new checkpoint whose
normaliser is fitted to the experiment's frames in the backbone's convention.
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from livedenoise.camera_calibration import CameraCalibration
from livedenoise.checkpoint import Checkpoint
from livedenoise.config import TrainingConfig
from livedenoise.device import select_device
from livedenoise.errors import InputDataError
from livedenoise.training.data import ImageSet, PatchSampler, as_frames, normalizer_for, split_strips
from livedenoise.training.gat_target import ExpectedGatOutput, reads_expected_gat
from livedenoise.training.loop import FitProgress, FitResult, Objective, fit
from livedenoise.training.partial import select_trainable

log = logging.getLogger("livedenoise")

SELF_NAMES = {"noise2same": "Noise2Same", "noise2self": "Noise2Self", "sure": "SURE"}


@dataclass
class FinetuneResult:
    """The adapted checkpoint and how the fit went."""

    checkpoint: Checkpoint
    fit: FitResult
    mode: str

    @property
    def adapted(self) -> bool:
        """Whether the checkpoint's weights differ from the backbone's (see :attr:`FitResult.adapted`)."""
        return self.fit.adapted


def finetune(
    backbone: Checkpoint,
    noisy: Sequence[np.ndarray] | np.ndarray,
    clean: Sequence[np.ndarray] | np.ndarray | None = None,
    *,
    calibration=None,
    training: TrainingConfig | None = None,
    time_budget_s: float | None = None,
    seed: int | None = None,
    device: str = "auto",
    name: str | None = None,
    progress: Callable[[FitProgress], None] | None = None,
    cancel: threading.Event | None = None,
    match_reference: bool = True,
    pause: Callable[[], float] | None = None,
) -> FinetuneResult:
    """Adapt ``backbone`` to new data: Noise2Self when ``clean`` is None, few-pair supervised otherwise.

    ``noisy``/``clean`` are raw frames (camera units); ``calibration`` is an optional
    :class:`~livedenoise.camera_calibration.CameraCalibration`. ``time_budget_s`` overrides the config's budget.
    ``match_reference``: map each reference onto its noisy frame's intensity (:func:`match_intensity`);
    pass False when a reference's expected value already equals the noisy frame's (an average of frames
    taken at the same settings), since estimating a known relation only adds noise. ``pause``: called before each
    training step, it may wait for work that needs the CPU more (a live display; see ``loop.fit``).

    Check :attr:`FinetuneResult.adapted` before using the result as an adapted model: when the fit ran
    0 steps or kept its initial weights, the checkpoint is the backbone with a noise model fitted to
    these frames (``metadata["training"]["adapted"]`` is False).

    The GAT inverse follows what the network predicts. A pair fine-tune predicts the transform of the clean
    image: algebraic inverse. A self-supervised fine-tune keeps what its backbone predicts: its objective reads a
    backbone of the transform of the mean (algebraic inverse) through the transform's bias
    (:mod:`livedenoise.training.gat_target`), so the adapted network keeps that target and inverse; one whose
    backbone predicts the expected transformed noisy value keeps the unbiased inverse. (Until 2026-12-05 every
    self-supervised fine-tune switched to the unbiased target and inverse, spending its steps on the change of
    target, which the SURE check mistook for an improvement.)
    """
    from livedenoise.bioimageio_import import refuse_training

    refuse_training(backbone, "fine-tuning")
    if backbone.arch == "unet-temporal":
        return _finetune_temporal(backbone, noisy, clean, calibration=calibration, training=training,
                                  time_budget_s=time_budget_s, seed=seed, device=device, name=name, progress=progress,
                                  cancel=cancel, match_reference=match_reference, pause=pause)
    cfg = training or TrainingConfig()
    noisy_frames = as_frames(noisy, "noisy images")
    clean_frames = as_frames(clean, "clean images") if clean is not None else None
    if clean_frames is not None and len(clean_frames) != len(noisy_frames):
        raise InputDataError(f"{len(noisy_frames)} noisy images but {len(clean_frames)} clean images; pairs must match")
    if backbone.arch != "unet":
        raise InputDataError(f"fine-tuning supports 2-D U-Net backbones; '{backbone.name}' is a "
                             f"'{backbone.arch}' model")
    if calibration is not None and not hasattr(calibration, "read_var"):  # a path
        calibration = CameraCalibration.load(calibration)  # once: the noise model and the SURE check both read it
    norm = normalizer_for(noisy_frames, like=backbone.normalizer, calibration=calibration,
                          saturation=backbone.normalizer.saturation)
    if clean_frames is not None and match_reference:
        clean_frames = [match_intensity(c, n) for c, n in zip(clean_frames, noisy_frames, strict=True)]
    data_noisy = [norm.forward(f) for f in noisy_frames]
    data_clean = [norm.forward(f) for f in clean_frames] if clean_frames is not None else None
    train_n, val_n = split_strips(data_noisy, cfg.validation_fraction)
    train_c: list[np.ndarray] | None
    val_c: list[np.ndarray] | None
    if data_clean is not None:
        train_c, val_c = split_strips(data_clean, cfg.validation_fraction)
    else:
        train_c = val_c = None
    seed = cfg.seed if seed is None else seed
    train = PatchSampler(ImageSet(train_n, train_c), cfg.patch_size, cfg.batch_size, seed=seed)
    val = PatchSampler(ImageSet(val_n, val_c), cfg.patch_size, cfg.batch_size, seed=seed + 1)
    objective: Objective
    if data_clean is not None:
        objective = "supervised"
    else:
        # Noise2Same needs the noise level, which the variance-stabilised normaliser fixes exactly (1/scale).
        objective = cfg.self_supervised if norm.vst else "noise2self"
    lr = cfg.lr_pairs if objective == "supervised" else cfg.lr_self_supervised
    adapted = backbone.clone()
    dev = select_device(device)
    skip = _self_supervision_invalid(noisy_frames, norm) if objective != "supervised" else ""
    if skip:
        log.warning("%s", skip)
        result = FitResult(objective, math.nan, math.nan, 0, 0, "skipped", 0.0, note=skip, precision=cfg.precision)
    else:
        trainable = select_trainable(adapted.model, cfg.adapt_layers)
        result = fit(
            _objective_view(adapted.model, norm, objective), train, val, objective=objective, lr=lr,
            max_steps=cfg.max_steps, trainable=trainable,
            time_budget_s=time_budget_s if time_budget_s is not None else cfg.time_budget_s,
            patience=cfg.patience, steps_per_validation=cfg.steps_per_validation, loss=cfg.loss,
            ssim_weight=cfg.ssim_weight if objective == "supervised" else 0.0, mask_grid=cfg.mask_grid,
            noise_std=norm.noise_std if norm.vst else None, seed=seed, device=dev, progress=progress, cancel=cancel,
            precision=cfg.precision, pause=pause,
        )
    adapted.model.to("cpu").requires_grad_(True)  # as a cloned backbone is: whatever trains it next sees every weight
    sure_check = None
    if objective != "supervised" and result.adapted and norm.vst:
        variances = _calibrated_variances(backbone.model, val_n, norm, calibration)
        sure_check = _full_image_check(_objective_view(backbone.model, norm, objective),
                                       _objective_view(adapted.model, norm, objective), val_n, norm.noise_std,
                                       variances)
        if not sure_check["adapted_better"]:
            adapted.model.load_state_dict(backbone.model.state_dict())
            result.rejected = True
            result.note = (f"{result.steps} steps improved the blind-spot loss, but the full-image error estimate "
                           f"(SURE) on held-out rows did not improve by {SURE_MARGIN:g} noise variances "
                           f"({sure_check['backbone']:.4f} -> {sure_check['adapted']:.4f}); the backbone is kept")
            log.info("%s", result.note)
    if result.adapted and norm.vst and objective == "supervised":
        norm = norm.copy(inversion="algebraic")  # a pair fine-tune predicts GAT(clean), whatever its backbone did
    if not result.adapted:
        log.info("fine-tuning kept the backbone's weights (%d steps, no held-out improvement): not an adapted model",
                 result.steps)
    adapted.normalizer = norm
    mode = "pairs" if objective == "supervised" else "self"
    adapted.name = name or (f"{backbone.name}+{mode}" if result.adapted else backbone.name)
    adapted.metadata = {
        **adapted.metadata,
        "training": {
            "mode": "pairs" if objective == "supervised" else f"self-supervised ({SELF_NAMES[objective]})",
            "backbone": backbone.name,
            "images": len(noisy_frames),
            "image_shapes": sorted({tuple(f.shape) for f in noisy_frames}),
            "lr": lr,
            "loss": cfg.loss,
            "adapt_layers": cfg.adapt_layers,
            "inversion": norm.inversion,
            "reference_matched": clean_frames is not None and match_reference,
            **({"sure_check": sure_check} if sure_check else {}),
            **({"note": result.note} if result.note else {}),
            "config": cfg.model_dump(),
            **result.to_dict(),  # its precision: what the steps ran in
        },
    }
    return FinetuneResult(adapted, result, mode)


def _objective_view(model: torch.nn.Module, norm, objective: str) -> torch.nn.Module:
    """``model`` as a self-supervised objective must read it: through the GAT's bias when it predicts the transform
    of the mean (:mod:`livedenoise.training.gat_target`); pair fine-tunes and unbiased-inverse models as they are."""
    if objective != "supervised" and reads_expected_gat(norm):
        return ExpectedGatOutput(model, norm)
    return model


def _finetune_temporal(backbone: Checkpoint, noisy, clean, **kwargs) -> FinetuneResult:
    """The temporal backbone adapts its 2-D stage (pairs or self-supervised, as a 2-D backbone would) and keeps
    its fusion: the fusion only averages what the 2-D stage produces, where frames agree, so it needs no
    re-training for a new sample, and the adapted model stays a temporal one. The second pass keeps the
    backbone's 2-D stage (:meth:`~livedenoise.models.temporal.TemporalUNet.keep_averages_stage`): the fine-tune
    sees single frames, the second pass averages of several."""
    from livedenoise.models.temporal import TemporalUNet

    temporal: TemporalUNet = backbone.model  # type: ignore[assignment]
    frame_kwargs = {"widths": list(temporal.frame.widths), "norm": temporal.frame.norm}
    frame = Checkpoint(model=temporal.frame, arch="unet", arch_kwargs=frame_kwargs, normalizer=backbone.normalizer,
                       metadata=backbone.metadata, path=None, name=backbone.name)
    result = finetune(frame, noisy, clean, **kwargs)
    adapted = backbone.clone(name=result.checkpoint.name)
    model = cast(TemporalUNet, adapted.model)
    # the second pass keeps the 2-D stage the backbone ran on averaged frames; not an untrained one (a start from
    # scratch, no training record), which would only add noise there
    if result.adapted and backbone.training:
        model.keep_averages_stage(backbone.normalizer.inversion)
        adapted.arch_kwargs = dict(model.arch_kwargs)
    model.frame.load_state_dict(result.checkpoint.model.state_dict())
    adapted.normalizer = result.checkpoint.normalizer
    adapted.metadata = {**result.checkpoint.metadata, "parent": adapted.metadata.get("parent")}
    adapted.metadata["training"] = {**adapted.metadata["training"], "adapted_part": (
        "the 2-D stage on single frames (fusion kept; the second pass keeps the backbone's 2-D stage)"
        if model.averages is not None else "the 2-D stage (fusion kept)")}
    return FinetuneResult(adapted, result.fit, result.mode)


#: A self-supervised fine-tune is kept only when it lowers the SURE estimate of the full-image error on the
#: held-out rows by this many noise variances (per pixel). Why a second criterion: the blind-spot loss rates
#: the backbone, which never saw masked inputs, unfairly, and accepted every fit on the real dev pairs
#: (4 of 7 lost 0.1-0.6 dB); SURE scores backbone and fine-tune the same way, on the output inference uses,
#: and picked the better one on 5 of 7 (the two misses: fmd, whose correlated noise is now skipped, and w2s
#: by 0.007, below this margin). Result with both checks: `benchmarks/results/2026-12-03-adapt-checked`.
SURE_MARGIN = 0.01
SURE_PROBES = 4


def _full_image_check(backbone, adapted, strips: list[np.ndarray], noise_std: float,
                      variances: list[np.ndarray] | None = None) -> dict:
    """SURE (in noise variances per pixel) of the backbone and of the fine-tuned model on held-out strips.

    ``variances``: each strip's per-pixel noise variance in noise-variance units (:func:`_calibrated_variances`),
    or None for the normaliser's one level everywhere."""
    from livedenoise.training.sure import sure_loss

    def estimate(model) -> float:
        model.eval()
        gen = torch.Generator().manual_seed(7)
        vals = []
        with torch.no_grad():
            for k, strip in enumerate(strips):
                x = torch.from_numpy(np.ascontiguousarray(strip, dtype=np.float32))[None, None]
                v = None if variances is None else torch.from_numpy(variances[k].astype(np.float32))[None, None]
                for _ in range(SURE_PROBES):
                    probe = torch.randn(x.shape, generator=gen)
                    vals.append(float(sure_loss(model, x, noise_std, probe, v)) * x.numel())
        total = sum(s.size for s in strips) * SURE_PROBES
        return sum(vals) / total / noise_std**2

    b, a = estimate(backbone), estimate(adapted)
    return {"backbone": b, "adapted": a, "margin": SURE_MARGIN, "adapted_better": a < b - SURE_MARGIN,
            "noise_variance": "per pixel (camera calibration)" if variances is not None else "one level"}


def _calibrated_variances(model: torch.nn.Module, strips: list[np.ndarray], norm,
                          calibration: CameraCalibration | None) -> list[np.ndarray] | None:
    """Each held-out strip's per-pixel noise variance after the GAT (noise-variance units), from a camera
    calibration's read-noise map; None without per-pixel maps for these frames.

    The calibrated GAT stabilises ``var(e) = E[e] + b`` with ``b`` the calibration's *median* read variance; a pixel
    of read variance ``b_i`` and ``lam`` photoelectrons (here the backbone's estimate) has the variance
    :func:`~livedenoise.training.sure.stabilised_variance` computes. On the simulated Zyla (read-noise spread 35 %,
    0.3 % noisy pixels) the stabilised variance averages 1.17 at 20 photons, not 1, which biased the check towards
    fine-tunes that pass more noise through (``benchmarks/results/2026-12-05-gat-target/``). Frames as acquired
    (``finetune`` fits its noise model with ``averaged=1``)."""
    from livedenoise.training.sure import stabilised_variance

    if calibration is None or not norm.vst or norm.pixel_offset is None or norm.noise_a != 1.0 or norm.shift:
        return None  # (a calibrated normaliser has noise_a 1 and no shift; the table assumes both)
    read_e2 = np.asarray(calibration.read_var, np.float64) / np.asarray(calibration.gain, np.float64) ** 2
    out = []
    model.eval()
    with torch.no_grad():
        for strip in strips:
            if read_e2.shape[-1] != strip.shape[-1] or read_e2.shape[0] < strip.shape[-2]:
                return None
            rows = read_e2[read_e2.shape[0] - strip.shape[-2]:]  # a strip is the bottom rows of its frame
            y = model(torch.from_numpy(np.ascontiguousarray(strip, dtype=np.float32))[None, None])[0, 0].numpy()
            lam = np.maximum((norm.inverse(y).astype(np.float64) - norm.offset) / norm.gain, 0.0)
            out.append(stabilised_variance(lam, rows, norm.noise_b))
    return out


def _self_supervision_invalid(frames: list[np.ndarray], norm) -> str:
    """Why self-supervised training would learn the noise as signal on these frames, or "" when it is sound.

    Blind-spot objectives (and SURE) assume noise independent from pixel to pixel. Where neighbouring
    pixels share noise (frames filtered, demosaiced or resampled after the camera) a masked pixel's
    noise is predictable from its neighbours: the held-out loss improves while the images get worse
    (measured on fmd_widefield_bpae: -0.3 dB, every criterion accepted the fit). Such frames keep the
    backbone.
    """
    from livedenoise.errors import InputDataError
    from livedenoise.noise_model import is_correlated, noise_correlation_ratio, single_image_fit

    if not norm.vst:
        return ""
    ratio = noise_correlation_ratio([norm.to_stabilised(f) for f in frames[:4]])
    if is_correlated(ratio):
        return (f"self-supervised adaptation skipped: the noise is spatially correlated (coarse/fine noise ratio "
                f"{ratio:.2f}, 1.0 for camera noise), so blind-spot training would learn it as signal; "
                "the backbone is kept")
    # Neighbours along a scan line share noise (point-scanning detectors): a masked pixel's noise is partly predictable
    # from them, and adaptation lost about 1 dB on both gigadb confocal renders (60 s, fast backbone, 512² crops).
    try:
        scan = single_image_fit([np.asarray(frames[0], np.float64)])
    except InputDataError:
        return ""
    if scan.scan_axis:
        return (f"self-supervised adaptation skipped: neighbouring pixels along {scan.scan_axis} share noise "
                f"(correlation {scan.scan_correlation:.2f}, a scanning detector), so blind-spot training would "
                "learn it as signal; the backbone is kept")
    return ""


def match_intensity(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Map ``clean`` onto ``noisy``'s intensity scale with an affine fit ``a*clean + b``.

    A reference taken with a longer exposure or more light is brighter, and its offset/dark level may
    differ; the noisy frame's expected value is an affine function of the reference's (same field, same
    camera). The network then learns denoising, not a brightness change.

    Why not least squares: the reference is noisy too (an average of a few frames, a longer exposure),
    and regressing the noisy frame on it shrinks the slope by ``var(signal) / (var(signal) +
    var(reference noise))`` (regression dilution: 0.87 at 5 photons with a 16-frame average), which
    would dim every training target. The slope is instead the instrumental-variable estimate
    ``cov(noisy, z) / cov(clean, z)``, where ``z`` is the mean of each pixel's 8 neighbours in the
    reference: it follows the (PSF-blurred) signal, but its noise is independent of the pixel's own
    noise in both images (camera noise is independent between pixels), so the estimate is unbiased
    whatever the two noise levels, and needs no noise model (a spatial noise estimate would count the
    camera's fixed pattern, which both images share, as noise). The intercept matches the means. A
    reference without measurable spatial structure gives no slope: the means are matched (slope 1).
    """
    c = clean.astype(np.float64)
    n = noisy.astype(np.float64)
    if c.shape != n.shape:
        raise InputDataError(f"reference shape {c.shape} differs from the noisy frame's {n.shape}; pairs must match")
    if c.std() == 0:
        return np.full(clean.shape, n.mean(), np.float32)
    a = _instrumented_slope(c, n)
    if a is None:
        log.warning("the reference image has no spatial structure above its noise, so its intensity relation to the "
                    "noisy frame cannot be measured; only the mean intensities were matched")
        a = 1.0
    b = float(n.mean() - a * c.mean())
    return (c * a + b).astype(np.float32)


#: Minimum ratio of the instrument's covariance with the reference to its standard error (a weak instrument
#: gives a slope dominated by noise).
_MIN_INSTRUMENT_T = 5.0


def _instrumented_slope(c: np.ndarray, n: np.ndarray) -> float | None:
    """``cov(n, z) / cov(c, z)`` with ``z`` the 8-neighbour mean of ``c`` (see :func:`match_intensity`);
    None when the images are too small or the instrument too weak to give a positive slope."""
    from scipy.ndimage import uniform_filter

    if c.ndim < 2 or min(c.shape[-2:]) < 3:
        return None
    z = (uniform_filter(c, size=3, mode="nearest") * 9.0 - c) / 8.0
    inner = (..., slice(1, -1), slice(1, -1))  # the border's "nearest" neighbours include the pixel itself
    zc = z[inner].ravel() - z[inner].mean()
    cc = c[inner].ravel() - c[inner].mean()
    nc = n[inner].ravel() - n[inner].mean()
    prod = zc * cc
    den = float(prod.mean())
    se = float(prod.std()) / np.sqrt(prod.size)
    if not (den > _MIN_INSTRUMENT_T * se and den > 0):
        return None
    a = float(np.mean(zc * nc)) / den
    return a if np.isfinite(a) and a > 0 else None
