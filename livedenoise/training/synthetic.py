"""Synthetic training pairs at compute speed: a bank of clean fields, camera noise drawn per step in torch.

Why: the first backbones saw ~2,000 steps because every pair was simulated from scratch in numpy
(slide rendering, float64 Poisson draws); the simulator, not the network, set the step rate. Here the
expensive part, rendering noise-free structures, is done once (:class:`CleanBank`, cached on disk),
and each training batch draws fresh noise from the exact camera model on random crops, which costs a
few milliseconds. Every batch is new data, so the network cannot memorise the noise.

The camera model (per sample of a batch; ranges in :class:`NoiseRecipe`):

* photoelectrons ``lam = QE*photons``: the clean crop (brightest structures ~1) times a peak drawn
  log-uniformly, plus a background pedestal;
* ``e = Poisson(lam)``; ADU ``x = round(g_i * e + N(0, (g*s_i)^2) + o_i)`` with per-pixel gain
  ``g_i`` (a few % spread), read noise ``s_i`` (log-normal spread, a tail of noisy pixels) and offset
  ``o_i`` (fixed pattern);
* optionally an 8-bit display render (what many shared data sets hold): ``x' = clip(round((x - lo) *
  k), 0, 255)`` with a black level that may clip the background and a white level near the top.

The network input is what inference computes, the generalised Anscombe transform with the (median)
camera parameters, divided by ``BACKBONE_SCALE``; those parameters are perturbed by a few per cent,
as a noise fit on real data is. The target is the transform of the noise-free ADU image (clipped where
the render clips), so the backbone keeps the algebraic inverse (see :mod:`livedenoise.normalization`)
and learns to remove the fixed pattern, which no spatial prior can predict.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from livedenoise.normalization import gat_torch

log = logging.getLogger("livedenoise")


@dataclass(frozen=True)
class NoiseRecipe:
    """Ranges the camera and photon level of each training sample are drawn from."""

    min_photons: float = 0.7  #: peak photoelectrons of the brightest structures (log-uniform)
    max_photons: float = 3000.0
    max_background: float = 0.25  #: background pedestal as a fraction of the peak (uniform 0..max)
    min_read_noise: float = 0.4  #: median read noise, e- rms (log-uniform)
    max_read_noise: float = 6.0
    read_noise_spread: float = 0.3  #: log-normal sigma of the per-pixel read noise
    noisy_pixel_fraction: float = 0.005
    noisy_pixel_factor: float = 5.0  #: read noise of the noisy pixels, times the median
    min_offset: float = 20.0  #: camera dark offset, ADU (uniform)
    max_offset: float = 120.0
    min_gain: float = 0.2  #: ADU per e- (log-uniform)
    max_gain: float = 8.0
    max_gain_spread: float = 0.02  #: per-pixel relative gain spread (uniform 0..max)
    max_offset_spread: float = 0.8  #: per-pixel offset spread, in e- (uniform 0..max)
    render_8bit: float = 0.25  #: share of samples turned into 8-bit display renders
    max_black_clip: float = 0.3  #: in an 8-bit render, up to this share of pixels may clip to 0
    parameter_error: float = 0.05  #: relative error of the gain / read variance the input is normalised with
    #: share of samples blurred after the camera (Gaussian, sigma uniform in the range, px): processed frames whose
    #: noise is spatially correlated. Input and target are both blurred; the input keeps the camera's (pre-blur)
    #: noise level, which is what the noise fit's correlated-noise matching recovers at inference.
    correlated: float = 0.15
    min_correlation_sigma: float = 0.5
    max_correlation_sigma: float = 1.5
    scale: float = 10.0  #: network units = GAT / scale (the backbone convention)

    def describe(self) -> dict:
        return asdict(self)


class CleanBank:
    """Noise-free fields (N, S, S) float32, brightest structures near 1, from any renderer, cached on disk."""

    def __init__(self, fields: np.ndarray, description: dict | None = None) -> None:
        fields = np.asarray(fields, np.float32)
        if fields.ndim != 3 or fields.shape[0] < 1:
            raise ValueError(f"a clean bank needs an (N, S, S) array of fields, got shape {fields.shape}")
        self.fields = fields
        self.description = dict(description or {})

    def __len__(self) -> int:
        return int(self.fields.shape[0])

    @classmethod
    def build(cls, render: Callable[[np.random.Generator, int], np.ndarray], n: int, size: int, *, seed: int,
              description: dict, cache_dir: str | Path | None = None,
              progress: Callable[[int, int], None] | None = None,
              ) -> CleanBank:
        """Render ``n`` fields with ``render(rng, size)`` (or load them from ``cache_dir`` when rendered before).

        The cache file name is a hash of ``description``, ``n``, ``size`` and ``seed``: change the recipe
        and a new bank is rendered. Written under a temporary name and renamed when complete.
        """
        desc = {**description, "n": int(n), "size": int(size), "seed": int(seed)}
        key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"clean-bank-{key}.npy" if cache_dir is not None else None
        if path is not None and path.exists():
            fields = np.load(path, allow_pickle=False)
            if fields.shape == (n, size, size):
                log.info("clean bank: %d fields of %dx%d from %s", n, size, size, path)
                return cls(fields, desc)
        rng = np.random.default_rng(seed)
        fields = np.empty((n, size, size), np.float32)
        for i in range(n):
            fields[i] = render(rng, size)
            if progress is not None:
                progress(i + 1, n)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".partial.npy")
            np.save(tmp, fields, allow_pickle=False)
            tmp.replace(path)
        return cls(fields, desc)


def _log_uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.exp(torch.empty(n, device=gen.device).uniform_(math.log(lo), math.log(hi), generator=gen))


def noisy_pair(clean: torch.Tensor, recipe: NoiseRecipe, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(network input, target), both [B, F, P, P] in backbone units, from clean crops [B, F, P, P].

    See the module docstring for the model; every sample has its own camera and photon level. The ``F``
    frames of a sample (a time-lapse window; 1 for still images) share its camera, fixed pattern included,
    and get independent shot and read noise.

    Every draw is made on the generator's device, where ``clean`` must be too: on a GPU the noise costs
    no host time, so the host does not limit the training step rate.
    """
    dev = gen.device
    if not _same_device(clean.device, dev):
        raise ValueError(f"clean crops on {clean.device} but the noise generator on {dev}: put both on one device")

    def rand(*size: int) -> torch.Tensor:
        return torch.rand(size, generator=gen, device=dev)

    def randn(*size: int) -> torch.Tensor:
        return torch.randn(size, generator=gen, device=dev)

    b = clean.shape[0]
    shape = (b, 1, 1, 1)
    pixels = (b, 1, *clean.shape[2:])  # the camera's per-pixel maps, shared by a sample's frames
    peak = _log_uniform(gen, b, recipe.min_photons, recipe.max_photons).view(shape)
    background = rand(b).view(shape) * recipe.max_background * peak
    lam = clean * peak + background
    read = _log_uniform(gen, b, recipe.min_read_noise, recipe.max_read_noise).view(shape)
    gain = _log_uniform(gen, b, recipe.min_gain, recipe.max_gain).view(shape)
    offset = recipe.min_offset + (recipe.max_offset - recipe.min_offset) * rand(b).view(shape)
    pixel_read = read * torch.exp(recipe.read_noise_spread * randn(*pixels))
    noisy_px = rand(*pixels) < recipe.noisy_pixel_fraction
    pixel_read = torch.where(noisy_px, pixel_read * recipe.noisy_pixel_factor, pixel_read)
    pixel_gain = gain * (1.0 + recipe.max_gain_spread * rand(*shape)
                         * randn(*pixels))
    pixel_offset = (offset + gain * recipe.max_offset_spread * rand(*shape)
                    * randn(*pixels))
    electrons = torch.poisson(lam, generator=gen)
    adu = pixel_gain * electrons + gain * pixel_read * randn(*clean.shape) + pixel_offset
    adu = torch.clamp(torch.round(adu), min=0.0)  # the ADC's floor
    clean_adu = gain * lam + offset
    if recipe.correlated > 0:
        blurred = rand(*shape) < recipe.correlated
        if bool(blurred.any()):
            sigma = (recipe.min_correlation_sigma
                     + (recipe.max_correlation_sigma - recipe.min_correlation_sigma) * rand(b))
            adu = torch.where(blurred, _blur(adu, sigma), adu)
            clean_adu = torch.where(blurred, _blur(clean_adu.expand_as(adu), sigma), clean_adu)
    # The read variance the transform assumes: the median pixel's, plus rounding (1/12 ADU^2).
    read_var = read**2 + 1.0 / (12.0 * gain**2)

    render = rand(*shape) < recipe.render_8bit
    if bool(render.any()):
        # An 8-bit display render: black level between the dark offset and a clipping quantile, white near the
        # brightest pixels (one sort per batch gives every sample's quantiles).
        ordered = adu.view(b, -1).sort(dim=1).values
        n = ordered.shape[1]
        rows = torch.arange(b, device=dev)
        q = rand(b) * recipe.max_black_clip
        black_clip = ordered[rows, (q * (n - 1)).long()].view(shape)
        unclipped = offset - 3.0 * gain * read * rand(*shape)  # black below the dark level
        black = torch.where(rand(*shape) < 0.5, unclipped, torch.maximum(black_clip, unclipped))
        top = ordered[:, int(0.999 * (n - 1))].view(shape)
        white = black + (top - black) * (0.8 + 0.4 * rand(*shape))
        k = 255.0 / torch.clamp(white - black, min=1.0)
        adu8 = torch.clamp(torch.round((adu - black) * k), 0, 255)
        clean8 = torch.clamp((clean_adu - black) * k, 0, 255)
        adu = torch.where(render, adu8, adu)
        clean_adu = torch.where(render, clean8, clean_adu)
        offset = torch.where(render, (offset - black) * k, offset)
        # both roundings: the camera's (1/12 ADU^2) and the render's (1/12 of an 8-bit level)
        read_var = torch.where(render, read_var + 1.0 / (12.0 * (gain * k) ** 2), read_var)
        gain = torch.where(render, gain * k, gain)

    err = recipe.parameter_error
    gain_n = gain * (1.0 + err * randn(*shape))
    read_var_n = torch.clamp(read_var * (1.0 + 2.0 * err * randn(*shape)), min=0.0)
    x = gat_torch((adu - offset) / gain_n, read_var_n) / recipe.scale
    y = gat_torch((clean_adu - offset) / gain_n, read_var_n) / recipe.scale
    return x.float(), y.float()


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one (``cuda`` and ``cuda:0`` are, when 0 is the current CUDA device)."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def _blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Each sample of ``x`` [B, F, H, W] blurred by its own Gaussian (``sigma`` [B], px), reflect padding."""
    b, f = x.shape[:2]
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(t[None, :] ** 2) / (2.0 * sigma[:, None].to(x.dtype) ** 2))
    g = g / g.sum(dim=1, keepdim=True)
    k = (g[:, :, None] * g[:, None, :])[:, None].repeat_interleave(f, dim=0)  # [B*F, 1, K, K]
    padded = torch.nn.functional.pad(x.reshape(1, b * f, *x.shape[-2:]), (radius,) * 4, mode="reflect")
    return torch.nn.functional.conv2d(padded, k, groups=b * f).reshape(x.shape)


