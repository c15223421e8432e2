"""A camera calibration's per-pixel maps: what they do for the denoised output, beside VST+BM3D, in one run.

    python benchmarks/bench_calibration.py                  # fast backbone, 4 structures x 4 photon levels
    python benchmarks/bench_calibration.py --quick          # 2 structures, 5 and 20 photons

With a calibration (``livedenoise calibrate-camera``; here the simulator's own maps, exactly known), the noise
model takes each pixel's offset and gain out before the network. This benchmark scores three ways to use it,
and the same for VST+BM3D, on the project simulator (Andor Zyla 4.2 preset, 256² fields of each structure at
1-100 photons, test fields of :class:`livedenoise.evaluate.SimulatedTask`):

* ``no calibration``: the noise model fitted to the frame alone (what ``livedenoise denoise`` does without one);
* ``calibration, pattern put back``: the maps taken out before the network and put back into its output (what
  releases before 2026-12-05 did);
* ``calibration``: the maps taken out, the output in the ADU of a camera without the fixed pattern (the median
  gain and offset; what :meth:`livedenoise.normalization.Normalizer.inverse` does since).

Scored with PSNR and SSIM (``livedenoise.metrics.score``) against the sample as a camera without the fixed
pattern records it (``SimulatedTask.truth_flat``: the pattern is noise to remove) and, as a second view, against
the camera's expected image with its pattern (``truth``). VST+BM3D stabilises with the same normaliser
(``scale = 1``, unbiased inverse) and inverts the same way.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, PeerError, finite_mean, load_average, machine, publish, report, run_peer, table

STRUCTURES = ("filaments", "puncta", "mitochondria", "nuclei")
PHOTONS = (1.0, 5.0, 20.0, 100.0)
WAYS = ("no calibration", "calibration, pattern put back", "calibration")


def _pattern_back(out: np.ndarray, norm, maps) -> np.ndarray:
    """An output of the flat inverse with the per-pixel maps put back, as the earlier inverse did."""
    e = (np.asarray(out, np.float64) - norm.offset) / norm.gain
    return (e * maps.gain + maps.offset).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    import logging

    from livedenoise.camera_calibration import CameraCalibration
    from livedenoise.device import configure_cpu_threads
    from livedenoise.evaluate import SimulatedTask
    from livedenoise.inference import Denoiser
    from livedenoise.metrics import score
    from livedenoise.modelspec import load_model_spec
    from livedenoise.noise_model import normalizer_for

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="filaments and puncta at 5 and 20 photons")
    ap.add_argument("--model", default="fast", help="backbone (default fast)")
    ap.add_argument("--fields", type=int, default=2, help="test fields per structure and photon level")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bm3d", action="store_true", help="skip VST+BM3D")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.WARNING)
    configure_cpu_threads(args.threads)
    load_start = load_average()
    structures = STRUCTURES[:2] if args.quick else STRUCTURES
    photons = (5.0, 20.0) if args.quick else PHOTONS
    backbone = load_model_spec(args.model, device="cpu")
    rows: list[dict] = []
    t0 = time.perf_counter()
    for structure in structures:
        task = SimulatedTask(structure, args.size)
        maps = task.camera.maps
        cal = CameraCalibration(maps.offset.astype(np.float32), maps.read_var.astype(np.float32),
                                maps.gain.astype(np.float32), {"source": "the simulator's own maps"})
        for peak in photons:
            rng = np.random.default_rng([7, int(peak * 10)])
            for i, rate in enumerate(task.fields("test", 0, args.fields)):
                frame = task.expose(rate, peak, rng)
                truths = {"sample": task.truth_flat(rate, peak), "with pattern": task.truth(rate, peak)}
                norms = {"no calibration": normalizer_for([frame], like=backbone.normalizer),
                         "calibration": normalizer_for([frame], like=backbone.normalizer, calibration=cal)}
                outs: dict[tuple[str, str], np.ndarray] = {}
                for key, norm in norms.items():
                    ckpt = backbone.clone()
                    ckpt.normalizer = norm
                    outs["network", key] = Denoiser(ckpt, device="cpu").denoise(frame)
                if not args.no_bm3d:
                    for key, norm in norms.items():
                        peer = norm.copy(scale=1.0, inversion="unbiased")
                        z = peer.to_stabilised(frame)
                        centre = float(np.median(z))  # BM3D commutes with a shift; its float32 prefers small values
                        try:
                            den, _, _ = run_peer({"method": "bm3d", "sigma": 1.0}, [z - centre])
                        except PeerError as exc:
                            print(f"[calibration] VST+BM3D skipped: {exc}", flush=True)
                            args.no_bm3d = True
                            break
                        outs["VST+BM3D", key] = peer.inverse(den[0] + centre)
                for (method, key), out in list(outs.items()):
                    if key == "calibration":
                        outs[method, "calibration, pattern put back"] = _pattern_back(out, norms[key], maps)
                for (method, way), out in outs.items():
                    row = {"structure": structure, "photons": peak, "field": i, "method": method, "way": way}
                    for name, truth in truths.items():
                        s = score(truth, out)
                        row[f"psnr {name}"], row[f"ssim {name}"] = s.psnr, s.ssim
                    rows.append(row)
            got = {(r["method"], r["way"]): r["psnr sample"] for r in rows
                   if r["structure"] == structure and r["photons"] == peak}
            print(f"[calibration] {structure} {peak:g} ph: " + ", ".join(f"{m} / {w} {v:.2f}"
                                                                      for (m, w), v in sorted(got.items())),
                  flush=True)
    info = {**machine(), "load_average_start": load_start}
    command = ("python benchmarks/bench_calibration.py" + (" --quick" if args.quick else "")
               + (f" --model {args.model}" if args.model != "fast" else "")
               + (f" --fields {args.fields}" if args.fields != 2 else "")
               + (f" --size {args.size}" if args.size != 256 else "") + (" --no-bm3d" if args.no_bm3d else ""))
    payload = {"machine": info, "model": backbone.name, "model_steps": backbone.training.get("total_steps"),
               "rows": rows, "structures": list(structures), "photons": list(photons), "fields": args.fields,
               "size": args.size, "seconds": time.perf_counter() - t0, "command": command}
    publish(args.output, "calibration" + ("-quick" if args.quick else ""), payload, render(payload))
    return 0


def summary(payload: dict) -> list[list[str]]:
    """Per method and way: mean PSNR against the sample at each photon level, overall, and against the camera's
    expected image with its pattern (means over structures and fields)."""
    rows = payload["rows"]
    body = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for way in WAYS:
            sel = [r for r in rows if r["method"] == method and r["way"] == way]
            if not sel:
                continue
            per = [finite_mean([r["psnr sample"] for r in sel if r["photons"] == p]) for p in payload["photons"]]
            body.append([method, way, *(f"{v:.2f}" for v in per),
                         f"**{finite_mean([r['psnr sample'] for r in sel]):.2f}**",
                         f"{finite_mean([r['ssim sample'] for r in sel]):.3f}",
                         f"{finite_mean([r['psnr with pattern'] for r in sel]):.2f}"])
    return body


def render(payload: dict, heading: bool = True) -> str:
    header = ["method", "camera maps", *(f"{p:g} ph" for p in payload["photons"]), "mean PSNR", "mean SSIM",
              "mean PSNR, truth with the pattern"]
    steps = f", {payload['model_steps']} steps" if payload.get("model_steps") else ""
    lines = [f"PSNR (dB) against the sample as a camera without the fixed pattern records it, mean over "
             f"{', '.join(payload['structures'])} ({payload['fields']} test fields of {payload['size']}² each); "
             f"network: `{payload['model']}`{steps}.", "", table(header, summary(payload))]
    return report("Camera calibration maps: the output with and without the fixed pattern", payload, lines, heading)


if __name__ == "__main__":
    sys.exit(main())
