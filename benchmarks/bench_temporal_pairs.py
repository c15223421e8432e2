"""Fine-tuning the temporal backbone from a few calibration pairs: does it add to the shipped one on new fields?

    python benchmarks/bench_temporal_pairs.py                  # 5 pairs, 60 s, 5 and 20 photons
    python benchmarks/bench_temporal_pairs.py --pairs 10 --seconds 120

What this answers (issue "Time-lapses", the CNNT paper's claim): with 5 low/high pairs from the same sample
and settings, does ``finetune`` (which adapts the temporal backbone's 2-D stage and keeps its fusion) beat the
shipped temporal backbone by >= 1 dB on time-lapses of *other* fields of that sample?

Data: the project simulator (as in ``bench_temporal.py``: Zyla camera model, confocal PSF, 20 ms frames).
Calibration: ``--pairs`` stage positions of the slide held still (a fixed reference, as a live session's
calibration takes it), the low frame one acquisition, the reference the mean of 16 acquisitions at the same
settings (``finetune(..., match_reference=False)``, as the live session's ``reference = "average"``). Test:
time-lapses of ``--frames`` frames at other positions, with the slide drifting and the puncta moving. Scored
against the sample (fixed pattern removed), as ``bench_temporal.py`` does.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_temporal import EXPOSURE_S, OPTICS, network, score_series, simulate_series
from common import DEFAULT_OUTPUT, finite_mean, machine, machine_line, publish, table

REFERENCE_FRAMES = 16


def calibration_pairs(photons: float, optics: str, n: int, size: int, seed: int) -> tuple[list, list]:
    """``n`` (low, reference) pairs at stage positions far from the test fields, slide held still."""
    from simulators.config import MicroscopeConfig, SampleConfig
    from simulators.microscope import SimulatedMicroscope

    sample = SampleConfig(slide_width=1024, slide_height=1024, peak_rate=photons / EXPOSURE_S,
                          background_rate=0.05 * photons / EXPOSURE_S, psf_sigma=OPTICS[optics], density=1.5, seed=seed)
    mic = SimulatedMicroscope(MicroscopeConfig(camera="andor-zyla-4.2", sample=sample, roi_width=size, roi_height=size,
                                               exposure_ms=EXPOSURE_S * 1000, light_power=100.0, seed=seed + 2))
    lows, refs = [], []
    for i in range(n):
        mic.set_position(x_um=30.0 + 30.0 * i, y_um=45.0)  # 300 px apart at 0.1 um/px: no overlap with the test field
        lows.append(mic.snap().image)
        refs.append(np.mean([mic.snap().image for _ in range(REFERENCE_FRAMES)], axis=0).astype(np.float32))
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
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.ERROR)
    backbone = load_model_spec("temporal")
    calibration = None
    if args.calibration is not None:
        from livedenoise.camera_calibration import CameraCalibration

        calibration = CameraCalibration.load(args.calibration)
    rows, cases = [], []
    for i, photons in enumerate((5.0, 20.0)):
        optics = "confocal"
        lows, refs = calibration_pairs(photons, optics, args.pairs, args.size, seed=424_000 + 2 * i)
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
        s = simulate_series(photons, optics, args.frames, args.size, seed=424_000 + 2 * i)
        scores = {"raw": score_series(s, s.noisy.astype(np.float32))}
        for label, spec, mode in (("2-D fast", "fast", "frames"), ("temporal live", "temporal", "live"),
                                  ("temporal batch", "temporal", "batch"),
                                  ("adapted live", str(adapted_path), "live"),
                                  ("adapted batch", str(adapted_path), "batch")):
            out, _, _ = network(spec, s.noisy, mode, calibration)
            scores[label] = score_series(s, out)
        f = res.fit
        case = {"case": s.name, "pairs": args.pairs, "budget_s": args.seconds, "finetune_s": tune_s, "steps": f.steps,
                "adapted": res.adapted, "initial_val_loss": f.initial_val_loss, "best_val_loss": f.best_val_loss,
                "best_step": f.best_step, "stopped": f.stopped, "scores": scores,
                # which 2-D stage the adapted model's second pass runs: the backbone's, kept (TemporalUNet.averages)
                "second_pass_stage": "backbone" if getattr(res.checkpoint.model, "averages", None) is not None
                else "adapted",
                "fixed_pattern": None if removal is None else removal.describe()}
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
    info = machine()
    md = (f"Temporal backbone fine-tuned on {args.pairs} calibration pairs ({args.seconds:g} s budget), scored on "
          f"time-lapses ({args.frames} frames of {args.size}²) of other fields; PSNR dB / SSIM against the sample"
          + (f"; every noise model from the camera calibration {args.calibration}" if calibration else "")
          + ("; the camera's fixed pattern removed from the references (median fine detail of the fields)"
             if args.fixed_pattern else "") + ".\n\n"
          + table(["case", "fine-tune steps", *labels], rows)
          + f"\n\nMean gain of the adapted model over the shipped temporal backbone: live {gains['live']:+.2f} dB, "
          f"batch {gains['batch']:+.2f} dB. {machine_line(info)}.\n")
    command = ("python benchmarks/bench_temporal_pairs.py"
               + (f" --calibration {args.calibration}" if calibration else "")
               + (" --fixed-pattern" if args.fixed_pattern else ""))
    publish(args.output, "temporal-pairs", {"machine": info, "cases": cases, "gains": gains, "pairs": args.pairs,
                                            "budget_s": args.seconds, "calibration": str(args.calibration or ""),
                                            "fixed_pattern": args.fixed_pattern,
                                            "command": command}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