class SyntheticPairSampler:
    """Batches of fresh synthetic pairs from a :class:`CleanBank` (the interface of ``PatchSampler``).

    ``sample()`` draws random crops with flips and 90-degree rotations and new noise every call;
    ``fixed_batches(n)`` gives the same ``n`` batches every time (validation). On a ``device`` other than
    the CPU the crops are cut on the host (cheap copies) and the camera noise is drawn on the device.
    """

    def __init__(self, bank: CleanBank, patch_size: int, batch_size: int, recipe: NoiseRecipe | None = None,
                 seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.bank = bank
        self.patch = int(min(patch_size, bank.fields.shape[-1]))
        self.batch_size = int(batch_size)
        self.recipe = recipe or NoiseRecipe()
        self.seed = int(seed)
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.data = self  # PatchSampler compatibility: ``sampler.data.supervised``

    supervised = True

    def centre_crop(self, rng: np.random.Generator, side: int) -> np.ndarray:
        """A random ``side`` x ``side`` crop of a random bank field, randomly rotated by 90-degree steps and flipped."""
        n, size = len(self.bank), self.bank.fields.shape[-1]
        i = int(rng.integers(n))
        y, x = rng.integers(0, size - side + 1, 2)
        crop = np.rot90(self.bank.fields[i, y:y + side, x:x + side], int(rng.integers(4)))
        return crop[:, ::-1] if rng.integers(2) else crop

    def _crops(self, rng: np.random.Generator) -> torch.Tensor:
        out = np.empty((self.batch_size, 1, self.patch, self.patch), np.float32)
        for j in range(self.batch_size):
            out[j, 0] = self.centre_crop(rng, self.patch)
        return torch.from_numpy(out).to(self.device)

    def _batch(self, rng: np.random.Generator, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return noisy_pair(self._crops(rng), self.recipe, gen)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._batch(self.rng, self.gen)

    def fixed_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng(self.seed + 777)
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 777)
        return [self._batch(rng, gen) for _ in range(n)]
