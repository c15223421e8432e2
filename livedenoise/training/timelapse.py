"""Synthetic time-lapse windows for the temporal backbone, drawn at compute speed from the clean bank.

Each sample is a window of ``T`` frames of one field, oldest first, as a live camera delivers them,
with what makes neighbouring frames differ in real time-lapses:

* **drift**: the field translates by a constant velocity (0-2.5 px/frame in half the samples) plus
  a random-walk jitter, at sub-pixel offsets (bilinear resampling of a larger crop; the newest frame,
  the target, is never resampled);
* **moving objects**: bright Gaussian spots (puncta, vesicles) moving independently, up to 4
  px/frame, that appear in some frames only when they cross the border;
* **bleaching** (or, read backwards in time, brightening): an exponential intensity trend of up to
  10 % per frame, and lamp flicker of a few per cent;
* **stage moves**: in a few samples the frames before a random cut show another field, so the
  network learns to ignore frames that do not belong to the scene.

Camera noise comes from :func:`~livedenoise.training.synthetic.noisy_pair`: one camera per window
(fixed pattern shared by its frames), independent shot and read noise per frame. The target is the
newest frame's noise-free image. :attr:`TimelapseSampler.last_moving` (set by every batch) tells which
target pixels show a moving spot, so benchmarks can report the error on moving and static structure separately.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from livedenoise.training.synthetic import CleanBank, NoiseRecipe, SyntheticPairSampler, noisy_pair


@dataclass(frozen=True)
class MotionRecipe:
    """Ranges the motion of each window is drawn from (per sample)."""

    drift_share: float = 0.5  #: share of windows whose field drifts
    max_drift: float = 2.5  #: px/frame, drift speed (uniform 0..max, random direction)
    jitter: float = 0.3  #: px/frame rms random-walk on top of the drift (drifting windows)
    max_spots: int = 12  #: moving spots per window (uniform 0..max)
    max_spot_speed: float = 4.0  #: px/frame
    min_spot_sigma: float = 0.8
    max_spot_sigma: float = 2.5
    bleach_share: float = 0.5
    max_bleach: float = 0.10  #: fractional intensity change per frame (either sign)
    flicker: float = 0.03  #: rms per-frame intensity jitter
    cut_share: float = 0.05  #: windows with a stage move (older frames from another field)

    def describe(self) -> dict:
        return asdict(self)


class TimelapseSampler(SyntheticPairSampler):
    """Batches ``(x [B, 1, T, P, P], y [B, 1, P, P])`` of synthetic windows (the ``PatchSampler`` interface)."""

    def __init__(self, bank: CleanBank, patch_size: int, batch_size: int, window: int = 5,
                 recipe: NoiseRecipe | None = None, motion: MotionRecipe | None = None, seed: int = 0) -> None:
        super().__init__(bank, patch_size, batch_size, recipe, seed)
        self.window = int(window)
        self.motion = motion or MotionRecipe()
        self.margin = math.ceil(self.motion.max_drift * (self.window - 1) + 3 * self.motion.jitter * self.window) + 2
        self.patch = int(min(patch_size, bank.fields.shape[-1] - 2 * self.margin))
        self.last_moving: torch.Tensor | None = None

    def _clean_windows(self, rng: np.random.Generator, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise-free windows [B, T, P, P] (brightest structures ~1) and the moving-spot mask of the newest frame."""
        b, t, p, m, mo = self.batch_size, self.window, self.patch, self.margin, self.motion
        side = p + 2 * m
        big = torch.from_numpy(np.stack([self.centre_crop(rng, side) for _ in range(b)]).astype(np.float32))[:, None]
        # Offsets of each frame relative to the newest one (which sits at the crop centre, offset 0).
        drifting = torch.rand(b, generator=gen) < mo.drift_share
        speed = torch.rand(b, generator=gen) * mo.max_drift * drifting
        angle = torch.rand(b, generator=gen) * 2 * math.pi
        velocity = torch.stack([speed * torch.sin(angle), speed * torch.cos(angle)], dim=1)  # [B, 2] px/frame (y, x)
        steps = torch.randn((b, t - 1, 2), generator=gen) * mo.jitter * drifting[:, None, None]
        walk = torch.cat([torch.zeros(b, 1, 2), torch.cumsum(steps.flip(1), dim=1)], dim=1).flip(1)  # 0 at newest
        age = torch.arange(t - 1, -1, -1, dtype=torch.float32)  # frames before the newest
        offsets = -velocity[:, None, :] * age[None, :, None] + walk  # [B, T, 2]
        pix = torch.arange(p, dtype=torch.float32) + m
        oy, ox = offsets[..., 0][:, :, None, None], offsets[..., 1][:, :, None, None]
        grid_y = ((pix[:, None] + oy) / (side - 1) * 2 - 1).expand(b, t, p, p)
        grid_x = ((pix[None, :] + ox) / (side - 1) * 2 - 1).expand(b, t, p, p)
        grid = torch.stack([grid_x, grid_y], dim=-1)  # [B, T, P, P, 2] as (x, y), align_corners=True
        frames = torch.nn.functional.grid_sample(
            big.expand(-1, t, -1, -1).reshape(b * t, 1, side, side), grid.reshape(b * t, p, p, 2),
            mode="bilinear", padding_mode="reflection", align_corners=True).reshape(b, t, p, p)
        frames[:, -1] = big[:, 0, m:m + p, m:m + p]  # the target frame is never resampled
        spots, moving = self._spots(gen)
        frames = frames + spots
        trend = ((2 * torch.rand(b, generator=gen) - 1) * mo.max_bleach
                 * (torch.rand(b, generator=gen) < mo.bleach_share))
        scale = torch.exp(trend[:, None] * age[None, :]) * (1 + mo.flicker * torch.randn((b, t), generator=gen))
        frames = frames * scale.clamp(min=0.1)[:, :, None, None]
        frames = frames / scale[:, -1:].clamp(min=0.1)[:, :, None, None]  # the newest frame keeps its brightness
        cut = torch.rand(b, generator=gen) < mo.cut_share
        for j in torch.nonzero(cut).flatten().tolist():
            k = int(rng.integers(1, t))  # frames 0..k-1 come from another field
            other = torch.from_numpy(np.ascontiguousarray(self.centre_crop(rng, p), dtype=np.float32))
            frames[j, :k] = other * float(scale[j, 0])
        return frames, moving

    def _spots(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Moving Gaussian spots [B, T, P, P] and the mask [B, P, P] of newest-frame pixels they cover."""
        b, t, p, mo = self.batch_size, self.window, self.patch, self.motion
        k = max(1, mo.max_spots)
        present = torch.rand((b, k), generator=gen) < (torch.rand((b, 1), generator=gen) * mo.max_spots / k)
        pos = torch.rand((b, k, 2), generator=gen) * (p + 8) - 4  # newest-frame position, may sit just outside
        speed = torch.rand((b, k), generator=gen) * mo.max_spot_speed
        angle = torch.rand((b, k), generator=gen) * 2 * math.pi
        vel = torch.stack([speed * torch.sin(angle), speed * torch.cos(angle)], dim=-1)
        age = torch.arange(t - 1, -1, -1, dtype=torch.float32)
        centres = pos[:, None] - vel[:, None] * age[None, :, None, None]  # [B, T, K, 2]
        sigma = mo.min_spot_sigma + (mo.max_spot_sigma - mo.min_spot_sigma) * torch.rand((b, 1, k, 1), generator=gen)
        amp = (0.3 + 0.7 * torch.rand((b, 1, k), generator=gen)) * present[:, None]
        coords = torch.arange(p, dtype=torch.float32)
        gy = torch.exp(-(coords - centres[..., 0:1]) ** 2 / (2 * sigma**2))  # [B, T, K, P]
        gx = torch.exp(-(coords - centres[..., 1:2]) ** 2 / (2 * sigma**2))
        spots = torch.einsum("btk,btky,btkx->btyx", amp.expand(-1, t, -1), gy, gx)
        newest = torch.einsum("bk,bky,bkx->byx", present.float(), gy[:, -1], gx[:, -1])
        return spots, newest > 0.1

    def _batch(self, rng: np.random.Generator, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        clean, moving = self._clean_windows(rng, gen)
        x, y = noisy_pair(clean, self.recipe, gen)
        self.last_moving = moving
        return x[:, None].contiguous(), y[:, -1:].contiguous()

    def describe(self) -> dict:
        return {"window": self.window, "patch": self.patch, "motion": self.motion.describe(),
                "noise": self.recipe.describe()}
