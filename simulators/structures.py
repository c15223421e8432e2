"""A broad family of fluorescent structures, rendered one field at a time, for backbone pretraining.

Why a second renderer beside :mod:`simulators.sample`: the virtual slide there drives the simulated
microscope (a few structure kinds on a periodic canvas, moving puncta, drift). A backbone that has
to serve every sample needs far more variety than that: cytoskeleton (curved and straight),
organelle networks (ER-like meshes), membranes and cell outlines, diffuse cytoplasm, vesicles,
puncta of several sizes, nuclei, fine speckle texture, in any mix, under PSFs from confocal to
defocused widefield, with out-of-focus haze. Each :func:`render_field` call draws one such field
(noise-free photon rate, brightest structures near 1), fast enough to fill a bank of hundreds of
fields in about a minute on a CPU.

``STRAIGHT_FILAMENTS`` (actin-like stress fibres) is a kind of its own so that a benchmark can hold
it out of training and test on it as an unseen structure.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from simulators.sample import _curve

STRAIGHT_FILAMENTS = "straight_filaments"


def _splat_local(canvas: np.ndarray, ys: np.ndarray, xs: np.ndarray, weights: np.ndarray | float) -> None:
    """Bilinear splat of points onto a non-periodic canvas (points outside are dropped)."""
    h, w = canvas.shape
    weights = np.broadcast_to(np.asarray(weights, np.float32), ys.shape)
    keep = (ys >= 0) & (ys < h - 1) & (xs >= 0) & (xs < w - 1)
    ys, xs, weights = ys[keep], xs[keep], weights[keep]
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    fy, fx = (ys - y0).astype(np.float32), (xs - x0).astype(np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(canvas, (y0 + dy, x0 + dx), weights * wy * wx)


def _lines(rng: np.random.Generator, size: int, count: int, length: tuple[float, float],
           curvature: tuple[float, float], width: tuple[float, float]) -> np.ndarray:
    canvas = np.zeros((size, size), np.float32)
    for _ in range(count):
        y, x = _curve(rng, rng.uniform(*length), rng.uniform(*curvature), (size, size))
        y, x = y - size * 0.25 + rng.uniform(-0.25, 0.25) * size, x - size * 0.25 + rng.uniform(-0.25, 0.25) * size
        _splat_local(canvas, y, x, 0.5 * rng.uniform(0.3, 1.0))
    w = rng.uniform(*width)
    return gaussian_filter(canvas, w) * (2 * np.pi * w * w) ** 0.5 if w > 0.05 else canvas


def curved_filaments(rng: np.random.Generator, size: int) -> np.ndarray:
    """Microtubule-like gently curved lines, sparse to dense."""
    return _lines(rng, size, int(rng.integers(3, 30)), (0.4 * size, 2.5 * size), (0.005, 0.06), (0.0, 0.6))


def straight_filaments(rng: np.random.Generator, size: int) -> np.ndarray:
    """Actin stress-fibre-like straight bundles, often roughly parallel (held out of training by default)."""
    canvas = np.zeros((size, size), np.float32)
    base = rng.uniform(0, np.pi)
    for _ in range(int(rng.integers(3, 25))):
        angle = base + rng.normal(0, 0.25)
        length = rng.uniform(0.3, 1.5) * size
        t = np.arange(0, length, 0.5)
        cy, cx = rng.uniform(0, size, 2)
        y = cy + (t - length / 2) * np.sin(angle)
        x = cx + (t - length / 2) * np.cos(angle)
        _splat_local(canvas, y, x, 0.5 * rng.uniform(0.3, 1.0))
    w = rng.uniform(0.0, 1.0)
    return gaussian_filter(canvas, w) * (2 * np.pi * w * w) ** 0.5 if w > 0.05 else canvas


def tubes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Mitochondria-like short, thick, curved tubes."""
    return _lines(rng, size, int(rng.integers(5, 40)), (8, 60), (0.05, 0.2), (0.8, 2.2)) * 1.5


def puncta(rng: np.random.Generator, size: int) -> np.ndarray:
    """Point-like spots (vesicles, receptors, single complexes), a few to hundreds, brightness spread."""
    canvas = np.zeros((size, size), np.float32)
    n = int(rng.integers(5, 250))
    ys, xs = rng.uniform(0, size, (2, n))
    _splat_local(canvas, ys, xs, rng.uniform(0.2, 1.0, n).astype(np.float32))
    w = rng.uniform(0.0, 1.5)
    return gaussian_filter(canvas, w) * (2 * np.pi * max(w, 0.7) ** 2) if w > 0.05 else canvas * 3


