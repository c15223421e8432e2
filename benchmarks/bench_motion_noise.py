"""The noise model of a time-lapse whose sample moves: temporal differences with and without the motion check.

    python benchmarks/bench_motion_noise.py            # 5/20/100 photons, two optics, still and moving samples
    python benchmarks/bench_motion_noise.py --quick    # 100 photons, confocal, still and moving

What this answers: ``denoise`` (and live sessions, and ``denoise_array(time_lapse=True)``) fit the noise of a
time-lapse from the differences of its frames, which are pure noise only where the sample did not move. Where it
moved, the differences also hold the change of the image, and the fitted noise is too large: the denoiser then
smooths away what the noise model calls noise. :data:`livedenoise.noise_model.MOTION_RATIO` compares the temporal
fit with the single-image fit of the same frames and uses the latter where the temporal one is larger by more than
that factor. For each case this prints the temporal fit's excess, both fits' variance against the camera's true
variance at the field's bright level, and the PSNR of the fast backbone (frame by frame, as ``denoise`` runs it on
a time-lapse with ``--model fast``) with each fit, beside VST+BM3D given the single-image fit of each frame
(``bench_backbone.cached_bm3d``), all against the sample (the camera's median gain and offset).

Data: the project simulator as in ``bench_temporal.py`` (Andor Zyla preset, its per-pixel camera model, 20 ms
frames, a slide of filaments, mitochondria, nuclei and puncta), 8 frames of 256² per case; *moving*: puncta that
random-walk (10 px/s rms) and drift (25, 15 px/s), *still*: neither.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, finite_mean, machine, machine_line, publish, table

EXPOSURE_S = 0.02
OPTICS = {"confocal": 1.0, "widefield": 2.0}


def simulate(photons: float, optics: str, moving: bool, frames: int, size: int, seed: int) -> dict:
    """A time-lapse of one field, the sample through a flat camera per frame, and the camera's true noise model."""
    from simulators.config import MicroscopeConfig, SampleConfig
    from simulators.microscope import SimulatedMicroscope

    sample = SampleConfig(slide_width=1024, slide_height=1024, peak_rate=photons / EXPOSURE_S,
                          background_rate=0.05 * photons / EXPOSURE_S, psf_sigma=OPTICS[optics],
                          motion=10.0 if moving else 0.0, drift=(25.0, 15.0) if moving else (0.0, 0.0),
                          bleaching_rate=0.5, density=1.5, seed=seed)
    mic = SimulatedMicroscope(MicroscopeConfig(camera="andor-zyla-4.2", sample=sample, roi_width=size,
                                               roi_height=size, exposure_ms=EXPOSURE_S * 1000, light_power=100.0,
                                               seed=seed + 1))
    cam = mic.camera
    gain, offset = float(np.median(cam.maps.gain)), float(np.median(cam.maps.offset))
    noisy, flat = [], []
    for _ in range(frames):
        electrons = np.minimum(cam.mean_electrons(mic.expected_photons(), EXPOSURE_S), cam.config.full_well)
        flat.append((electrons * gain + offset).astype(np.float32))
        noisy.append(mic.snap().image)
    return {"noisy": np.stack(noisy), "flat": np.stack(flat), "gain": gain, "offset": offset}


def fits(stack: np.ndarray, like) -> dict:
    """The product's fit of the stack as one field (with the motion check) and the same fit without the check."""
    from livedenoise import noise_model

    checked = noise_model.fit_noise_model(list(stack), like=like, same_field=True)
    saved = noise_model.MOTION_RATIO
    noise_model.MOTION_RATIO = math.inf  # the fit as it was before the check
    try:
        unchecked = noise_model.fit_noise_model(list(stack), like=like, same_field=True)
    finally:
        noise_model.MOTION_RATIO = saved
    return {"checked": checked, "unchecked": unchecked}


def denoise(ckpt, fit, stack: np.ndarray) -> np.ndarray:
    from livedenoise.inference import Denoiser

    model = ckpt.clone()
    model.normalizer = fit.normalizer
    den = Denoiser(model, device="cpu")
    return np.stack([den.denoise(f) for f in stack]).astype(np.float32)


def psnr(flat: np.ndarray, out: np.ndarray) -> float:
    from livedenoise.metrics import score

    return finite_mean([score(t, o).psnr for t, o in zip(flat, out, strict=True)])


HEADER = ["photons", "optics", "sample", "temporal excess", "fit used", "var/true before", "var/true now", "raw",
          "fast, before", "fast, now", "gain", "VST+BM3D"]


