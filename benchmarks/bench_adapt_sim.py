"""`--adapt self` on the project simulator, where the sample is known: does the fine-tune help, and does the
product's check (SURE on held-out rows) keep it only when it does?

    python benchmarks/bench_adapt_sim.py                  # fast backbone; filaments, puncta; 5 and 20 photons
    python benchmarks/bench_adapt_sim.py --budget 30 --structures filaments --photons 20

For each structure, photon level and way of fitting the noise model (``no calibration``: fitted to the frame;
``calibration``: the simulator's own per-pixel maps, as ``livedenoise calibrate-camera`` would measure them), one
256² training frame of :class:`livedenoise.evaluate.SimulatedTask` (Andor Zyla 4.2 preset) is fine-tuned on the way
``denoise --adapt self`` does (:func:`livedenoise.training.finetune.finetune`, ``--budget`` seconds) and denoised by

* the backbone with its fitted noise model (``backbone``);
* the fine-tuned weights whatever the check said (``fine-tuned``: what adaptation reached);
* what the product uses (``chosen``: the fine-tuned weights when the SURE check confirmed them, else the backbone).

PSNR (``livedenoise.metrics.score``) against the sample as a camera without the fixed pattern records it
(``truth_flat``) and against the camera's expected image with its pattern (``truth``). Every row records the
steps, the best step, and the SURE check twice on the same weights: with the product's noise variances (per
pixel from a calibration's read-noise map, else one level) and with one level everywhere, so the effect of the
per-pixel variances is seen on the same fits. A check is *right* when it keeps the fine-tune exactly when the
fine-tune scores above the backbone against the sample.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, finite_mean, load_average, machine, publish, report, table


def main(argv: list[str] | None = None) -> int:
    import copy
    import logging

    import livedenoise.training.finetune as ft
    from livedenoise.camera_calibration import CameraCalibration
    from livedenoise.config import TrainingConfig
    from livedenoise.device import configure_cpu_threads
    from livedenoise.evaluate import SimulatedTask
    from livedenoise.inference import Denoiser
    from livedenoise.metrics import score
    from livedenoise.modelspec import load_model_spec
    from livedenoise.noise_model import normalizer_for
    from livedenoise.training.finetune import finetune

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fast", help="backbone (default fast)")
    ap.add_argument("--structures", default="filaments,puncta")
    ap.add_argument("--photons", default="5,20")
    ap.add_argument("--budget", type=float, default=60.0, help="fine-tuning seconds per frame (default 60)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--psf", type=float, default=1.0,
                    help="the sample's PSF sigma in px (default 1; 0.3: sharper than any in the backbones' training)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.WARNING)
    configure_cpu_threads(args.threads)
    load_start = load_average()
    structures = [s for s in args.structures.split(",") if s]
    photons = [float(p) for p in args.photons.split(",") if p]
    backbone = load_model_spec(args.model, device="cpu")
    training = TrainingConfig(time_budget_s=args.budget, max_steps=1_000_000)
    rows: list[dict] = []
    t0 = time.perf_counter()
    # The check sends rejected weights back to the backbone's: keep a copy of what the fit reached, and score the
    # same weights with one noise level everywhere beside the product's per-pixel variances.
    product_check, seen = ft._full_image_check, {}

    def capturing_check(backbone_view, adapted_view, strips, noise_std, variances=None):
        seen["state"] = copy.deepcopy(adapted_view.inner_model.state_dict() if hasattr(adapted_view, "inner_model")
                                      else adapted_view.state_dict())
        seen["one level"] = product_check(backbone_view, adapted_view, strips, noise_std)
        return product_check(backbone_view, adapted_view, strips, noise_std, variances)

    ft._full_image_check = capturing_check
    for structure in structures:
        task = SimulatedTask(structure, args.size, psf_sigma=args.psf)
        maps = task.camera.maps
        cal = CameraCalibration(maps.offset.astype(np.float32), maps.read_var.astype(np.float32),
                                maps.gain.astype(np.float32), {"source": "the simulator's own maps"})
        rate = task.fields("train", 0, 1)[0]
        for peak in photons:
            frame = task.train_frames(peak, seed=0, n=1)[0]
            truths = {"sample": task.truth_flat(rate, peak), "with pattern": task.truth(rate, peak)}
            for way, calibration in (("no calibration", None), ("calibration", cal)):
                zero = backbone.clone()
                zero.normalizer = normalizer_for([frame], like=backbone.normalizer, calibration=calibration)
                seen.clear()
                res = finetune(backbone, [frame], None, calibration=calibration, device="cpu", seed=0,
                               training=training)
                meta = res.checkpoint.metadata["training"]
                outs = {"backbone": Denoiser(zero, device="cpu").denoise(frame)}
                tuned = None
                if "state" in seen:  # the weights the fit reached, whatever the check said
                    tuned = res.checkpoint.clone()
                    tuned.model.load_state_dict(seen["state"])
                row = {"structure": structure, "photons": peak, "way": way, "steps": res.fit.steps,
                       "best_step": res.fit.best_step, "stopped": res.fit.stopped, "adapted": res.adapted,
                       "rejected": res.fit.rejected, "sure_check": meta.get("sure_check"), "note": res.fit.note}
                if tuned is not None:
                    outs["fine-tuned"] = Denoiser(tuned, device="cpu").denoise(frame)
                    row["sure_one_level"] = seen["one level"]
                outs["chosen"] = (Denoiser(res.checkpoint, device="cpu").denoise(frame) if res.adapted
                                  else outs["backbone"])
                for name, out in outs.items():
                    for tname, truth in truths.items():
                        s = score(truth, out)
                        row[f"{name} psnr {tname}"], row[f"{name} ssim {tname}"] = s.psnr, s.ssim
                rows.append(row)
                got = "  ".join(f"{k.split(' psnr')[0]} {v:.2f}" for k, v in row.items() if k.endswith("psnr sample"))
                print(f"[adapt-sim] {structure} {peak:g} ph {way}: {got}; {res.fit.steps} steps, "
                      f"adapted {res.adapted}, check {meta.get('sure_check')}", flush=True)
    info = {**machine(), "load_average_start": load_start}
    command = ("python benchmarks/bench_adapt_sim.py" + (f" --model {args.model}" if args.model != "fast" else "")
               + f" --structures {args.structures} --photons {args.photons} --budget {args.budget:g}"
               + (f" --size {args.size}" if args.size != 256 else "")
               + (f" --psf {args.psf:g}" if args.psf != 1.0 else ""))
    payload = {"machine": info, "model": backbone.name, "model_steps": backbone.training.get("total_steps"),
               "rows": rows, "budget_s": args.budget, "size": args.size, "psf_sigma": args.psf,
               "seconds": time.perf_counter() - t0,
               "command": command}
    publish(args.output, "adapt-sim", payload, render(payload))
    return 0


def _fine_tuned_psnr(row: dict, truth: str) -> float:
    return row.get(f"fine-tuned psnr {truth}", row["backbone psnr " + truth])


def render(payload: dict, heading: bool = True) -> str:
    header = ["structure", "photons", "camera maps", "backbone", "fine-tuned", "chosen", "vs truth with pattern "
              "(backbone → fine-tuned)", "steps (best)", "SURE check: backbone → fine-tuned (kept)",
              "one level: backbone → fine-tuned (would keep)", "check right", "one level right"]
    body = []
    right = right_one = 0
    for r in payload["rows"]:
        gain = _fine_tuned_psnr(r, "sample") - r["backbone psnr sample"]
        chk = r.get("sure_check") or {}
        one = r.get("sure_one_level") or {}
        kept = bool(r["adapted"])
        ok = kept == (gain > 0) if "fine-tuned psnr sample" in r else None
        one_keeps = bool(one) and one["adapted"] < one["backbone"] - (chk.get("margin") or 0.0)
        ok_one = one_keeps == (gain > 0) if one else None
        right += bool(ok)
        right_one += bool(ok_one)
        body.append([r["structure"], f"{r['photons']:g}", r["way"], f"{r['backbone psnr sample']:.2f}",
                     f"{_fine_tuned_psnr(r, 'sample'):.2f}" if "fine-tuned psnr sample" in r else "—",
                     f"{r['chosen psnr sample']:.2f}",
                     f"{r['backbone psnr with pattern']:.2f} → {_fine_tuned_psnr(r, 'with pattern'):.2f}",
                     f"{r['steps']} ({r['best_step']})",
                     (f"{chk['backbone']:.4f} → {chk['adapted']:.4f} ({'kept' if kept else 'backbone'}; "
                      f"{chk.get('noise_variance', 'one level')})") if chk else (r.get("note") or "—")[:60],
                     (f"{one['backbone']:.4f} → {one['adapted']:.4f} ({'kept' if one_keeps else 'backbone'})"
                      if one else "—"),
                     "—" if ok is None else ("yes" if ok else "**no**"),
                     "—" if ok_one is None else ("yes" if ok_one else "**no**")])
    mean = [finite_mean([r[k] for r in payload["rows"]]) for k in ("backbone psnr sample", "chosen psnr sample")]
    steps = f", {payload['model_steps']} steps" if payload.get("model_steps") else ""
    psf = payload.get("psf_sigma")
    sample = f" through a PSF of {psf:g} px" if psf not in (None, 1.0) else ""
    lines = [f"PSNR (dB) against the sample{sample} (no fixed pattern); one {payload['size']}² training frame per "
             f"case, {payload['budget_s']:g} s per fine-tune; backbone `{payload['model']}`{steps}. Mean: backbone "
             f"{mean[0]:.2f}, chosen {mean[1]:.2f}; the check was right in {right} of "
             f"{sum('fine-tuned psnr sample' in r for r in payload['rows'])} fits that changed weights (with one noise "
             f"level everywhere it would have been right in {right_one}).", "",
             table(header, body)]
    return report("`--adapt self` on the simulator: the fine-tune and the check against the known sample", payload,
                  lines, heading)


if __name__ == "__main__":
    sys.exit(main())
