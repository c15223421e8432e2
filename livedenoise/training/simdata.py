"""Simulated noisy/clean pairs for backbone pretraining (the Wang et al. recipe, broadened).

Each pair is a field of a virtual slide (filaments, puncta, mitochondria-like tubes, nuclei, in
varying mixes and densities, PSF sigma 0.8-1.6 px) imaged by a simulated sCMOS camera preset at a
peak signal drawn log-uniformly between ``min_photons`` and ``max_photons``. The clean image is the
camera's noise-free expectation in the same ADU units, so the pair differs only by noise. Each pair
carries the exact normaliser of its camera (offset, gain, read noise) in the backbone's convention.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from livedenoise.normalization import Normalizer
from simulators.camera import SCMOSCamera
from simulators.config import SampleConfig, StructureKind, load_camera_preset
from simulators.sample import Sample
from simulators.structures import KINDS, render_field

if TYPE_CHECKING:  # for the annotation only: structure_bank imports it when called
    from livedenoise.training.synthetic import CleanBank

#: Network units: GAT (noise std 1) divided by this, so 1000-photon peaks sit near 6 and noise at 0.1.
BACKBONE_SCALE = 10.0
CAMERA_PRESETS = ("andor-zyla-4.2", "generic-16bit-scmos", "generic-12bit-scmos")
STRUCTURE_MIXES: tuple[list[StructureKind], ...] = (
    ["filaments"], ["puncta", "filaments"], ["mitochondria"], ["nuclei", "puncta"],
    ["filaments", "puncta", "mitochondria", "nuclei"], ["mitochondria", "puncta"],
)


@dataclass
class SimulatedPair:
    noisy: np.ndarray  # camera dtype
    clean: np.ndarray  # float32 expected ADU
    normalizer: Normalizer
    peak_photons: float
    camera: str


def camera_normalizer(camera: SCMOSCamera) -> Normalizer:
    """The exact normaliser of a simulated camera (median maps) in the backbone convention."""
    m = camera.maps
    return Normalizer(offset=float(np.median(m.offset)), gain=float(np.median(m.gain)), noise_a=1.0,
                      noise_b=float(np.median(m.read_var) / np.median(m.gain) ** 2), vst=True, scale=BACKBONE_SCALE)


def simulated_pairs(n: int, size: int = 128, *, seed: int = 0, min_photons: float = 2.0, max_photons: float = 1000.0,
                    slide_size: int = 768) -> Iterator[SimulatedPair]:
    """Yield ``n`` simulated pairs of ``size`` x ``size`` pixels, reproducibly from ``seed``."""
    rng = np.random.default_rng(seed)
    slides = []
    for k, mix in enumerate(STRUCTURE_MIXES):
        cfg = SampleConfig(slide_width=slide_size, slide_height=slide_size, structures=mix,
                           density=float(rng.uniform(0.6, 2.0)), peak_rate=1.0, background_rate=0.0,
                           psf_sigma=float(rng.uniform(0.8, 1.6)), seed=seed * 100 + k)
        slides.append(Sample(cfg))
    cameras = [SCMOSCamera(load_camera_preset(p).model_copy(update={"seed": seed + i}), roi=(size, size))
               for i, p in enumerate(CAMERA_PRESETS)]
    for _ in range(n):
        sample = slides[int(rng.integers(len(slides)))]
        cam_i = int(rng.integers(len(cameras)))
        cam = cameras[cam_i]
        y0, x0 = rng.uniform(0, slide_size, 2)
        rate = sample.field(y0, x0, size, size, sample.config.psf_sigma)  # peak ~1 at peak_rate=1
        peak = float(np.exp(rng.uniform(np.log(min_photons), np.log(max_photons))))
        background = peak * float(rng.uniform(0.0, 0.1))
        photons = (rate * peak + background).astype(np.float32)
        t = 0.02
        yield SimulatedPair(cam.expose(photons, t, rng), cam.expected(photons, t), camera_normalizer(cam), peak,
                            CAMERA_PRESETS[cam_i])


def structure_bank(n: int, size: int = 256, *, seed: int = 0, held_out: tuple[str, ...] = (),
                   cache_dir=None) -> CleanBank:
    """A bank of ``n`` clean fields of every structure kind except ``held_out`` (see :mod:`simulators.structures`)."""
    from livedenoise.training.synthetic import CleanBank

    kinds = [k for k in KINDS if k not in set(held_out)]
    if not kinds:
        raise ValueError(f"every structure kind is held out ({', '.join(held_out)}); keep at least one")
    import hashlib
    import inspect

    import simulators.structures as structures

    # the renderer's source is part of the cache key: an edited renderer never reuses a stale bank
    code = hashlib.sha256(inspect.getsource(structures).encode()).hexdigest()[:12]
    desc = {"renderer": "simulators.structures.render_field", "code": code, "kinds": kinds,
            "held_out": sorted(held_out)}
    return CleanBank.build(lambda rng, s: render_field(rng, s, kinds), n, size, seed=seed, description=desc,
                           cache_dir=cache_dir)