def rings(rng: np.random.Generator, size: int) -> np.ndarray:
    """Vesicle / endosome outlines and filled disks of 2-10 px radius."""
    canvas = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(3, 40))):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(2, 10)
        d = np.hypot(yy - cy, xx - cx)
        if rng.random() < 0.6:
            canvas += rng.uniform(0.3, 1.0) * np.exp(-0.5 * ((d - r) / 0.7) ** 2)
        else:
            canvas += rng.uniform(0.2, 0.7) / (1 + np.exp(np.minimum((d - r) * 2.0, 50.0)))
    return canvas


def _voronoi_labels(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    seeds = np.ones((size, size), bool)
    ys, xs = rng.integers(0, size, (2, n))
    seeds[ys, xs] = False
    _, (iy, ix) = distance_transform_edt(seeds, return_indices=True)
    return iy * size + ix


def _boundaries(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, np.float32)
    edge[:-1] += labels[:-1] != labels[1:]
    edge[:, :-1] += labels[:, :-1] != labels[:, 1:]
    return np.minimum(edge, 1.0)


def network(rng: np.random.Generator, size: int) -> np.ndarray:
    """ER-like polygonal mesh of thin tubules (Voronoi edges, some removed), with brighter sheets."""
    labels = _voronoi_labels(rng, size, int(rng.integers(15, 120)))
    edges = _boundaries(labels)
    keep = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 6) > rng.uniform(-0.3, 0.1)
    out = gaussian_filter(edges * keep, 0.6) * rng.uniform(1.5, 3.0)
    sheets = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 10)
    out += np.clip(sheets / (sheets.std() + 1e-9) - 1.2, 0, None) * rng.uniform(0.0, 0.3)
    return out


def _cells(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    labels = _voronoi_labels(rng, size, int(rng.integers(2, 12)))
    return labels, _boundaries(labels)


def membranes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cell outlines (plasma membrane) with uneven brightness along them."""
    _, edges = _cells(rng, size)
    edges = gaussian_filter(edges, rng.uniform(0.5, 1.5))
    modulation = 1 + 0.5 * gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 8) * 8
    return np.clip(edges * np.clip(modulation, 0.2, None), 0, None) * 3


def cytoplasm(rng: np.random.Generator, size: int) -> np.ndarray:
    """Diffuse, smoothly varying fluorescence filling cells (soluble proteins), with darker nuclei holes."""
    labels, edges = _cells(rng, size)
    texture = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), rng.uniform(2, 12))
    texture = np.exp(texture / (texture.std() + 1e-9) * rng.uniform(0.2, 0.6))
    level = rng.uniform(0.2, 1.0, int(labels.max()) + 1).astype(np.float32)[labels]
    gaps = gaussian_filter(edges, 2) * 6  # dark gaps between cells
    out = texture * level * np.clip(1 - gaps, 0, 1)
    if rng.random() < 0.6:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx, r = *rng.uniform(0, size, 2), rng.uniform(8, 30)
            out *= 1 - 0.7 / (1 + np.exp((np.hypot(yy - cy, xx - cx) - r) * 0.5))
    return out * 0.4


def nuclei(rng: np.random.Generator, size: int) -> np.ndarray:
    """Textured ellipses with soft edges (DNA stains), with nucleoli-like darker spots."""
    out = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(1, 5))):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(15, 60, 2)
        th = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)) / rx
        v = (-(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)) / ry
        r = np.sqrt(u * u + v * v)
        texture = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), rng.uniform(1, 4))
        texture = np.clip(1 + rng.uniform(0.2, 0.5) * texture / (texture.std() + 1e-9), 0.1, None)
        out += rng.uniform(0.3, 1.0) / (1 + np.exp((r - 1) * rng.uniform(8, 25))) * texture
    return out


def speckle(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dense fine texture (e.g. crowded small organelles), rectified smooth noise at 1-2 px."""
    t = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), rng.uniform(0.8, 2.0))
    t = np.clip(t / (t.std() + 1e-9) - rng.uniform(0.0, 1.5), 0, None)
    envelope = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 16)
    return t * np.clip(0.5 + envelope / (envelope.std() + 1e-9), 0, None) * 0.5


def rods(rng: np.random.Generator, size: int) -> np.ndarray:
    """Rod-shaped bacteria: filled capsules 3-9 px wide and 2-6 widths long, scattered or in clusters,
    each with its own brightness, some with brighter poles or a division septum."""
    out = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    clustered = rng.random() < 0.4
    centre = rng.uniform(0, size, 2)
    for _ in range(int(rng.integers(3, 60))):
        cy, cx = (centre + rng.normal(0, size / 8, 2)) if clustered else rng.uniform(0, size, 2)
        radius = rng.uniform(1.5, 4.5)
        half = radius * rng.uniform(1.0, 3.0)
        th = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
        v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
        d = np.hypot(np.clip(np.abs(u) - half, 0, None), v)  # distance to the capsule's axis segment
        body = 1 / (1 + np.exp(np.minimum((d - radius) * 3.0, 50.0)))
        if rng.random() < 0.3:  # brighter poles (polar proteins) or a dim septum at the middle
            body *= 1 + 0.8 * np.exp(-0.5 * ((np.abs(u) - half) / radius) ** 2)
        elif rng.random() < 0.2:
            body *= 1 - 0.6 * np.exp(-0.5 * (u / 0.8) ** 2)
        out += rng.uniform(0.2, 1.0) * body
    return out


