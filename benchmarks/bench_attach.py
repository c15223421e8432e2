"""What attaching livedenoise costs the user's own acquisition, and whether any raw frame is lost or altered.

    python benchmarks/bench_attach.py                                   # 2,000 frames per mode, 512², 100 fps asked
    python benchmarks/bench_attach.py --frames 10000 --roi 64 --modes process

The acquisition is the user's kind: 2 channels alternating at every time point, built with pycromanager's
``multi_d_acquisition_events`` (or a ``useq.MDASequence``), on the simulated Micro-Manager core pacing
the camera at ``--fps`` (realtime snaps, exposure 1/fps). Modes, each run in the same process:

* ``none``: pycromanager ``Acquisition`` alone (the baseline);
* ``process``: with ``image_process_fn=PycromanagerDenoiser.process`` (display denoising, newest wins);
* ``saved``: with ``image_saved_fn=PycromanagerDenoiser.saved`` (display denoising from the saved frames);
* ``mda-none`` / ``mda``: ``core.mda.run`` to OME-Zarr, without / with ``MDADenoiser`` as an output handler;
* ``process-capped`` / ``mda-capped``: as ``process`` / ``mda`` with ``display_fps=--display-fps`` (default 10),
  which leaves the CPU to the acquisition between display frames.

For each: acquisition wall time and camera rate, the overhead against its baseline, display frames
denoised and skipped, and every raw frame read back from the NDTiff dataset or the OME-Zarr and matched by
content hash to a frame the simulated camera produced (lost, altered). Denoised frames are
displayed, not recorded, here: recording every frame of a 100 fps camera with a 5 fps model is a
throughput question (the recorder catches up after the acquisition), not an acquisition-cost one.

On a 2-core machine the simulated camera itself needs CPU (it renders and draws noise for every frame),
so the model (``--threads``, default 1) competes with the camera; a real camera does not. The table says
what the camera reached.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, machine, machine_line, publish, table

MODES = ("none", "process", "process-capped", "saved", "mda-none", "mda", "mda-capped")
CHANNELS = ["5%", "20%"]


def _pycromanager_run(core, mode: str, frames: int, out: Path, model: str, threads: int, display_fps: float) -> dict:
    from ndstorage import Dataset
    from pycromanager import Acquisition, multi_d_acquisition_events

    from livedenoise.attach import PycromanagerDenoiser
    from simulators.core import LIGHT_GROUP

    events = multi_d_acquisition_events(num_time_points=frames // len(CHANNELS), channel_group=LIGHT_GROUP,
                                        channels=CHANNELS)
    den = None if mode == "none" else PycromanagerDenoiser(
        model, device="cpu", threads=threads, display_fps=display_fps if mode.endswith("capped") else None)
    hook = {} if den is None else ({"image_saved_fn": den.saved} if mode == "saved"
                                   else {"image_process_fn": den.process})
    t0 = time.perf_counter()
    with Acquisition(directory=str(out), name=mode, show_display=False, **hook) as acq:
        acq.acquire(events)
        path = acq.get_dataset().path
    wall = time.perf_counter() - t0
    report = den.close(progress=False) if den is not None else None
    with contextlib.redirect_stdout(io.StringIO()):  # ndstorage prints its index-reading progress
        ds = Dataset(str(path))
    coords = ds.get_image_coordinates_list()
    altered = sum(core.microscope.lookup(np.asarray(ds.read_image(**c))) is None for c in coords)
    ds.close()
    return {"mode": mode, "frames": len(events), "on_disk": len(coords), "lost": len(events) - len(coords),
            "altered": int(altered), "wall_s": wall, "fps": len(events) / wall,
            "display_denoised": report.display_denoised if report else 0,
            "display_skipped": report.display_dropped if report else 0,
            "errors": report.errors if report else []}


def _mda_run(core, mode: str, frames: int, out: Path, model: str, threads: int, display_fps: float) -> dict:
    import useq

    from livedenoise.attach import MDADenoiser
    from simulators.core import LIGHT_GROUP

    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": frames // len(CHANNELS)},
                                channels=[{"config": c, "group": LIGHT_GROUP} for c in CHANNELS], axis_order="tc")
    handler = None if mode == "mda-none" else MDADenoiser(
        model, device="cpu", threads=threads, display_fps=display_fps if mode.endswith("capped") else None)
    outputs = [str(out / f"{mode}.ome.zarr")] + ([handler] if handler is not None else [])
    t0 = time.perf_counter()
    core.mda.run(sequence, output=outputs)
    wall = time.perf_counter() - t0
    report = handler.result if handler is not None else None
    n = len(list(sequence))
    view = core.mda.get_view()  # the OME-Zarr pymmcore-plus wrote: every frame read back and matched by content
    on_disk = altered = 0
    for index in np.ndindex(*view.shape[:-2]):
        frame = np.asarray(view[index])
        if frame.any():
            on_disk += 1
            altered += core.microscope.lookup(frame) is None
    return {"mode": mode, "frames": n, "on_disk": on_disk, "lost": n - on_disk, "altered": int(altered),
            "wall_s": wall, "fps": n / wall,
            "display_denoised": report.display_denoised if report else 0,
            "display_skipped": report.display_dropped if report else 0,
            "errors": report.errors if report else []}


def main(argv: list[str] | None = None) -> int:
    from simulators.config import load_microscope_config
    from simulators.core import start_simulated_core, stop_simulated_core

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000, help="frames per mode (default 2000)")
    ap.add_argument("--fps", type=float, default=100.0, help="camera rate asked for (exposure = 1/fps)")
    ap.add_argument("--roi", type=int, default=512, help="square field of view in pixels (default 512)")
    ap.add_argument("--model", default="fast")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the model (default 1)")
    ap.add_argument("--display-fps", type=float, default=10.0, help="display rate cap of the *-capped modes")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)

    micro = load_microscope_config(roi_width=args.roi, roi_height=args.roi, exposure_ms=1000.0 / args.fps,
                                   light_power=10.0, seed=0)
    core = start_simulated_core(micro, realtime=True)
    core.microscope.history_size = args.frames + 100  # the camera remembers every frame it produced, for the check
    rows = []
    # Each library's baseline runs first and again last (the mean is the reference), after an untimed warm-up
    # acquisition: the first acquisition in a process pays one-off start-up costs that are not livedenoise's.
    baselines = [m for m in ("none", "mda-none") if m in args.modes]
    order = [*args.modes, *[f"{m} (again)" for m in baselines]]
    try:
        with tempfile.TemporaryDirectory(prefix="livedenoise-attach-") as tmp:
            for warm in baselines:
                (_mda_run if warm.startswith("mda") else _pycromanager_run)(
                    core, warm, min(200, args.frames), Path(tmp) / "warm-up", args.model, args.threads,
                    args.display_fps)
            for k, label in enumerate(order):
                mode = label.split(" ")[0]
                run = _mda_run if mode.startswith("mda") else _pycromanager_run
                row = run(core, mode, args.frames, Path(tmp) / f"run{k}", args.model, args.threads, args.display_fps)
                row["mode"] = label
                rows.append(row)
                print(f"{label}: {row['fps']:.1f} fps, lost {row['lost']}, altered {row['altered']}", flush=True)
    finally:
        stop_simulated_core(core)
    base: dict[str, list[float]] = {}
    for r in rows:
        if r["mode"].split(" ")[0] in ("none", "mda-none"):
            base.setdefault(r["mode"].split(" ")[0], []).append(r["wall_s"])
    for r in rows:
        mode = r["mode"].split(" ")[0]
        ref = base.get("mda-none" if mode.startswith("mda") else "none")
        r["overhead_pct"] = (None if not ref or mode in base
                             else 100.0 * (r["wall_s"] / (sum(ref) / len(ref)) - 1.0))
    payload = {"machine": machine(),
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows,
               "command": "python benchmarks/bench_attach.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    publish(args.output, "attach", payload, render(payload))
    return 0 if all(r["lost"] == 0 and not r["altered"] for r in rows) else 1


def render(payload: dict, *, heading: bool = True) -> str:
    """The table (``readme_tables.py`` reuses it without the heading)."""
    s = payload["settings"]
    rows = [[r["mode"], r["frames"], f"{r['fps']:.1f}", f"{r['wall_s']:.1f}",
             "–" if r["overhead_pct"] is None else f"{r['overhead_pct']:+.1f} %", r["lost"],
             r["altered"], f"{r['display_denoised']} / {r['display_skipped']}"]
            for r in payload["rows"]]
    head = [f"# Attached to the user's acquisition: {s['roi']}² px, {s['fps']:g} fps asked", "",
            f"- machine: {machine_line(payload['machine'])}"] if heading else []
    return "\n".join([*head,
        f"- 2 channels alternating, {s['frames']} frames per mode, simulated core pacing the camera at "
        f"{s['fps']:g} fps; model `{s['model']}` with {s['threads']} torch thread(s), display denoising (newest frame "
        f"wins; *-capped: at most {s['display_fps']:g} display frames/s); overhead = acquisition wall time against "
        "the same library without livedenoise (the mean of its runs first and last, after an untimed warm-up); "
        "raw frames read back "
        "and matched by content hash to frames the camera produced", "",
        table(["mode", "frames", "camera fps", "wall s", "overhead", "raw lost", "raw altered",
               "display denoised / skipped"], rows), ""])


if __name__ == "__main__":
    raise SystemExit(main())
