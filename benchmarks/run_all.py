"""Run every benchmark and the papers' evaluation with one command, and collect the results in one folder.

    python benchmarks/run_all.py --quick                    # everything in its quick form (~15 min, 2-core CPU)
    python benchmarks/run_all.py                            # the full forms (hours on a CPU)
    python benchmarks/run_all.py --quick --skip quality     # leave a part out

Parts, each a separate process so one failure does not stop the others:
  speed     benchmarks/bench_speed.py    inference ms/frame and Mpx/s, fine-tune time, acquisition overhead
  batch     benchmarks/bench_batch.py    `livedenoise denoise` throughput and memory
  quality   benchmarks/bench_quality.py  livedenoise vs CAREamics N2V, VST+BM3D, VST+NLM, NLM, Gaussian (same data)
  devpairs  benchmarks/bench_dev_pairs.py the dev pairs: default denoise path, --adapt self, VST+BM3D/NLM, Gaussian
  evaluate  livedenoise evaluate         the papers' experiments on the simulator (report + plots)
  real      livedenoise evaluate --pairs the same comparisons on ../shared/data/real_pairs_dev (if present)

Output: ``<output>/`` with each part's JSON/Markdown, plus ``summary.md`` and ``summary.json``
(which parts ran, their exit status and wall time, and the machine).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, DEV_AFFINE_SETS, HERE, REAL_PAIRS_DEV, machine, machine_line, table

PARTS = ("speed", "batch", "quality", "devpairs", "evaluate", "real")


def commands(quick: bool, out: Path) -> dict[str, list[str]]:
    py = sys.executable
    q = ["--quick"] if quick else []
    cmds = {
        "speed": [py, str(HERE / "bench_speed.py"), *q, "--output", str(out)],
        "batch": [py, str(HERE / "bench_batch.py"), *q, "--json", str(out / f"batch{'-quick' if quick else ''}.json")],
        "quality": [py, str(HERE / "bench_quality.py"), *q, "--output", str(out)],
        "evaluate": [py, "-m", "livedenoise.cli", "evaluate", *(q or ["--full"]), "-o", str(out / "evaluate")],
    }
    if REAL_PAIRS_DEV.is_dir():
        cmds["devpairs"] = [py, str(HERE / "bench_dev_pairs.py"), *q, "--output", str(out)]
        cmds["real"] = [py, "-m", "livedenoise.cli", "evaluate", *(q or ["--full"]), "--pairs", str(REAL_PAIRS_DEV),
                        "--affine", ",".join(DEV_AFFINE_SETS), "-o", str(out / "evaluate-real")]
    return cmds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="every part in its quick form")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--skip", default="", help=f"comma-separated parts to leave out ({', '.join(PARTS)})")
    ap.add_argument("--only", default="", help="comma-separated parts to run (default: all)")
    args = ap.parse_args(argv)
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    status = []
    for name, cmd in commands(args.quick, out).items():
        if name in skip or (only and name not in only):
            continue
        print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        with (out / f"{name}.log").open("w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parent).returncode
        wall = time.perf_counter() - t0
        status.append({"part": name, "command": " ".join(cmd), "exit": rc, "wall_s": wall,
                       "log": str(out / f"{name}.log")})
        print(f"=== {name}: exit {rc} in {wall:.0f} s (log {out / (name + '.log')})", flush=True)
    info = machine()
    (out / "summary.json").write_text(json.dumps({"machine": info, "quick": args.quick, "parts": status}, indent=1))
    md = [f"# livedenoise benchmarks{' (quick)' if args.quick else ''}", "", f"- machine: {machine_line(info)}", "",
          table(["part", "exit", "wall s", "command"],
                [[s["part"], s["exit"], f"{s['wall_s']:.0f}", f"`{s['command']}`"] for s in status]), ""]
    for name, files in (("speed", ["speed-quick.md" if args.quick else "speed.md"]),
                        ("quality", ["quality-quick.md" if args.quick else "quality.md"]),
                        ("devpairs", ["dev-pairs-quick.md" if args.quick else "dev-pairs.md"]),
                        ("evaluate", ["evaluate/report.md"]), ("real", ["evaluate-real/report.md"])):
        for f in files:
            if (out / f).is_file():
                md.append(f"- {name}: [{f}]({f})")
    (out / "summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if all(s["exit"] == 0 for s in status) else 1


if __name__ == "__main__":
    sys.exit(main())
