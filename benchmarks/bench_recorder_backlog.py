"""Memory and hand-over time of an attached recorder that falls behind the acquisition.

    python benchmarks/bench_recorder_backlog.py                       # 200 frames of 1024² at 50 fps, model 'fast'
    python benchmarks/bench_recorder_backlog.py --checkout before=/tmp/old-tree   # the same with another livedenoise

An :class:`~livedenoise.attach.AttachedDenoiser` recording every frame (``output=``) without ``read_raw`` (as the
pymmcore-plus MDA handler and pycromanager's ``image_process_fn`` hand frames over) is given ``--frames`` frames at
``--fps`` frames a second (a camera's pace; 0: as fast as ``submit`` returns): the recorder, denoising one frame at a
time, falls far behind. Each run is a fresh process that loads the model, records one warm-up frame, then measures:
the largest growth of the process's resident memory (``VmRSS``, Linux, sampled every 50 ms) while the frames are
handed over, and until every frame is written; the slowest and the median ``submit`` (the acquisition side's cost);
the frames parked on disk; the time the recorder needs after the last frame to write the rest; and that every frame
was written. ``--checkout NAME=PATH`` runs the same child with ``PATH`` first on ``sys.path`` (a worktree of another
commit), so both are measured by the same code.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, REPO, machine, machine_line, publish, table

_CHILD = r"""
import json, sys, tempfile, time
import numpy as np

def rss():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))

from livedenoise.attach import AttachedDenoiser
model, side, frames, queued, fps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
rng = np.random.default_rng(0)
pool = [(rng.poisson(40, (side, side)) + 100).astype(np.uint16) for _ in range(4)]
out = tempfile.mkdtemp(prefix="livedenoise-backlog-")
den = AttachedDenoiser(model, output=out, device="cpu", threads=1, max_queued=queued, display_fps=1.0)
den.submit(pool[0], {"time": 0})
while den.written < 1:
    time.sleep(0.01)
before = rss()
import threading
samples, stop = [], threading.Event()

def sample():
    while not stop.wait(0.05):
        samples.append(rss())

sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
times = []
t0 = time.perf_counter()
for t in range(1, frames + 1):
    frame = pool[t % 4].copy()  # a new buffer per frame, as a camera gives
    s = time.perf_counter()
    den.submit(frame, {"time": t})
    times.append(time.perf_counter() - s)
    if fps > 0:  # the camera's pace
        time.sleep(max(0.0, t0 + t / fps - time.perf_counter()))
handed = time.perf_counter() - t0
during = max(samples + [rss()])
backlog = den.backlog
t1 = time.perf_counter()
report = den.close(progress=False)
stop.set()
sampler.join()
import livedenoise
print(json.dumps({"model": model, "side": side, "frames": frames, "max_queued": queued,
                  "frame_mb": pool[0].nbytes / 2**20, "fps": fps, "rss_growth_mb": (during - before) / 2**20,
                  "rss_growth_overall_mb": (max(samples) - before) / 2**20,
                  "submit_ms_median": 1000 * float(np.median(times)), "submit_ms_max": 1000 * max(times),
                  "hand_over_s": handed, "backlog_at_end": backlog, "catch_up_s": time.perf_counter() - t1,
                  "written": report.frames_written, "expected": frames + 1,
                  "parked": getattr(report, "frames_parked", None), "errors": report.errors,
                  "livedenoise": livedenoise.__file__}))
import shutil
shutil.rmtree(out)  # the folder this run made (the denoised frames, up to GBs)
"""


def measure(label: str, path: Path | None, model: str, side: int, frames: int, queued: int, fps: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-c", _CHILD, model, str(side), str(frames), str(queued), str(fps)],
                         capture_output=True, text=True, timeout=3600, env=env, cwd=str(path or REPO))
    if res.returncode != 0:
        raise SystemExit(f"{label}: the child failed:\n{res.stderr[-3000:]}")
    row = json.loads(res.stdout.strip().splitlines()[-1])
    row["run"] = label
    return row


def render(payload: dict) -> str:
    rows = [[r["run"], f"{r['frames']} × {r['side']}² at {r['fps']:g} fps", f"{r['rss_growth_mb']:.0f}",
             f"{r['rss_growth_overall_mb']:.0f}", f"{r['submit_ms_median']:.2f}",
             f"{r['submit_ms_max']:.1f}", f"{r['backlog_at_end']}", "-" if r["parked"] is None else str(r["parked"]),
             f"{r['catch_up_s']:.0f}", f"{r['written']} of {r['expected']}"] for r in payload["runs"]]
    return table(["livedenoise", "frames handed over", "memory growth MB while acquiring",
                  "memory growth MB until written", "submit ms (median)",
                  "submit ms (slowest)", "frames waiting at the end", "parked on disk", "recorder after the last s",
                  "written"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fast")
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--max-queued", type=int, default=32)
    ap.add_argument("--fps", type=float, default=50.0,
                    help="frames handed over per second (0: as fast as submit returns)")
    ap.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH",
                    help="also run with another livedenoise tree first on sys.path (interleaved)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    trees: list[tuple[str, Path | None]] = [("this", None)]
    for spec in args.checkout:
        name, _, path = spec.partition("=")
        trees.append((name, Path(path).resolve()))
    runs = []
    for _ in range(args.rounds):
        for label, path in trees:
            row = measure(label, path, args.model, args.side, args.frames, args.max_queued, args.fps)
            print(f"[backlog] {label}: memory +{row['rss_growth_mb']:.0f} MB, submit max {row['submit_ms_max']:.1f} ms,"
                  f" parked {row['parked']}, written {row['written']}/{row['expected']}", flush=True)
            runs.append(row)
    command = "python benchmarks/bench_recorder_backlog.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (
            ("model", args.model), ("side", args.side), ("frames", args.frames), ("max_queued", args.max_queued),
            ("fps", args.fps), ("rounds", args.rounds))
        if str(v) != str(ap.get_default(k))) + "".join(f" --checkout {c}" for c in args.checkout)
    payload = {"machine": machine(), "runs": runs, "command": command}
    publish(args.output, "backlog", payload, render(payload) + f"\n\n{machine_line(payload['machine'])}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
