"""Fine-tuning the temporal backbone from a few calibration pairs: does it add to the shipped one on new fields?

    python benchmarks/bench_temporal_pairs.py                  # 5 pairs, 60 s, 5 and 20 photons
    python benchmarks/bench_temporal_pairs.py --pairs 10 --seconds 120
    python benchmarks/bench_temporal_pairs.py --psf 0.3 --fixed-pattern --with-2d   # a sample the backbones never saw
    python benchmarks/bench_temporal_pairs.py --reference exact --with-2d          # the ceiling: noise-free references

What this answers (issue "Time-lapses", the CNNT paper's claim): with 5 low/high pairs from the same sample
and settings, does ``finetune`` (which adapts the temporal backbone's 2-D stage and keeps its fusion) beat the
shipped temporal backbone by >= 1 dB on time-lapses of *other* fields of that sample?

Data: the project simulator (as in ``bench_temporal.py``: Zyla camera model, confocal PSF, 20 ms frames).
Calibration: ``--pairs`` stage positions of the slide held still (a fixed reference, as a live session's
calibration takes it), the low frame one acquisition, the reference the mean of 16 acquisitions at the same
settings (``finetune(..., match_reference=False)``, as the live session's ``reference = "average"``). Test:
time-lapses of ``--frames`` frames at other positions, with the slide drifting and the puncta moving. Scored
against the sample (fixed pattern removed), as ``bench_temporal.py`` does.

``--psf SIGMA`` images a sample through another PSF (pairs and test fields alike): 0.3 px is an undersampled
image, sharper than any the backbones were trained on (their bank's PSFs start at 0.6 px), the case where the
CNNT paper's claim should show. ``--reference exact`` replaces each reference by the noise-free, pattern-free
sample (no microscope gives that): the most 5 pairs can teach. ``--with-2d`` also fine-tunes the fast 2-D backbone
on the same pairs and scores it frame by frame (the 2-D claim of the quality issue, on the simulator); the temporal
model's fine-tune changes only its 2-D stage, which is that network, so the two fine-tunes differ only where the
time budget cuts them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_temporal import EXPOSURE_S, OPTICS, flat_truth, network, score_series, simulate_series
from common import DEFAULT_OUTPUT, finite_mean, machine, machine_line, publish, table

REFERENCE_FRAMES = 16


def calibration_pairs(photons: float, optics: str, n: int, size: int, seed: int, psf_sigma: float | None = None,
                      reference: str = "average") -> tuple[list, list]:
    """``n`` (low, reference) pairs at stage positions far from the test fields, slide held still.

    ``reference``: ``average`` (the mean of :data:`REFERENCE_FRAMES` acquisitions at the same settings) or
    ``exact`` (the sample through a flat camera, no noise: what ``score_series`` scores against)."""
    from simulators.config import MicroscopeConfig, SampleConfig
    from simulators.microscope import SimulatedMicroscope

    sample = SampleConfig(slide_width=1024, slide_height=1024, peak_rate=photons / EXPOSURE_S,
                          background_rate=0.05 * photons / EXPOSURE_S,
                          psf_sigma=OPTICS[optics] if psf_sigma is None else psf_sigma, density=1.5, seed=seed)
    mic = SimulatedMicroscope(MicroscopeConfig(camera="andor-zyla-4.2", sample=sample, roi_width=size, roi_height=size,
                                               exposure_ms=EXPOSURE_S * 1000, light_power=100.0, seed=seed + 2))
    lows, refs = [], []
    for i in range(n):
        mic.set_position(x_um=30.0 + 30.0 * i, y_um=45.0)  # 300 px apart at 0.1 um/px: no overlap with the test field
        if reference == "exact":
            refs.append(flat_truth(mic, mic.expected_photons()))
        lows.append(mic.snap().image)
        # the reference frames are taken either way, so the low frames' noise is the same in both modes
        average = np.mean([mic.snap().image for _ in range(REFERENCE_FRAMES)], axis=0).astype(np.float32)
        if reference == "average":
            refs.append(average)
    return lows, refs


def main(argv: list[str] | None = None) -> int:
    import logging

    from livedenoise.modelspec import load_model_spec
    from livedenoise.training.finetune import finetune

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=60.0, help="fine-tuning time budget")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--calibration", type=Path,
                    help="camera calibration (livedenoise calibrate-camera --simulate --camera andor-zyla-4.2 --roi "
                         "256x256) used by the fine-tune and by every model's noise model")
    ap.add_argument("--fixed-pattern", action="store_true",
                    help="remove the camera's fixed pattern from the references first, as a live calibration does "
                         "(livedenoise.training.fixed_pattern: the median fine detail of the pairs' fields)")
    ap.add_argument("--psf", type=float, help="the sample's PSF sigma in px (default: confocal, 1 px)")
    ap.add_argument("--reference", choices=("average", "exact"), default="average",
                    help="average: the mean of 16 frames (default); exact: the noise-free sample (a ceiling)")
    ap.add_argument("--with-2d", action="store_true",
                    help="also fine-tune the fast 2-D backbone on the same pairs, scored frame by frame")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    if args.reference == "exact" and args.fixed_pattern:
        ap.error("--reference exact has no fixed pattern to remove; leave out --fixed-pattern")
    logging.getLogger("livedenoise").setLevel(logging.ERROR)
    backbone = load_model_spec("temporal")
    calibration = None
    if args.calibration is not None:
        from livedenoise.camera_calibration import CameraCalibration

        calibration = CameraCalibration.load(args.calibration)
    rows, cases = [], []
    for i, photons in enumerate((5.0, 20.0)):
        optics = "confocal"
        lows, refs = calibration_pairs(photons, optics, args.pairs, args.size, seed=424_000 + 2 * i,
                                       psf_sigma=args.psf, reference=args.reference)
        removal = None
        if args.fixed_pattern:
            from livedenoise.training.fixed_pattern import remove_fixed_pattern

            removal = remove_fixed_pattern(refs)
            refs = removal.references
        t0 = time.perf_counter()
        res = finetune(backbone, lows, refs, calibration=calibration, time_budget_s=args.seconds, device="cpu", seed=0,
                       match_reference=False)
        tune_s = time.perf_counter() - t0
        adapted_path = args.output / f"temporal-pairs-{photons:g}ph.safetensors"
        args.output.mkdir(parents=True, exist_ok=True)
        res.checkpoint.save(adapted_path)
        s = simulate_series(photons, optics, args.frames, args.size, seed=424_000 + 2 * i, psf_sigma=args.psf)
        if args.psf is not None:
            s.name = f"{photons:g} ph, PSF {args.psf:g} px"
        scores = {"raw": score_series(s, s.noisy.astype(np.float32))}
        for label, spec, mode in (("2-D fast", "fast", "frames"), ("temporal live", "temporal", "live"),
                                  ("temporal batch", "temporal", "batch"),
                                  ("adapted live", str(adapted_path), "live"),
                                  ("adapted batch", str(adapted_path), "batch")):
            out, _, _ = network(spec, s.noisy, mode, calibration)
            scores[label] = score_series(s, out)
        fit_2d = None
        if args.with_2d:
            res_2d = finetune(load_model_spec("fast"), lows, refs, calibration=calibration, time_budget_s=args.seconds,
                              device="cpu", seed=0, match_reference=False)
            path_2d = args.output / f"fast-pairs-{photons:g}ph.safetensors"
            res_2d.checkpoint.save(path_2d)
            scores["2-D fast adapted"] = score_series(s, network(str(path_2d), s.noisy, "frames", calibration)[0])
            fit_2d = {"steps": res_2d.fit.steps, "adapted": res_2d.adapted, "best_step": res_2d.fit.best_step,
                      "stopped": res_2d.fit.stopped}
        f = res.fit
        case = {"case": s.name, "pairs": args.pairs, "budget_s": args.seconds, "finetune_s": tune_s, "steps": f.steps,
                "adapted": res.adapted, "initial_val_loss": f.initial_val_loss, "best_val_loss": f.best_val_loss,
                "best_step": f.best_step, "stopped": f.stopped, "scores": scores,
                # which 2-D stage the adapted model's second pass runs: the backbone's, kept (TemporalUNet.averages)
                "second_pass_stage": "backbone" if getattr(res.checkpoint.model, "averages", None) is not None
                else "adapted",
                "fixed_pattern": None if removal is None else removal.describe(), "fit_2d": fit_2d}
        cases.append(case)
        gain = scores["adapted batch"]["psnr"] - scores["temporal batch"]["psnr"]
        print(f"[temporal-pairs] {s.name}: {f.steps} steps (adapted: {res.adapted}), batch "
              f"{scores['temporal batch']['psnr']:.2f} -> {scores['adapted batch']['psnr']:.2f} ({gain:+.2f} dB)",
              flush=True)
    labels = list(cases[0]["scores"])
    rows = [[c["case"], f"{c['steps']} ({'adapted' if c['adapted'] else 'kept the backbone'})"]
            + [f"{c['scores'][k]['psnr']:.2f} / {c['scores'][k]['ssim']:.3f}" for k in labels] for c in cases]
    gains = {m: finite_mean([c["scores"][f"adapted {m}"]["psnr"] - c["scores"][f"temporal {m}"]["psnr"] for c in cases])
             for m in ("live", "batch")}
    if args.with_2d:
        gains["2-D"] = finite_mean([c["scores"]["2-D fast adapted"]["psnr"] - c["scores"]["2-D fast"]["psnr"]
                                    for c in cases])
    info = machine()
    md = (f"Temporal backbone fine-tuned on {args.pairs} calibration pairs ({args.seconds:g} s budget), scored on "
          f"time-lapses ({args.frames} frames of {args.size}²) of other fields; PSNR dB / SSIM against the sample"
          + (f"; every noise model from the camera calibration {args.calibration}" if calibration else "")
          + ("; the camera's fixed pattern removed from the references (median fine detail of the fields)"
             if args.fixed_pattern else "") + ".\n\n"
          + table(["case", "fine-tune steps", *labels], rows)
          + f"\n\nMean gain of the adapted model over the shipped temporal backbone: live {gains['live']:+.2f} dB, "
          f"batch {gains['batch']:+.2f} dB"
          + (f"; of the adapted fast 2-D model over the fast backbone (frame by frame): {gains['2-D']:+.2f} dB"
             if "2-D" in gains else "") + f". {machine_line(info)}.\n")
    command = "python benchmarks/bench_temporal_pairs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    publish(args.output, "temporal-pairs", {"machine": info, "cases": cases, "gains": gains, "pairs": args.pairs,
                                            "budget_s": args.seconds, "calibration": str(args.calibration or ""),
                                            "fixed_pattern": args.fixed_pattern, "psf_sigma": args.psf,
                                            "reference": args.reference, "with_2d": args.with_2d,
                                            "command": command}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
