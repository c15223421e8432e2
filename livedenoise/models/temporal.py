"""The temporal backbone: the 2-D U-Net on every frame, then a learned motion-adaptive fusion over time.

Input ``[B, 1, T, H, W]`` (oldest first); output ``[B, 1, H, W]``: the newest frame denoised with the
help of the older ones. Two stages:

1. **Per frame**: a 2-D U-Net (the shipped fast backbone) denoises every frame on its own.
2. **Fusion** (:class:`MotionAdaptiveFusion`): each neighbour's denoised frame is averaged into the
   reference frame's, pixel by pixel, with the weight ``trust[lag] * exp(-G * (d_k - d_ref)^2 / h^2)``:
   where a neighbour agrees with the reference (static structure, background) it is averaged in; where
   it differs by more than the denoised noise (moving objects, drift, bleaching, a stage move) its
   weight falls to zero and the reference frame's own 2-D result is kept. ``G`` is a small Gaussian
   blur of the squared difference, so the test compares neighbourhoods, not single noisy pixels, and the
   two lobes of a moving object's difference (where it arrives, where it left) add up instead of
   cancelling. ``trust`` (one per lag) and ``h`` are learned on synthetic time-lapses
   (:mod:`livedenoise.training.timelapse`).

Why this design and not a CNNT U-Net or an early-fusion U-Net as the shipped temporal model:

* **Cost**: each frame's 2-D result is computed once and kept (:class:`~livedenoise.inference.Denoiser`
  keeps the last frames' results for live display), so a live frame costs one 2-D pass plus the fusion,
  a few element-wise operations per neighbour. A CNNT window costs ``T`` 2-D passes per frame.
* **What can be trained on two CPU cores**: an early-fusion U-Net started from the 2-D backbone (1,800
  steps of the full recipe: held-out loss never below its 2-D start; 500 steps on low-light windows: -3 %)
  and a fusion U-Net on its outputs (200 steps: -0.7 %) did not learn to use the neighbours in a CPU
  session. The fusion's few parameters converge in minutes, and where frames disagree it falls back to
  the 2-D result by construction.
* **Live and batch**: lags count in both directions, so batch denoising uses a centred window
  (``T - 1`` frames before and after) while live display uses the causal one.

The 2-D network is exactly the fast backbone's (``temporal_from_frame_model``), so every frame
without usable neighbours (the first frame, a moving object) is denoised exactly as by the 2-D model.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from livedenoise.errors import ConfigError
from livedenoise.models.unet import UNet2D
from livedenoise.normalization import INVERSIONS

#: Relative margin by which a shifted correlation must beat the unshifted one to move a frame.
ZERO_SHIFT_TOLERANCE = 0.02


def spectrum(frame: torch.Tensor) -> torch.Tensor:
    """The Fourier transform used to register ``frame`` [H, W] (mean removed); computed once per frame."""
    frame = frame.float()
    return torch.fft.rfft2(frame - frame.mean())


def shift_between(moving: torch.Tensor, reference: torch.Tensor, shape: tuple[int, int],
                  max_shift: int) -> tuple[int, int]:
    """Whole-pixel translation (dy, dx) that best maps the frame of spectrum ``moving`` onto that of ``reference``.

    Plain (not phase-normalised) cross-correlation of the denoised frames: robust to the noise left in flat
    regions. No shift is kept unless another one correlates clearly better (by ``ZERO_SHIFT_TOLERANCE``),
    so a static scene is never moved by a noise peak. Shifts beyond ``max_shift`` pixels are not searched
    (a stage move, not drift: the fusion's agreement test then gives the frame no weight).
    """
    corr = torch.fft.irfft2(reference * moving.conj(), s=shape)
    h, w = shape
    m = min(int(max_shift), (min(h, w) - 1) // 2)  # larger shifts would alias in a small frame
    window = corr[torch.arange(-m, m + 1) % h][:, torch.arange(-m, m + 1) % w]
    best = float(window.max())
    if best <= 0 or float(corr[0, 0]) >= best - ZERO_SHIFT_TOLERANCE * abs(best):
        return 0, 0
    iy, ix = divmod(int(torch.argmax(window)), window.shape[1])
    return iy - m, ix - m


def frame_shift(moving: torch.Tensor, reference: torch.Tensor, max_shift: int) -> tuple[int, int]:
    """Whole-pixel translation (dy, dx) that best maps ``moving`` [H, W] onto ``reference`` (:func:`shift_between`)."""
    return shift_between(spectrum(moving), spectrum(reference), cast(tuple[int, int], tuple(reference.shape)),
                         max_shift)


def shift_frame(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [H, W] moved by whole pixels (content at (y, x) goes to (y + dy, x + dx)); returns the moved frame
    and a mask of the pixels that have a source (1) or came from outside the frame (0)."""
    h, w = x.shape
    out = torch.zeros_like(x)
    valid = torch.zeros_like(x)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    if abs(dy) < h and abs(dx) < w:
        out[yd, xd] = x[ys, xs]
        valid[yd, xd] = 1.0
    return out, valid


class GaussianBlur:
    """Separable Gaussian blur (``sigma`` pixels) of frames ``[N, H, W]``, replicated borders (works on any size).

    As weighted sums of shifted views of the padded frame, not ``conv2d``: a one-channel convolution is several
    times slower on a CPU (184 against 25 ms for a 2048² frame, 11.3 against 0.4 ms at 512², 2 threads:
    ``benchmarks/bench_fusion_blur.py``), for the same values to float rounding. The weights are numbers, not a
    tensor: no device sync per blur, and a model built on the meta device has them too.
    """

    def __init__(self, sigma: float) -> None:
        radius = max(1, math.ceil(3 * sigma))
        weights = [math.exp(-(i**2) / (2 * sigma**2)) for i in range(-radius, radius + 1)]
        #: the normalised Gaussian weights, offsets -radius..radius
        self.taps = tuple(v / sum(weights) for v in weights)
        self.radius = radius

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _n, h, w = x.shape  # [N, H, W] only
        r = self.radius
        taps = self.taps
        padded = F.pad(x[:, None], (r, r, r, r), mode="replicate")[:, 0]
        rows = padded[:, :, 0:w] * taps[0]
        for i in range(1, 2 * r + 1):
            rows = rows.add_(padded[:, :, i:i + w], alpha=taps[i])
        out = rows[:, 0:h] * taps[0]
        for i in range(1, 2 * r + 1):
            out = out.add_(rows[:, i:i + h], alpha=taps[i])
        return out


@dataclass
class Fused:
    """What a fusion gives: ``fused`` (the 2-D results averaged, network units) and, when the raw frames were
    given, ``average`` (the raw frames averaged with the same motion test, in their own linear units) and
    ``frames`` (per pixel, the effective number of frames in that average: ``(sum w)^2 / sum w^2``, 1 to T)."""

    fused: torch.Tensor
    average: torch.Tensor | None = None
    frames: torch.Tensor | None = None

    def part(self, index: slice) -> Fused:
        """The frames ``index`` of a fused series."""
        return Fused(self.fused[index], None if self.average is None else self.average[index],
                     None if self.frames is None else self.frames[index])


@dataclass
class _Sums:
    """Running sums of a fusion (views into them accumulate a slice of frames in place)."""

    num: torch.Tensor
    den: torch.Tensor
    raw: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None

    @classmethod
    def start(cls, d: torch.Tensor, raw: torch.Tensor | None) -> _Sums:
        """Each reference frame's own value with weight 1."""
        ones = torch.ones_like(d)
        return cls(d.clone(), ones, None if raw is None
                   else (raw.to(d.dtype).clone(), ones.clone(), ones.clone()))

    def part(self, index: slice) -> _Sums:
        """Views of the frames ``index`` (writing to them writes here)."""
        return _Sums(self.num[index], self.den[index], None if self.raw is None
                     else (self.raw[0][index], self.raw[1][index], self.raw[2][index]))

    def result(self) -> Fused:
        if self.raw is None:
            return Fused(self.num / self.den)
        raw_num, raw_den, raw_sq = self.raw
        return Fused(self.num / self.den, raw_num / raw_den, raw_den * raw_den / raw_sq)


class MotionAdaptiveFusion(nn.Module):
    """Fuse 2-D-denoised frames ``[B, T, H, W]`` (network units) into one reference frame ``[B, H, W]``.

    With ``align`` each neighbour is first moved by the whole-pixel translation that best matches it to
    the reference (:func:`frame_shift`: sample drift, a stage that creeps), so drifting structure is
    averaged too; pixels shifted in from outside the frame get no weight.
    """

    def __init__(self, lags: int = 4, sigma: float = 1.0, align: bool = True, max_shift: int = 8) -> None:
        super().__init__()
        if int(lags) < 1 or not sigma > 0 or int(max_shift) < 0:
            raise ConfigError(f"Temporal fusion lags={lags!r}, sigma={sigma!r}, max_shift={max_shift!r} are invalid; "
                              "expected lags >= 1, sigma > 0 and max_shift >= 0.")
        self.lags = int(lags)
        self.sigma = float(sigma)
        self.align = bool(align)
        self.max_shift = int(max_shift)
        #: logit of the prior trust in a neighbour at each lag (1..lags)
        self.trust = nn.Parameter(torch.zeros(self.lags))
        #: log of the agreement scale h, in network units (the raw noise is 0.1 there)
        self.log_h = nn.Parameter(torch.tensor(math.log(0.03)))
        #: the agreement test's blur (:class:`GaussianBlur`)
        self._blur = GaussianBlur(self.sigma)
        self.radius = self._blur.radius

    def agreement(self, neighbour: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """``exp(-G * (neighbour - reference)^2 / h^2)`` per pixel: 1 where a neighbour shows the same thing."""
        h = torch.exp(self.log_h)
        ssd = self._blur((neighbour - reference) ** 2)  # local mean squared difference: a moving object's two
        return torch.exp(-ssd / h**2)  # lobes add up instead of cancelling

    def weight(self, neighbour: torch.Tensor, reference: torch.Tensor, lag: int) -> torch.Tensor:
        """Per-pixel weight of a neighbour ``lag`` frames away (0 beyond ``lags``)."""
        if lag < 1 or lag > self.lags:
            return torch.zeros_like(reference)
        return torch.sigmoid(self.trust[lag - 1]) * self.agreement(neighbour, reference)

    def spectra(self, d: torch.Tensor) -> torch.Tensor | None:
        """Registration spectra of frames ``d`` [..., H, W] (None without alignment): one FFT per frame."""
        if not self.align or self.max_shift == 0:
            return None
        with torch.no_grad():
            return torch.fft.rfft2(d.float() - d.float().mean(dim=(-2, -1), keepdim=True))

    def _shifts(self, spectra: torch.Tensor | None, neighbours: torch.Tensor, references: torch.Tensor,
                shape: tuple[int, int]) -> torch.Tensor:
        """Whole-pixel shifts [N, 2] moving each neighbour onto its reference (indices into ``spectra`` [N', ...])."""
        if spectra is None:
            return torch.zeros((len(neighbours), 2), dtype=torch.int64)
        with torch.no_grad():
            return torch.tensor([shift_between(spectra[n], spectra[r], shape, self.max_shift)
                                 for n, r in zip(neighbours.tolist(), references.tolist(), strict=True)],
                                dtype=torch.int64)

    @staticmethod
    def _moved(frames: torch.Tensor, shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames [N, H, W] moved by whole-pixel ``shifts`` [N, 2], and where they are defined (1) or not (0)."""
        if not bool(shifts.any()):
            return frames, torch.ones_like(frames)
        pairs = [shift_frame(f, int(dy), int(dx)) for f, (dy, dx) in zip(frames, shifts.tolist(), strict=True)]
        return torch.stack([m for m, _ in pairs]), torch.stack([v for _, v in pairs])

    def _add(self, sums: _Sums, neighbours: torch.Tensor, references: torch.Tensor, shifts: torch.Tensor, lag: int,
             raw_neighbours: torch.Tensor | None = None) -> None:
        """Accumulate the neighbours' weighted contributions to their references (in place): the 2-D results
        with the learned trust, and (``raw_neighbours``, moved the same way) the raw frames with agreement alone."""
        moved, valid = self._moved(neighbours, shifts)
        agree = self.agreement(moved, references) * valid
        w = torch.sigmoid(self.trust[lag - 1]) * agree
        sums.num += w * moved
        sums.den += w
        if raw_neighbours is not None and sums.raw is not None:
            raw_moved, _ = self._moved(raw_neighbours, shifts)
            raw_num, raw_den, raw_sq = sums.raw
            raw_num += agree * raw_moved
            raw_den += agree
            raw_sq += agree * agree

    def forward(self, d: torch.Tensor, reference: int, spectra: torch.Tensor | None = None) -> torch.Tensor:
        """Frame ``reference`` of ``d`` [B, T, H, W], fused with the frames within ``lags`` of it.

        ``spectra`` [B, T, ...] (from :meth:`spectra`; live windows keep them per frame) are computed when not given.
        """
        return self.fuse(d, reference, spectra).fused

    def fuse(self, d: torch.Tensor, reference: int, spectra: torch.Tensor | None = None,
             raw: torch.Tensor | None = None) -> Fused:
        """:meth:`forward`, and with ``raw`` [B, T, H, W] (the frames in linear units) their average too."""
        b, t, h, w = d.shape
        if spectra is None:
            spectra = self.spectra(d)
        flat = None if spectra is None else spectra.reshape(b * t, *spectra.shape[2:])
        ref = d[:, reference]
        sums = _Sums.start(ref, None if raw is None else raw[:, reference])
        rows = torch.arange(b) * t
        for k in range(t):
            lag = abs(k - reference)
            if 1 <= lag <= self.lags:
                self._add(sums, d[:, k], ref, self._shifts(flat, rows + k, rows + reference, (h, w)), lag,
                          None if raw is None else raw[:, k])
        return sums.result()

    def fuse_series(self, d: torch.Tensor, *, causal: bool, raw: torch.Tensor | None = None) -> Fused:
        """Every frame of one series ``d`` [T, H, W] fused with its neighbours: older ones only (``causal``)
        or on both sides (a centred window); with ``raw`` [T, H, W] their motion-compensated average too.
        Vectorised over frames: one pass per lag; one FFT per frame and one inverse FFT per (frame, neighbour)
        pair for the registration."""
        n, h, w = d.shape
        spectra = self.spectra(d)
        sums = _Sums.start(d, raw)
        for lag in range(1, min(self.lags, n - 1) + 1):
            older, newer = torch.arange(n - lag), torch.arange(lag, n)
            # frame t's neighbour t - lag, then (centred) its neighbour t + lag
            self._add(sums.part(slice(lag, None)), d[:-lag], d[lag:], self._shifts(spectra, older, newer, (h, w)),
                      lag, None if raw is None else raw[:-lag])
            if not causal:
                self._add(sums.part(slice(None, -lag)), d[lag:], d[:-lag],
                          self._shifts(spectra, newer, older, (h, w)), lag, None if raw is None else raw[lag:])
        return sums.result()

    def describe(self) -> dict:
        return {"trust": [round(float(v), 4) for v in torch.sigmoid(self.trust.detach())],
                "h": float(torch.exp(self.log_h.detach())), "sigma": self.sigma, "align": self.align,
                "max_shift": self.max_shift}


class TemporalUNet(nn.Module):
    """2-D U-Net per frame + :class:`MotionAdaptiveFusion`: ``[B, 1, T, H, W]`` -> newest frame ``[B, 1, H, W]``."""

    is_temporal = True
    arch = "unet-temporal"
    #: The network denoises the newest frame of its window (causal); the Denoiser also runs centred windows
    #: through :meth:`denoise_frames` and ``fusion.fuse_series``.
    predicts = "last"

    def __init__(self, window: int = 5, widths: Sequence[int] = (16, 32, 64, 128), norm: str = "none",
                 sigma: float = 1.0, align: bool = True, averages_stage: bool = False,
                 averages_inversion: str | None = None) -> None:
        super().__init__()
        if int(window) < 2:
            raise ConfigError(f"Temporal window {window!r} is invalid; expected at least 2 frames.")
        self.window = int(window)
        self.frame = UNet2D(in_channels=1, out_channels=1, widths=widths, residual=True, norm=norm)
        self.fusion = MotionAdaptiveFusion(self.window - 1, sigma, align)
        #: The 2-D network of the second pass (:mod:`livedenoise.second_pass`), where it is not ``frame``: after a
        #: fine-tune, which adapts ``frame`` on single frames only, the backbone's own 2-D stage stays here for the
        #: averaged frames (:meth:`keep_averages_stage`). None: the second pass runs ``frame`` too.
        self.averages: UNet2D | None = None
        #: How :attr:`averages`' outputs are inverted (``Normalizer.inversion`` of the model it came from), where
        #: that differs from the checkpoint's normaliser (the "unbiased" inverse of a self-supervised fine-tune written
        #: by a release before 2026-12-05).
        self.averages_inversion = averages_inversion
        if averages_inversion is not None and (not averages_stage or averages_inversion not in INVERSIONS):
            raise ConfigError(f"Temporal averages_inversion={averages_inversion!r} is invalid; expected one of "
                              f"{', '.join(INVERSIONS)}, and only with averages_stage=True.")
        if averages_stage:
            self.averages = UNet2D(in_channels=1, out_channels=1, widths=widths, residual=True, norm=norm)
        self.in_channels = 1
        self.out_channels = 1
        self.arch_kwargs = {"window": self.window, "widths": list(self.frame.widths), "norm": norm,
                            "sigma": float(sigma), "align": bool(align)}
        if averages_stage:  # only then, so that the metadata of a model without one is as it always was
            self.arch_kwargs["averages_stage"] = True
        if averages_inversion is not None:
            self.arch_kwargs["averages_inversion"] = averages_inversion

    def keep_averages_stage(self, inversion: str) -> None:
        """Keep the current 2-D stage as the second pass's network (:attr:`averages`), unless one is kept already;
        call before ``frame`` changes.

        Why: a fine-tune adapts ``frame`` on the single frames of a calibration or a stack, while the second pass
        feeds the network the average of up to ``window`` frames, an input with the noise of several times the
        light. In ``benchmarks/bench_temporal_pairs.py`` (5 pairs, simulated confocal time-lapses) the fine-tuned
        stage was better on single frames (+0.3 dB) but worse on the averages (batch -0.36 dB at 5 photons and
        -1.07 dB at 20), and the backbone's stage on the averages with the fine-tuned one on single frames beat
        both (see the README's "Time-lapses"). ``inversion``: how the current stage's outputs are inverted (the
        normaliser's ``inversion`` it ran with)."""
        if self.averages is None:
            self.averages = copy.deepcopy(self.frame)
            self.averages_inversion = inversion
            self.arch_kwargs.update(averages_stage=True, averages_inversion=inversion)

    @property
    def size_multiple(self) -> int:
        return self.frame.size_multiple

    @property
    def tile_safe(self) -> bool:
        return self.frame.tile_safe

    @property
    def widths(self) -> tuple[int, ...]:
        return self.frame.widths

    def receptive_field_radius(self) -> int:
        return self.frame.receptive_field_radius() + self.fusion.radius

    def denoise_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """The 2-D stage on frames ``[N, 1, H, W]`` (network units)."""
        return self.frame(frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"TemporalUNet expects [B, 1, T, H, W], got shape {tuple(x.shape)}")
        b, _, t, h, w = x.shape
        frames = x[:, 0, -self.window:]
        t = frames.shape[1]
        d = self.frame(frames.reshape(b * t, 1, h, w)).reshape(b, t, h, w)
        return self.fusion(d, t - 1)[:, None]


def temporal_from_frame_model(frame_model: UNet2D, window: int = 5, sigma: float = 1.0,
                              align: bool = True) -> TemporalUNet:
    """A :class:`TemporalUNet` whose 2-D stage is a copy of ``frame_model`` (a residual 1-channel U-Net)."""
    if not isinstance(frame_model, UNet2D) or frame_model.in_channels != 1 or frame_model.out_channels != 1 \
            or not frame_model.residual:
        raise ConfigError("A temporal backbone can only start from a residual 1-channel 2-D U-Net backbone.")
    model = TemporalUNet(window=window, widths=frame_model.widths, norm=frame_model.norm, sigma=sigma, align=align)
    model.frame.load_state_dict(frame_model.state_dict())
    return model