def _row(entry: dict) -> list[str]:
    ps, var = entry["psnr"], entry["var_at_bright_over_true"]
    return [f"{entry['photons']:g}", entry["optics"], "moving" if entry["moving"] else "still",
            f"{entry['temporal_excess']:.2f}", entry["method"], f"{var['unchecked']:.2f}", f"{var['checked']:.2f}",
            f"{ps['raw']:.2f}", f"{ps['fast, unchecked']:.2f}", f"{ps['fast, checked']:.2f}",
            f"{ps['fast, checked'] - ps['fast, unchecked']:+.2f}",
            f"{ps['VST+BM3D']:.2f}" if "VST+BM3D" in ps else "–"]


def motion_table(payload: dict) -> str:
    """The cases as a Markdown table with its legend (also the README block ``motion-noise``)."""
    cases = payload["cases"]
    first = cases[0]
    legend = (f"Backbone `{payload['backbone']}` ({payload['backbone_steps']} steps), frame by frame; "
              f"{first['frames']} frames per case; PSNR dB against the sample; *temporal excess*: temporal-difference "
              "variance / single-image variance (the larger at the median and bright levels); above "
              f"{payload['motion_ratio']} the single-image fit is used; *var/true*: the fit's variance at the bright "
              "level / the camera's shot-noise variance there; *before*: without the check (what `denoise` did "
              "before); VST+BM3D with each frame's single-image fit.")
    moving = [c for c in cases if c["moving"]]
    changed = [c for c in cases if c["method"] != "temporal differences"]
    gains = [c["psnr"]["fast, checked"] - c["psnr"]["fast, unchecked"] for c in cases]
    summary = (f"The check changed the fit in {len(changed)} of {len(cases)} cases ({len(moving)} moving); PSNR change "
               f"{min(gains):+.2f} to {max(gains):+.2f} dB, mean {sum(gains) / len(gains):+.2f} dB.")
    return "\n".join([legend, "", table(HEADER, [_row(c) for c in cases]), "", summary])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100 photons, confocal only")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--no-bm3d", action="store_true", help="skip VST+BM3D (it needs the peers environment)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT / "motion-noise")
    args = p.parse_args(argv)

    from bench_backbone import cached_bm3d

    from livedenoise.modelspec import load_model_spec

    ckpt = load_model_spec("fast")
    t = ckpt.training or {}
    cases = [(100.0, "confocal")] if args.quick else [(ph, o) for ph in (5.0, 20.0, 100.0) for o in OPTICS]
    results = []
    for photons, optics in cases:
        for moving in (False, True):
            s = simulate(photons, optics, moving, args.frames, args.size, seed=int(photons) + (7 if moving else 0))
            f = fits(s["noisy"], ckpt.normalizer)
            bright = float(np.percentile(s["flat"].mean(axis=0), 99.5))
            true_var = s["gain"] * (bright - s["offset"])  # shot noise at the bright level (read noise ~1-2 ADU^2)
            entry = {"photons": photons, "optics": optics, "moving": moving, "frames": args.frames,
                     "temporal_excess": f["checked"].temporal_excess, "method": f["checked"].method,
                     "warnings": f["checked"].warnings,
                     "var_at_bright_over_true": {k: (fit.a_adu * bright + fit.b_adu) / true_var
                                                 for k, fit in f.items()},
                     "psnr": {"raw": psnr(s["flat"], s["noisy"].astype(np.float32))}}
            for k, fit in f.items():
                entry["psnr"][f"fast, {k}"] = psnr(s["flat"], denoise(ckpt, fit, s["noisy"]))
            if not args.no_bm3d:
                outs, _ = cached_bm3d(list(s["noisy"]))
                entry["psnr"]["VST+BM3D"] = psnr(s["flat"], np.stack(outs).astype(np.float32))
            results.append(entry)
            print(" | ".join(_row(entry)), flush=True)
    info = machine()
    payload = {"machine": info, "backbone": ckpt.name, "backbone_steps": t.get("total_steps", t.get("steps")),
               "motion_ratio": None, "cases": results, "command": " ".join(["python", *sys.argv])}
    from livedenoise.noise_model import MOTION_RATIO

    payload["motion_ratio"] = MOTION_RATIO
    md = "\n".join(["# A moving sample's noise model: temporal differences checked against single frames", "",
                    f"- machine: {machine_line(info)}", "", motion_table(payload)])
    publish(args.output, "motion-noise", payload, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
