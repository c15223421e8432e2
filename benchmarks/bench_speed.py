"""Speed of livedenoise: inference per model and frame size, fine-tuning to early stop, live acquisition overhead.

    python benchmarks/bench_speed.py --quick     # about two minutes on a 2-core CPU
    python benchmarks/bench_speed.py             # 512² and 2048² for every model, more repeats

Sections (CPU always; CUDA too when torch sees a GPU):

* **inference**: ``Denoiser.denoise`` (``Denoiser.push`` into a full window for temporal models: the live
  cost of one frame) on uint16 frames of
  512² and 2048², median of N timed runs after a warm-up; ms/frame and Mpx/s. The weights do not
  change the cost, so a preset without a shipped checkpoint is timed untrained (marked).
* **fine-tune**: self-supervised fine-tuning (``finetune``'s default objective) of the ``fast``
  backbone on one simulated 256² frame with the
  default ``TrainingConfig`` (patience 8, lr 1e-4) until early stop or the time budget.
* **acquisition**: pycromanager on the simulated Micro-Manager core saving NDTiff, N frames of 256²:
  (a) plain ``Acquisition`` with no hook; (b) livedenoise's frame hook (``PycromanagerBackend.run_live``)
  handing frames to nothing; (c) the hook feeding a ``DenoiseWorker`` with the fast model, as in a live
  session. Camera fps of (b) and (c) against (a) is the add-on's overhead; frames the display worker
  skipped (it always takes the newest frame) are counted, never frames lost from disk.

Batch throughput is ``bench_batch.py`` (``run_all.py`` runs both).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, load_average, machine, machine_line, table, write_outputs


def _frame(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / 64.0
    signal = 20 + 200 * (np.sin(3 * xx) * np.cos(2 * yy)) ** 2
    return (100 + 0.45 * rng.poisson(signal) + rng.normal(0, 1.5, signal.shape)).astype(np.uint16)


def _model(preset: str):
    """(checkpoint-like source, label): the shipped backbone when present, a checkpoint file (labelled by its stem),
    else an untrained preset."""
    from livedenoise.checkpoint import load_backbone, load_checkpoint
    from livedenoise.errors import CheckpointError
    from livedenoise.models import build_preset
    from livedenoise.modelspec import SHIPPED
    from livedenoise.normalization import Normalizer

    if preset.endswith(".safetensors"):
        return load_checkpoint(preset), Path(preset).stem
    if preset in SHIPPED:
        try:
            return load_backbone(preset), preset
        except CheckpointError:
            pass
    model, _, _ = build_preset(preset)
    return (model, Normalizer(offset=100, gain=0.45, noise_b=2.0, vst=True, scale=10.0)), f"{preset} (untrained)"


def bench_inference(presets: list[str], sizes: list[int], devices: list[str], repeats: int,
                    layouts: tuple[bool, ...] = (False, True), precisions: tuple[str, ...] = ("auto",),
                    compiled: tuple[bool, ...] = (False,)) -> list[dict]:
    """Every preset at every size, in the NCHW layout (the reference) and channels-last, in one run.

    ``precisions``: the Denoiser's ``precision`` values to time (``auto`` is fp16 on CUDA, fp32 on the CPU).
    ``compiled``: the Denoiser's ``compiled`` values to time; a compiled row records its warm-up call (the
    compilation for that frame size) as ``first_call_s`` and how much its output differs from the uncompiled row's
    of the same settings (``max_diff_vs_uncompiled``, a fraction of that output's range).
    The combinations of one device and size are timed interleaved, one frame each in turn, so that a change of
    load during the run (a shared 2-core machine drifts by 10-30 %) hits every row alike.
    """
    from livedenoise.inference import Denoiser

    rows = []
    for device in devices:
        combos = [(p, c, q, k) for p in presets for c in layouts for q in precisions for k in compiled]
        denoisers = []
        one_pass = []
        for preset, channels_last, precision, compile_it in combos:
            # "temporal-fusion": the temporal backbone without its second pass (the frames' 2-D results fused only);
            # "temporal-one-pass": live frames in one pass (Denoiser.push(..., one_pass=True))
            second = not preset.endswith("-fusion")
            one_pass.append(preset.endswith("-one-pass"))
            source, label = _model(preset.removesuffix("-fusion").removesuffix("-one-pass"))
            if Path(preset).name.startswith("temporal"):
                label += " (one pass)" if one_pass[-1] else " (second pass)" if second else " (fusion only)"
            options = {"device": device, "channels_last": channels_last, "precision": precision, "second_pass": second,
                       "compiled": compile_it}
            denoisers.append((label, Denoiser(source[0], source[1], **options) if isinstance(source, tuple)
                              else Denoiser(source, **options)))
        for size in sizes:
            n = repeats if size <= 1024 else max(1, repeats // 2)
            warm: list[tuple[float, np.ndarray | None]] = []
            runs = [_runner(den, size, n, warm, one) for (_, den), one in zip(denoisers, one_pass, strict=True)]
            times: list[list[float]] = [[] for _ in runs]
            for _ in range(n):
                for run, spent in zip(runs, times, strict=True):
                    t0 = time.perf_counter()
                    run()
                    if device.startswith("cuda"):
                        import torch

                        torch.cuda.synchronize()
                    spent.append(time.perf_counter() - t0)
            for _, den in denoisers:
                den.reset()  # a temporal Denoiser's kept 2-D results and outputs are of no use at the next size
            uncompiled = {(combo[:3]): out for combo, (_, out) in zip(combos, warm, strict=True) if not combo[3]}
            for combo, (label, den), spent, (first_s, out) in zip(combos, denoisers, times, warm, strict=True):
                ms = 1000 * statistics.median(spent)
                window = den.window if den.is_temporal else 1
                ref = uncompiled.get(combo[:3]) if den.compiled else None
                diff = (float(np.abs(out - ref).max() / max(float(ref.max() - ref.min()), 1e-12))
                        if ref is not None and out is not None else None)
                rows.append({"device": device, "model": label, "size": size, "ms_per_frame": ms,
                             "mpx_per_s": size * size / 1e6 / (ms / 1000), "fps": 1000 / ms, "repeats": n,
                             "precision": den.precision, "temporal_window": window if den.is_temporal else None,
                             "layout": den.layout, "pixel_budget": getattr(den, "pixel_budget", None),
                             "interleaved": True, "compiled": den.compiled, "compile_failure": den.compile_failure,
                             "first_call_s": first_s, "max_diff_vs_uncompiled": diff})
                print(f"[speed] {device} {label} {den.layout} {den.precision}"
                      f"{' compiled' if den.compiled else ''} {size}²: {ms:.1f} ms/frame", flush=True)
    return rows


def _runner(den, size: int, repeats: int, warm: list | None = None, one_pass: bool = False):
    """One timed call of ``den`` on a ``size``² frame, warmed up. A temporal model gets a new frame into a full
    window each call (the live cost): ``Denoiser.push`` keeps 2-D results by content, so pushing one frame again
    would time the fusion alone. ``warm``: gets (seconds of the warm-up call, a 2-D model's output of it);
    ``one_pass``: push in one pass."""
    frame = _frame(size)
    if den.is_temporal:
        for s in range(den.window):
            den.push(_frame(size, s), one_pass=one_pass)
        fresh = iter([_frame(size, 1000 + i) for i in range(repeats + 1)])
        run = lambda: den.push(next(fresh), one_pass=one_pass)  # noqa: E731
    else:
        run = lambda: den.denoise(frame)  # noqa: E731
    t0 = time.perf_counter()
    out = run()  # warm-up (lazy init, cuDNN autotune, compilation)
    if warm is not None:
        warm.append((time.perf_counter() - t0, None if den.is_temporal else np.asarray(out, dtype=np.float32)))
    if str(den.device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    return run


def bench_finetune(size: int, budget_s: float, device: str, channels_last: bool = True,
                   precision: str = "fp32", adapt_layers: str = "all") -> dict:
    """Self-supervised fine-tuning of the fast backbone on one frame, training in the given memory layout and
    arithmetic (``TrainingConfig.precision``; validations are fp32 either way, so their losses compare) and changing
    the weights ``adapt_layers`` names. The frame is then denoised by the backbone and by the result, and both are
    scored against the simulator's truth (PSNR, dB): the quality a step rate buys."""
    from livedenoise.config import TrainingConfig
    from livedenoise.evaluate import SimulatedTask
    from livedenoise.training import loop
    from livedenoise.training.finetune import finetune

    source, label = _model("fast")
    if isinstance(source, tuple):
        from livedenoise.checkpoint import Checkpoint

        source = Checkpoint(source[0], "unet", {}, source[1], name=label)
    task = SimulatedTask("filaments", size)
    frames = task.train_frames(20.0, seed=0, n=1)
    cfg = TrainingConfig(time_budget_s=budget_s, max_steps=100_000, precision=precision,
                         adapt_layers=adapt_layers)  # type: ignore[arg-type]  # checked by TrainingConfig
    saved, loop.TRAIN_CHANNELS_LAST = loop.TRAIN_CHANNELS_LAST, channels_last
    try:
        t0 = time.perf_counter()
        res = finetune(source, frames, None, training=cfg, device=device, seed=0)
        wall = time.perf_counter() - t0
    finally:
        loop.TRAIN_CHANNELS_LAST = saved
    f = res.fit
    layout = "channels-last" if channels_last else "NCHW"
    psnr = _finetune_psnr(task, frames[0], source, res.checkpoint, device)
    print(f"[speed] fine-tune {label} {layout} {precision} {adapt_layers} {size}² on {device}: {wall:.1f} s, "
          f"{f.steps} steps, {f.stopped}, held-out loss {f.initial_val_loss:.5g} -> {f.best_val_loss:.5g}, PSNR "
          f"{psnr['backbone']:.2f} -> {psnr['fine-tuned']:.2f} dB", flush=True)
    return {"device": device, "model": label, "size": size, "wall_s": wall, "steps": f.steps, "stopped": f.stopped,
            "layout": layout, "precision": precision, "adapt_layers": adapt_layers, "psnr": psnr,
            "adapted": res.adapted,
            "initial_val_loss": f.initial_val_loss,
            "best_val_loss": f.best_val_loss,
            "objective": f.objective, "validations": len(f.history),
            "best_step": f.best_step, "s_per_step": f.elapsed_s / max(f.steps, 1), "budget_s": budget_s,
            "batch_size": cfg.batch_size, "patch_size": cfg.patch_size, "patience": cfg.patience}


def _finetune_psnr(task, frame, backbone, adapted, device: str) -> dict[str, float]:
    """PSNR (dB) of the fine-tuned frame denoised by the backbone and by the adapted model, against the simulator's
    truth without the camera's fixed pattern (``backbone``, ``fine-tuned``: the pattern is noise to remove) and with
    it (``... with pattern``: what an average of many frames converges to, and what every self-supervised criterion
    takes for signal), each over the data range of that truth. The backbone gets its noise model fitted to the frame,
    as ``livedenoise denoise`` does (the fine-tune fits its own)."""
    from skimage.metrics import peak_signal_noise_ratio

    from livedenoise.evaluate.methods import with_normalizer
    from livedenoise.inference import Denoiser

    rate = task.fields("train", 0, 1)[0]
    backbone = with_normalizer(backbone, [frame])
    outputs = {name: Denoiser(model, device=device).denoise(frame).astype(np.float32)
               for name, model in (("backbone", backbone), ("fine-tuned", adapted))}
    scores = {}
    for suffix, truth in (("", task.truth_flat(rate, 20.0)), (" with pattern", task.truth(rate, 20.0))):
        span = float(truth.max() - truth.min())
        scores.update({name + suffix: float(peak_signal_noise_ratio(truth, out, data_range=span))
                       for name, out in outputs.items()})
    return scores


ACQ_MODES = ("plain", "hook", "worker")
PLAIN_MODE = "pycromanager, no hook"


def bench_acquisition(frames: int, size: int, rounds: int = 1, which: tuple[str, ...] = ACQ_MODES) -> list[dict]:
    """Camera fps of pycromanager on the simulated core: plain, with the livedenoise hook, with hook + denoising.

    With ``rounds`` > 1 the three modes run that many times each, in an order that alternates from round to
    round (plain first, then last), so a machine that speeds up or slows down during the run (turbo, caches,
    another process) biases no mode; the table's summary compares medians over rounds. ``which`` picks modes of
    :data:`ACQ_MODES` (plain is always run: it is what the others are compared with)."""
    from livedenoise.inference import Denoiser
    from simulators.config import load_microscope_config
    from simulators.core import acquire_with_pycromanager, build_events, start_simulated_core

    cfg = load_microscope_config(roi_width=size, roi_height=size, exposure_ms=10.0, light_power=10.0, seed=0)
    core = start_simulated_core(cfg)
    rows: list[dict] = []
    den, label = None, "fast"
    if "worker" in which:
        source, label = _model("fast")
        den = Denoiser(*(source if isinstance(source, tuple) else (source,)), device="cpu")
        den.warmup((size, size))
    names = {"plain": PLAIN_MODE, "hook": "livedenoise hook, no model",
             "worker": f"livedenoise hook + DenoiseWorker ({label})"}
    modes = tuple(names[m] for m in ACQ_MODES if m == "plain" or m in which)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # warm-up: the first acquisition pays pycromanager's start-up
            acquire_with_pycromanager(core, build_events(core, frames=5), directory=Path(tmp) / "warm", name="warm")
            for rnd in range(rounds):
                for mode in (modes if rnd % 2 == 0 else modes[::-1]):
                    folder = Path(tmp) / f"r{rnd}-{modes.index(mode)}"
                    if mode == PLAIN_MODE:
                        res = acquire_with_pycromanager(core, build_events(core, frames=frames), directory=folder,
                                                        name="plain")
                        row = {"frames": res.frames, "seconds": res.seconds, "camera_fps": res.fps, "denoised": None,
                               "skipped_for_display": None}
                    else:
                        row = _hooked_acquisition(core, cfg, den if mode == names["worker"] else None, frames, folder)
                    rows.append({"mode": mode, "round": rnd + 1, **row})
                    print(f"[speed] acquisition round {rnd + 1} {mode}: {row['camera_fps']:.1f} fps", flush=True)
    finally:
        core.close()
    return rows


def _hooked_acquisition(core, cfg, den, frames: int, folder: Path) -> dict:
    """One live run through livedenoise's frame hook, feeding a display worker when ``den`` is given."""
    from livedenoise.acquisition.display import DenoiseWorker
    from livedenoise.acquisition.plans import Illumination, LivePlan
    from livedenoise.commands.simulated import pycromanager_backend

    backend = pycromanager_backend(core)
    worker = DenoiseWorker(lambda frame, _info: den.denoise(frame)).start() if den is not None else None
    on_frame = ((lambda img, axes: worker.submit(np.array(img, copy=True))) if worker else (lambda img, axes: None))
    info = backend.run_live(LivePlan(Illumination(cfg.exposure_ms, None)), on_frame, threading.Event(), folder,
                            max_frames=frames)
    denoised = skipped = None
    if worker is not None:
        worker.drain()
        worker.stop()
        denoised, skipped = worker.stats.denoised, worker.stats.dropped
    return {"frames": info.frames, "seconds": info.seconds, "camera_fps": info.fps, "denoised": denoised,
            "skipped_for_display": skipped}


def acquisition_summary(rows: list[dict]) -> list[dict]:
    """Per mode, the median camera fps over rounds, and the median and range of its ratio to the plain
    acquisition's fps *in the same round* (paired: a round's runs follow each other, so they share the machine's
    state more than runs of different rounds do)."""
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    plain = {r.get("round", 1): r["camera_fps"] for r in rows if r["mode"] == PLAIN_MODE}
    out = []
    for m in modes:
        sel = [r for r in rows if r["mode"] == m]
        ratios = [r["camera_fps"] / plain[r.get("round", 1)] for r in sel if r.get("round", 1) in plain]
        out.append({"mode": m, "rounds": len(sel), "median_fps": statistics.median(r["camera_fps"] for r in sel),
                    "min_fps": min(r["camera_fps"] for r in sel), "max_fps": max(r["camera_fps"] for r in sel),
                    "median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios)})
    return out


def _compiled_cell(row: dict) -> str:
    if not row.get("compiled"):
        return "no"
    return "yes" if not row.get("compile_failure") else f"failed, ran uncompiled ({row['compile_failure'][:60]})"


def render(result: dict) -> str:
    lines = [f"# Speed benchmark{' (quick)' if result['quick'] else ''}", "",
             f"- machine: {machine_line(result['machine'])}", ""]
    if result.get("inference"):
        lines += ["## Inference (Denoiser, median of repeats after warm-up)", "",
                  table(["device", "model", "frame", "ms / frame", "Mpx/s", "fps", "precision", "layout", "compiled",
                         "first call s", "max |Δ| / range vs uncompiled"],
                        [[r["device"],
                          r["model"] + (f", window {r['temporal_window']}" if r["temporal_window"] else ""),
                          f"{r['size']}²", f"{r['ms_per_frame']:.1f}", f"{r['mpx_per_s']:.2f}", f"{r['fps']:.2f}",
                          r["precision"], r.get("layout", "NCHW"), _compiled_cell(r),
                          f"{r['first_call_s']:.1f}" if r.get("first_call_s") is not None else "-",
                          f"{r['max_diff_vs_uncompiled']:.1e}" if r.get("max_diff_vs_uncompiled") is not None
                          else "-"] for r in result["inference"]]), ""]
    if result.get("finetune"):
        lines += ["## Self-supervised fine-tuning to early stop (one frame, default TrainingConfig)", "",
                  table(["device", "model", "objective", "frame", "wall s", "steps", "validations",
                         "s / step (incl. validation)", "stopped", "best step", "layout", "precision",
                         "weights changed", "held-out loss", "PSNR backbone → fine-tuned"],
                        [[r["device"], r["model"], r.get("objective", "?"), f"{r['size']}²", f"{r['wall_s']:.1f}",
                          r["steps"], r.get("validations", "?"), f"{r['s_per_step']:.3f}", r["stopped"], r["best_step"],
                          r.get("layout", "NCHW"), r.get("precision", "fp32"),
                          r.get("adapt_layers", "all"),
                          f"{r['initial_val_loss']:.5g} → {r['best_val_loss']:.5g}" if "best_val_loss" in r else "-",
                          f"{r['psnr']['backbone']:.2f} → {r['psnr']['fine-tuned']:.2f}" if "psnr" in r else "-"]
                         for r in result["finetune"]]), ""]
    if result.get("acquisition"):
        acq = result["acquisition"]
        base = acq[0]["camera_fps"] if acq else float("nan")
        rounds = max((r.get("round", 1) for r in acq), default=1)
        lines += ["## Live acquisition overhead (pycromanager, simulated core, "
                  f"{acq[0]['frames'] if acq else '?'} frames of {result['acq_size']}², NDTiff to disk)", ""]
        if rounds > 1:
            lines += [f"{rounds} rounds, the modes' order alternating from round to round; the ratio to plain is taken "
                      "within each round:", "",
                      table(["mode", "rounds", "median camera fps", "range", "vs plain: median ratio", "range"],
                            [[s["mode"], s["rounds"], f"{s['median_fps']:.1f}",
                              f"{s['min_fps']:.1f}–{s['max_fps']:.1f}", f"{100 * s['median_ratio']:.1f}%",
                              f"{100 * s['min_ratio']:.0f}–{100 * s['max_ratio']:.0f}%"]
                             for s in acquisition_summary(acq)]), "", "Every run:", ""]
        plain = {r.get("round", 1): r["camera_fps"] for r in acq if r["mode"] == PLAIN_MODE}
        lines += [table(["round", "mode", "camera fps", "vs plain (same round)", "frames saved",
                         "denoised for display", "skipped for display"],
                        [[r.get("round", 1), r["mode"], f"{r['camera_fps']:.1f}",
                          f"{100 * r['camera_fps'] / plain.get(r.get('round', 1), base):.0f}%", r["frames"],
                          "-" if r["denoised"] is None else r["denoised"],
                          "-" if r["skipped_for_display"] is None else r["skipped_for_display"]] for r in acq]), ""]
    for k, v in result.get("errors", {}).items():
        lines.append(f"- {k} failed: {v}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import logging

    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--only", default="inference,finetune,acquisition", help="comma-separated sections")
    ap.add_argument("--models", default="fast,standard,temporal",
                    help="inference: comma-separated presets ('temporal-fusion': temporal without its second pass; "
                         "'temporal-one-pass': its live frames in one pass)")
    ap.add_argument("--layouts", default="nchw,channels-last",
                    help="inference and fine-tune: nchw and/or channels-last")
    ap.add_argument("--sizes", default="512,2048", help="inference: frame sides, comma-separated (default 512,2048)")
    ap.add_argument("--repeats", type=int, help="inference: timed runs per case (default 5; --quick 2)")
    ap.add_argument("--finetune-budget", type=float, help="fine-tune: seconds (default 120; --quick 20)")
    ap.add_argument("--acq-size", type=int, default=256, help="acquisition: frame side in pixels (default 256)")
    ap.add_argument("--acq-frames", type=int, help="acquisition: frames per mode (default 200; --quick 40)")
    ap.add_argument("--acq-rounds", type=int, default=1,
                    help="acquisition: runs of every mode, in alternating order (default 1); medians are compared")
    ap.add_argument("--acq-modes", default=",".join(ACQ_MODES),
                    help="acquisition: comma-separated modes among plain, hook (the livedenoise hook alone) and "
                         "worker (the hook feeding the fast model); plain always runs (default: all three)")
    ap.add_argument("--devices", help="comma-separated torch devices (default: cpu, and cuda when torch sees a GPU)")
    ap.add_argument("--precisions", default="auto",
                    help="inference: comma-separated Denoiser precisions (auto, fp32, fp16, bf16; default auto)")
    ap.add_argument("--compiled", default="off",
                    help="inference: comma-separated off and/or on: Denoiser(compiled=...) (default off)")
    ap.add_argument("--adapt-layers", default="all",
                    help="fine-tune: comma-separated [training] adapt_layers values to time (all, decoder, last, bias)")
    ap.add_argument("--train-precisions", default="fp32",
                    help="fine-tune: comma-separated training precisions (fp32, bf16; default fp32)")
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.WARNING)
    train_precisions = tuple(q.strip() for q in args.train_precisions.split(",") if q.strip())
    adapt_layers = tuple(q.strip() for q in args.adapt_layers.split(",") if q.strip())
    only = {s.strip() for s in args.only.split(",")}
    known = {"nchw": False, "channels-last": True}
    try:
        layouts = tuple(known[x.strip()] for x in args.layouts.split(","))
    except KeyError as exc:
        ap.error(f"--layouts: unknown layout {exc}; expected nchw and/or channels-last")
    if args.devices:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    else:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    precisions = tuple(q.strip() for q in args.precisions.split(",") if q.strip())
    try:
        compiled = tuple({"off": False, "on": True}[v.strip()] for v in args.compiled.split(",") if v.strip())
    except KeyError as exc:
        ap.error(f"--compiled: unknown value {exc}; expected off and/or on")
    quick = args.quick
    acq_modes = tuple(m.strip() for m in args.acq_modes.split(",") if m.strip())
    if not set(acq_modes) <= set(ACQ_MODES):
        ap.error(f"--acq-modes {args.acq_modes!r}: expected modes among {', '.join(ACQ_MODES)}")
    try:
        sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    except ValueError:
        ap.error(f"--sizes {args.sizes!r}: expected frame sides such as 512,2048")
    if not sizes or min(sizes) < 16:
        ap.error(f"--sizes {args.sizes!r}: expected frame sides of at least 16 pixels")
    load_start = load_average()
    command = "python benchmarks/bench_speed.py " + " ".join(argv or sys.argv[1:])
    result: dict = {"quick": quick, "errors": {}, "command": command}
    sections = {
        "inference": lambda: bench_inference([m.strip() for m in args.models.split(",")], sizes, devices,
                                             args.repeats or (2 if quick else 5), layouts=layouts,
                                             precisions=precisions, compiled=compiled),
        "finetune": lambda: [bench_finetune(128 if quick else 256,
                                            args.finetune_budget or (20.0 if quick else 120.0), d, cl, tp, al)
                             for d in devices for cl in layouts for tp in train_precisions for al in adapt_layers],
        "acquisition": lambda: bench_acquisition(args.acq_frames or (40 if quick else 200), args.acq_size,
                                                         max(1, args.acq_rounds), acq_modes),
    }
    for name, fn in sections.items():
        if name in only:
            try:
                result[name] = fn()
            except Exception as exc:  # one failing section must not lose the others
                result["errors"][name] = f"{exc.__class__.__name__}: {exc}"
                print(f"[speed] {name} failed: {exc}", flush=True)
    result["acq_size"] = args.acq_size
    if "acquisition" in result:
        from livedenoise.acquisition.pycromanager_backend import LIVE_CHUNK_FRAMES

        result["live_chunk_frames"] = LIVE_CHUNK_FRAMES
    result["machine"] = {**machine(), "load_average_start": load_start}
    md = render(result)
    jp, mp = write_outputs(args.output, "speed" + ("-quick" if quick else ""), result, md)
    print(md)
    print(f"wrote {jp} and {mp}")
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