#: Structure kinds by name; each renderer takes (rng, size) and returns a field before the PSF.
KINDS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "curved_filaments": curved_filaments, STRAIGHT_FILAMENTS: straight_filaments, "tubes": tubes,
    "puncta": puncta, "rings": rings, "network": network, "membranes": membranes, "cytoplasm": cytoplasm,
    "nuclei": nuclei, "speckle": speckle, "rods": rods,
}


def _smooth_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """A smooth random field with zero mean and unit spread at the given length scale (px)."""
    t = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), scale, mode="wrap")
    return (t - t.mean()) / (t.std() + 1e-9)


def _illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """Uneven illumination (vignetting, a tilted or off-centre beam): a smooth gain of 0.3-1 over the field."""
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) - size / 2) / size
    gy, gx = rng.normal(0, 0.8, 2)
    shade = (1 + gy * yy + gx * xx - rng.uniform(0, 1.5) * (yy ** 2 + xx ** 2)
             + 0.15 * _smooth_field(rng, size, size / 4))
    shade = np.clip(shade, 0.05, None)
    return (0.3 + 0.7 * (shade - shade.min()) / (np.ptp(shade) + 1e-9)) if np.ptp(shade) > 0 else shade


def _debris(rng: np.random.Generator, size: int) -> np.ndarray:
    """Absorbing dirt or bubbles: a few dark, soft spots that dim whatever is under them."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    transmission = np.ones((size, size), np.float32)
    for _ in range(int(rng.integers(1, 12))):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(2, 12)
        transmission *= 1 - rng.uniform(0.3, 0.9) * np.exp(-0.5 * (np.hypot(yy - cy, xx - cx) / r) ** 4)
    return transmission


def render_field(rng: np.random.Generator, size: int, kinds: Sequence[str] | None = None, *,
                 max_kinds: int = 3, psf_sigma: tuple[float, float] = (0.35, 2.5)) -> np.ndarray:
    """One noise-free field (float32, ``size`` x ``size``): 1 to ``max_kinds`` structure kinds under a PSF.

    Brightest structures (99.9th percentile) are scaled to 1; a share of fields carries out-of-focus
    haze (a strongly blurred copy), as widefield images do, a smooth autofluorescence pedestal, uneven
    illumination, or dark absorbing debris: real fields are rarely evenly lit on a flat background, and a
    denoiser that has only seen flat backgrounds smooths their gradients into steps. PSF widths reach
    below one pixel (undersampled, pixel-sharp structure, as on 60x/100x objectives with large pixels). Photon
    levels, background and noise are the camera model's job (:mod:`livedenoise.training.synthetic`).
    """
    names = list(kinds) if kinds is not None else list(KINDS)
    unknown = sorted(set(names) - set(KINDS))
    if unknown or not names:
        raise ValueError(f"unknown structure kind(s) {unknown or names}; expected some of {', '.join(KINDS)}")
    chosen = rng.choice(names, size=int(rng.integers(1, min(max_kinds, len(names)) + 1)), replace=False)
    field = np.zeros((size, size), np.float32)
    for name in chosen:
        part = KINDS[str(name)](rng, size)
        p = float(np.percentile(part, 99.9))
        field += part / p * rng.uniform(0.3, 1.0) if p > 0 else part
    sigma = float(np.exp(rng.uniform(np.log(psf_sigma[0]), np.log(psf_sigma[1]))))
    field = gaussian_filter(field, sigma, mode="reflect")
    if rng.random() < 0.4:
        field += gaussian_filter(field, rng.uniform(5, 20), mode="reflect") * rng.uniform(0.2, 1.5)
    if rng.random() < 0.25:  # autofluorescence / out-of-focus glow that does not follow the structures
        glow = np.clip(1 + 0.5 * _smooth_field(rng, size, rng.uniform(size / 8, size / 2)), 0, None)
        field += glow * rng.uniform(0.05, 0.4) * float(np.percentile(field, 99.9))
    if rng.random() < 0.3:
        field *= _illumination(rng, size)
    if rng.random() < 0.15:
        field *= _debris(rng, size)
    p = float(np.percentile(field, 99.9))
    return (field / p if p > 0 else field).astype(np.float32)
