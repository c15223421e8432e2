"""Real structure for the synthetic training bank: clean fields cut from high-SNR microscope images.

Why: the synthetic bank (:mod:`simulators.structures`) draws eleven kinds of structure, but real cells hold
textures no renderer was written for. A backbone pretrained only on rendered fields beats variance-
stabilised BM3D by 3 dB on the simulator and by 0.4 dB on real dev pairs; part of that gap is
structure. High-SNR images (the clean halves of pairs, long exposures, averages) show real structure;
cut into fields and scaled like the rendered ones (background near 0, brightest structures near 1),
they join the bank, and each batch still draws fresh camera noise from the exact camera model
(:func:`livedenoise.training.synthetic.noisy_pair`), so the network never sees one noise twice.

Caveat, by design visible in the provenance: a "clean" image keeps some noise of its own, which the
network learns as structure; references much cleaner than the data to denoise (averages of many
frames, long exposures) are what to give it. Evaluate a model trained on a data set's references on
*other* data only (``benchmarks/bench_real_structure.py`` holds each dev set out in turn).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from livedenoise.errors import InputDataError
from livedenoise.training.synthetic import CleanBank

#: Percentiles mapped to 0 and 1 (the rendered fields' convention: background 0, brightest structures ~1).
LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.9
#: A field whose spread (after scaling) is below this is background only and left out.
MIN_FIELD_STD = 0.02


def clean_bank_from_images(images: Sequence[np.ndarray], size: int = 128, *, per_image: int = 64, seed: int = 0,
                           names: Sequence[str] | None = None) -> CleanBank:
    """Square ``size`` fields cut from ``images`` (overlapping by half), at most ``per_image`` from each.

    Each image is scaled by its own percentiles (``LOW_PERCENTILE`` -> 0, ``HIGH_PERCENTILE`` -> 1, negatives
    clipped); fields with no structure (``MIN_FIELD_STD``) are skipped; images smaller than ``size`` are
    skipped too (named in the description). ``names`` (one per image) go into the provenance.
    """
    rng = np.random.default_rng(seed)
    fields, used, skipped = [], [], []
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    if len(names) != len(images):
        raise InputDataError(f"{len(images)} structure images but {len(names)} names")
    for name, image in zip(names, images, strict=True):
        img = np.asarray(image, np.float64)
        if img.ndim != 2:
            raise InputDataError(f"{name}: a structure image must be 2-D, got shape {img.shape}")
        if not np.isfinite(img).all():
            raise InputDataError(f"{name}: a structure image holds NaN or infinite values")
        if min(img.shape) < size:
            skipped.append(name)
            continue
        lo, hi = np.percentile(img, (LOW_PERCENTILE, HIGH_PERCENTILE))
        if hi <= lo:
            skipped.append(name)
            continue
        scaled = np.clip((img - lo) / (hi - lo), 0.0, None).astype(np.float32)
        step = max(1, size // 2)
        corners = [(y, x) for y in range(0, img.shape[0] - size + 1, step)
                   for x in range(0, img.shape[1] - size + 1, step)]
        rng.shuffle(corners)
        taken = 0
        for y, x in corners:
            field = scaled[y:y + size, x:x + size]
            if float(field.std()) < MIN_FIELD_STD:
                continue
            fields.append(field)
            taken += 1
            if taken >= per_image:
                break
        if taken:
            used.append(name)
        else:
            skipped.append(name)
    if not fields:
        raise InputDataError(f"no structure fields of {size}x{size} pixels could be cut from {len(images)} image(s); "
                             f"expected high-SNR images at least {size} pixels on each side with visible structure")
    stack = np.stack(fields)
    digest = hashlib.sha256(stack[:, ::8, ::8].tobytes()).hexdigest()[:12]
    return CleanBank(stack, {"source": "real structure images", "images": used, "skipped": skipped,
                             "fields": len(fields), "size": size, "per_image": per_image, "digest": digest,
                             "scaling": f"percentiles {LOW_PERCENTILE:g} -> 0, {HIGH_PERCENTILE:g} -> 1"})


def structure_images_from(folder: str | Path) -> list[tuple[str, np.ndarray]]:
    """(name, image) for the high-SNR images in ``folder`` (and one level of sub-folders): the ``*_clean.tif``
    halves when the folder holds pairs (the ``--pairs`` layout), else every ``.tif``/``.tiff`` file."""
    from livedenoise.training.pairs import read_image

    root = Path(folder)
    if not root.is_dir():
        raise InputDataError(f"{root}: structure folder not found (expected high-SNR TIFF images or a pairs folder)")
    files = sorted(root.glob("*.tif*")) + sorted(root.glob("*/*.tif*"))
    clean = [f for f in files if f.name.endswith(("_clean.tif", "_clean.tiff"))]
    chosen = clean or [f for f in files if not f.name.endswith(("_noisy.tif", "_noisy.tiff"))]
    if not chosen:
        raise InputDataError(f"{root}: no TIFF images found for real structure")
    return [(str(f.relative_to(root)), read_image(f)) for f in chosen]


class MixedSampler:
    """Batches from several samplers (same interface as ``PatchSampler``), each chosen with its weight.

    Every batch comes whole from one sampler (the choice is random per batch, seeded); validation batches
    take ``n`` from each in turn, so the held-out loss covers all the sources.
    """

    supervised = True

    def __init__(self, samplers: Sequence, weights: Sequence[float], seed: int = 0) -> None:
        if len(samplers) != len(weights) or not samplers:
            raise ValueError("one weight per sampler is needed")
        w = np.asarray(weights, np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"sampler weights {list(weights)} must be non-negative with a positive sum")
        self.samplers = list(samplers)
        self.weights = w / w.sum()
        self.rng = np.random.default_rng(seed)
        self.data = self  # PatchSampler compatibility: ``sampler.data.supervised``

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(self.rng.choice(len(self.samplers), p=self.weights))
        return self.samplers[i].sample()

    def fixed_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for s, w in zip(self.samplers, self.weights, strict=True):
            if w > 0:
                out += s.fixed_batches(max(1, round(n * w)))
        return out
