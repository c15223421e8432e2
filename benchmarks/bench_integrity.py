"""Raw-data integrity under load: a long fast acquisition with a slow denoiser loses and alters no raw frame.

    python benchmarks/bench_integrity.py                      # 10,000 frames at 100 fps, 150 ms per denoised frame
    python benchmarks/bench_integrity.py --frames 2000 --fps 50 --model-ms 300

What this answers (issue "Data safety"): a live session (``LiveSession`` on ``PycromanagerBackend``,
the real pycromanager acquisition engine driving the simulated Micro-Manager core in real time) runs
``--frames`` frames at ``--fps`` while the display denoiser takes ``--model-ms`` per frame, far longer
than the camera interval. Afterwards every raw frame on disk is read back and looked up, by content
hash, among the frames the simulated camera produced: the benchmark counts frames lost (acquired but
not on disk), frames altered (on disk but never produced by the camera) and frames out of order, and
reports the camera rate reached and the display frames skipped (the display always shows the newest
frame; skipping display frames is by design, losing raw frames never is). Denoised frames are not
saved here (``save_denoised = false``): their writer denoises every frame and would need
frames x model-ms to catch up, which is a throughput question, not an integrity one.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, machine, machine_line, publish, table


def main(argv: list[str] | None = None) -> int:
    import torch
    from ndstorage import Dataset

    from livedenoise.acquisition.session import LiveSession
    from livedenoise.checkpoint import Checkpoint
    from livedenoise.commands.settings import Settings
    from livedenoise.commands.simulated import pycromanager_backend
    from livedenoise.config import LiveConfig, TrainingConfig
    from livedenoise.models import build_model
    from livedenoise.normalization import Normalizer
    from livedenoise.training.simdata import BACKBONE_SCALE
    from simulators.config import load_microscope_config
    from simulators.core import start_simulated_core, stop_simulated_core

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--fps", type=float, default=100.0, help="camera frame rate asked for (default 100)")
    ap.add_argument("--model-ms", type=float, default=150.0, help="time the slow display denoiser takes per frame")
    ap.add_argument("--roi", type=int, default=64, help="square field of view in pixels (default 64)")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)

    interval_ms = 1000.0 / args.fps
    micro = load_microscope_config(roi_width=args.roi, roi_height=args.roi, exposure_ms=min(5.0, interval_ms / 2),
                                   light_power=10.0, seed=0)
    settings = Settings(microscope=micro, training=TrainingConfig(),
                        live=LiveConfig(mode="self", self_supervised_frames=1000, finetune_time_budget_s=1.0,
                                        interval_ms=interval_ms, save_denoised=False)).for_simulator()
    torch.manual_seed(0)
    model = build_model("unet", widths=[8, 16])
    backbone = Checkpoint(model, "unet", {"widths": [8, 16]}, Normalizer(vst=True, scale=BACKBONE_SCALE), name="tiny")
    core = start_simulated_core(micro, realtime=True)
    core.microscope.history_size = args.frames + 100  # the camera remembers every frame it produced, for the check
    try:
        with tempfile.TemporaryDirectory(prefix="livedenoise-integrity-") as tmp:
            session = LiveSession(pycromanager_backend(core), settings, tmp, backbone=backbone, device="cpu")
            real = session._denoise_current

            def slow(raw: np.ndarray, info: dict | None = None) -> np.ndarray:
                time.sleep(args.model_ms / 1000.0)
                return real(raw, info)

            session._denoise_current = slow
            t0 = time.perf_counter()
            session.start_live(max_frames=args.frames)
            session.wait()
            rep = session.stop()
            wall = time.perf_counter() - t0
            ds = Dataset(str(rep.paths["raw"]))
            coords = sorted(ds.get_image_coordinates_list(), key=lambda c: c["time"])
            altered, order = 0, []
            for c in coords:
                produced = core.microscope.lookup(np.asarray(ds.read_image(**c)))
                if produced is None:
                    altered += 1
                else:
                    order.append(produced.metadata["frame_index"])
            ds.close()
    finally:
        stop_simulated_core(core)
    on_disk = len(coords)
    result = {
        "frames_asked": args.frames, "fps_asked": args.fps, "model_ms": args.model_ms, "roi": args.roi,
        "frames_acquired": rep.frames_acquired, "frames_on_disk": on_disk,
        "frames_lost": rep.frames_acquired - on_disk, "frames_altered": altered,
        "frames_out_of_order": int(sum(1 for a, b in itertools.pairwise(order) if b <= a)),
        "time_indices_contiguous": [c["time"] for c in coords] == list(range(on_disk)),
        "camera_fps": rep.camera_fps, "display_frames_denoised": rep.frames_denoised,
        "display_frames_skipped": rep.frames_dropped, "wall_s": wall, "errors": rep.errors,
    }
    payload = {"machine": machine(), "result": result,
               "command": "python benchmarks/bench_integrity.py "
                          + " ".join(argv if argv is not None else sys.argv[1:])}
    publish(args.output, "integrity", payload, render(payload))
    return 0 if (result["frames_lost"] == 0 and altered == 0 and result["frames_out_of_order"] == 0) else 1


def render(payload: dict, *, heading: bool = True) -> str:
    """The integrity table (``readme_tables.py`` reuses it without the heading)."""
    r = payload["result"]
    rows = [["frames acquired", r["frames_acquired"]], ["raw frames on disk", r["frames_on_disk"]],
            ["raw frames lost", r["frames_lost"]], ["raw frames altered", r["frames_altered"]],
            ["raw frames out of order", r["frames_out_of_order"]],
            ["camera fps reached", f"{r['camera_fps']:.1f}"],
            ["display frames denoised / skipped", f"{r['display_frames_denoised']} / {r['display_frames_skipped']}"],
            ["wall time", f"{r['wall_s']:.0f} s"]]
    head = [f"# Raw integrity: {r['frames_asked']} frames at {r['fps_asked']:g} fps, {r['model_ms']:g} ms per denoised "
            "frame", "", f"- machine: {machine_line(payload['machine'])}"] if heading else []
    return "\n".join([*head,
        f"- {r['frames_asked']} frames asked at {r['fps_asked']:g} fps, a display model taking {r['model_ms']:g} ms "
        f"per frame; simulated Micro-Manager core, pycromanager acquisition, {r['roi']}² px; every raw frame read back "
        "and matched "
        "by content hash to a frame the camera produced", "", table(["", "value"], rows), ""])


if __name__ == "__main__":
    raise SystemExit(main())
