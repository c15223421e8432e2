"""Speed and memory with the CPU allocator setting of ``livedenoise.cpu_memory`` on and off, alternated.

    python benchmarks/bench_allocator.py                               # fast, standard, temporal; 512² and 2048²
    python benchmarks/bench_allocator.py --models fast --rounds 1 --no-finetune

The setting is per process (glibc's ``mallopt``), so every measurement runs in its own child process, with
``LIVEDENOISE_MALLOC=system`` (malloc as it was) and ``keep`` (the default since this benchmark) alternating,
``--rounds`` times each, so that a change of load hits both alike. A child times one model at one frame size
(``bench_speed.bench_inference``: the median of ``--repeats`` frames after a warm-up; a temporal model gets a new
frame into a full window, the live cost) and reports its peak resident memory (``ru_maxrss``). It runs the
network on the main thread (``main``: scripts, notebooks) or in a worker thread (``worker``: a live session, an
attached acquisition), started after the setting is made on the main thread, as a live session makes its
Denoiser before it starts its threads (a thread that allocated before keeps an arena of its own, whose blocks
above 64 MB glibc maps afresh whatever the settings). The fine-tune child runs ``bench_speed.bench_finetune``
(the fast backbone, self-supervised, one 256² frame, to early stop or the budget): seconds per step. Writes
``allocator.json`` and prints a table; ``readme_tables.py`` renders the committed result.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import machine

HERE = Path(__file__).resolve().parent
MODES = ("system", "keep")

_CHILD = r"""
import json, resource, sys, threading
import bench_speed
from livedenoise import cpu_memory
task = json.loads(sys.argv[1])
result = []
if task["kind"] == "inference":
    run = lambda: result.append(bench_speed.bench_inference([task["model"]], [task["size"]], ["cpu"], task["repeats"],
                                                            layouts=(True,)))
else:
    run = lambda: result.append(bench_speed.bench_finetune(256, task["budget"], "cpu"))
if task.get("where") == "worker":
    cpu_memory.keep_freed_memory()  # as a live session does: its Denoiser is made before its worker threads start
    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
else:
    run()
out = result[0]
print("@@" + json.dumps({"state": cpu_memory.state(), "rows": out,
                         "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(task: dict, mode: str, threads: int) -> dict:
    env = {**os.environ, "LIVEDENOISE_MALLOC": mode, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)]),
           "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(task)], env=env, cwd=HERE.parent, text=True,
                         capture_output=True)
    if res.returncode != 0:
        raise RuntimeError(f"child {task} ({mode}) failed:\n{res.stderr[-3000:]}")
    payload = json.loads(next(line[2:] for line in res.stdout.splitlines() if line.startswith("@@")))
    if payload["state"] != ("kept" if mode == "keep" else "system"):
        raise RuntimeError(f"child {task} asked for {mode!r} but the allocator setting was {payload['state']!r}")
    return payload


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (model, size, thread) and mode: the median over rounds of each child's median ms/frame."""
    table: dict[tuple, dict] = {}
    for run in runs:
        if run["task"]["kind"] != "inference":
            continue
        for row in run["rows"]:
            where = run["task"].get("where", "main")
            key = (row["model"], row["size"], where)
            entry = table.setdefault(key, {"model": row["model"], "size": row["size"], "where": where})
            entry.setdefault(run["mode"], []).append(row["ms_per_frame"])
            entry.setdefault(f"rss_{run['mode']}", []).append(run["max_rss_mb"])
    rows = []
    for entry in table.values():
        out = {"model": entry["model"], "size": entry["size"], "where": entry["where"]}
        for mode in MODES:
            out[f"ms_{mode}"] = statistics.median(entry[mode])
            out[f"runs_{mode}"] = entry[mode]
            out[f"peak_rss_mb_{mode}"] = max(entry[f"rss_{mode}"])
        out["speedup"] = out["ms_system"] / out["ms_keep"]
        rows.append(out)
    return rows


def summarise_finetune(runs: list[dict]) -> dict | None:
    per_mode: dict[str, list[dict]] = {}
    for run in runs:
        if run["task"]["kind"] == "finetune":
            per_mode.setdefault(run["mode"], []).append(run["rows"])
    if not per_mode:
        return None
    out: dict = {}
    for mode, rows in per_mode.items():
        out[mode] = {"s_per_step": statistics.median(r["s_per_step"] for r in rows),
                     "steps": [r["steps"] for r in rows], "stopped": [r["stopped"] for r in rows]}
    out["speedup"] = out["system"]["s_per_step"] / out["keep"]["s_per_step"]
    return out


def render(result: dict) -> str:
    lines = ["| model | frame | network runs in | malloc as it was (ms) | freed memory kept (ms) | speed-up | "
             "peak RSS before (MB) | peak RSS now (MB) |", "|---|---|---|---|---|---|---|---|"]
    where = {"main": "the main thread", "worker": "a worker thread"}
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['size']}² | {where[r.get('where', 'main')]} | {r['ms_system']:.0f} | "
                     f"{r['ms_keep']:.0f} | {r['speedup']:.2f}x | {r['peak_rss_mb_system']:.0f} | "
                     f"{r['peak_rss_mb_keep']:.0f} |")
    ft = result.get("finetune")
    if ft:
        lines.append("")
        before = 1000 * ft["system"]["s_per_step"]
        lines.append(f"Self-supervised fine-tuning of `fast` on one 256² frame: {before:.0f} "
                     f"→ {1000 * ft['keep']['s_per_step']:.0f} ms per step ({ft['speedup']:.2f}x; steps "
                     f"{ft['system']['steps']} → {ft['keep']['steps']}, validations included).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="fast,standard,temporal")
    ap.add_argument("--worker-models", default="fast,temporal",
                    help="models also timed in a worker thread, as a live session runs them ('' for none)")
    ap.add_argument("--sizes", default="512,2048")
    ap.add_argument("--repeats", type=int, default=5, help="frames timed per child (half at 2048²)")
    ap.add_argument("--rounds", type=int, default=2, help="children per model and mode, alternated")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--finetune-budget", type=float, default=30.0)
    ap.add_argument("--no-finetune", action="store_true")
    ap.add_argument("--output", type=Path, default=Path("runs/bench/allocator"))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [m for m in args.worker_models.split(",") if m]
    tasks = [{"kind": "inference", "model": m, "size": size, "repeats": args.repeats, "where": where}
             for m in args.models.split(",") for size in sizes
             for where in (("main", "worker") if m in workers else ("main",))]
    if not args.no_finetune:
        tasks.append({"kind": "finetune", "budget": args.finetune_budget})
    runs = []
    for round_ in range(args.rounds):
        for task in tasks:
            for mode in (MODES if round_ % 2 == 0 else MODES[::-1]):
                payload = run_child(task, mode, args.threads)
                runs.append({"task": task, "mode": mode, "round": round_, **payload})
                print(f"[allocator] round {round_} {task.get('model', 'fine-tune')} {task.get('size', '')} "
                      f"{task.get('where', '')} {mode}: "
                      f"peak RSS {payload['max_rss_mb']:.0f} MB", flush=True)
    result = {"machine": machine(), "threads": args.threads, "rounds": args.rounds,
              "command": "python benchmarks/bench_allocator.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": summarise(runs), "finetune": summarise_finetune(runs), "runs": runs}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "allocator.json").write_text(json.dumps(result, indent=1))
    table = render(result)
    (args.output / "allocator.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
