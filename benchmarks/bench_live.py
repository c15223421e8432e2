"""Live sessions: which backbone a live session should start from, measured on the simulated microscope.

    python benchmarks/bench_live.py                          # fast and temporal, 2 sessions each, interleaved
    python benchmarks/bench_live.py --backbones fast,standard --repeats 1
    python benchmarks/bench_live.py --backbones fast,temporal,temporal-fusion   # temporal without its second pass
    python benchmarks/bench_live.py --backbones temporal,temporal-one-pass      # its display in one pass
    python benchmarks/bench_live.py --backbones temporal-two-passes,temporal-one-pass,temporal-auto  # ... or chosen
    python benchmarks/bench_live.py --backbones lite --interval-ms 50 --checkout before=/tmp/base \
        --demo-args "--roi 512x512 --precision bf16 --finetune-seconds 30 --frames 200"   # this tree against another

Each session is the quick start's ``livedenoise demo`` (simulated Andor Zyla 4.2 through pycromanager's real
acquisition engine, 256² px at ~10 photons peak, 5 calibration pairs, background fine-tuning, 10 frames/s live),
run as a subprocess with ``--backbone``; sessions of different backbones alternate so that machine load hits
both alike. What is compared, from each session's ``report.json``:

* **as displayed**: PSNR against the simulator's ground truth of every 5th frame the viewer showed, before the
  swap (the backbone) and after it (the adapted model). For a temporal backbone each shown frame is fused with
  the frames shown before it, so this is the quality a user sees live;
* **single frames**: the demo's table, 8 live frames each denoised on its own (a temporal model's 2-D stage);
* the cost: mean display latency, display rate, display frames skipped, denoised frames recorded, and the
  fine-tune's steps (the live denoising and the fine-tune share the CPU).

The ground truth is the demo's: the sample as a camera without fixed pattern would record it (the simulator's
``truth_of(core, fixed_pattern=False)``). ``--keep-fixed-pattern`` runs the sessions with the calibration
references' fixed pattern left in (``[live] remove_fixed_pattern = false``), the behaviour before it existed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OUTPUT, checkout_commit, checkout_env, finite_mean, machine, machine_line, publish, table

FIELDS = ("display_backbone", "display_adapted", "single_backbone", "single_adapted", "latency_ms", "display_fps",
          "skipped", "recorded", "acquired", "steps")


def session(backbone: str, folder: Path, config: Path | None = None, demo_args: list[str] | None = None,
            checkout: Path | None = None, label: str | None = None) -> dict:
    """One ``livedenoise demo --backbone`` session; the figures of its report.json. ``checkout``: run that
    checkout's livedenoise (its folder first on the path); ``label`` names the session's row (default: backbone)."""
    if folder.exists():
        shutil.rmtree(folder)  # only this benchmark's own run folder
    cli = Path(sys.executable).parent / "livedenoise"
    # "temporal-fusion": the temporal backbone without its second pass (--no-second-pass); "temporal-one-pass": its
    # display always in one pass (--one-pass on), "temporal-two-passes" always in two (--one-pass off), "temporal"
    # as the default chooses (--one-pass auto since 2026-12-06, two passes before)
    options = {"temporal-fusion": ["--backbone", "temporal", "--no-second-pass"],
               "temporal-one-pass": ["--backbone", "temporal", "--one-pass", "on"],
               "temporal-two-passes": ["--backbone", "temporal", "--one-pass", "off"],
               "temporal-auto": ["--backbone", "temporal", "--one-pass", "auto"]}.get(backbone,
                                                                                      ["--backbone", backbone])
    env = dict(os.environ) if checkout is None else checkout_env(checkout)
    started = time.perf_counter()
    proc = subprocess.run([str(cli), "demo", *options, *(demo_args or []), "-o", str(folder)]
                          + (["--config", str(config)] if config else []), capture_output=True, text=True, env=env)
    wall_s = time.perf_counter() - started
    report_path = folder / "report.json"
    if proc.returncode != 0 or not report_path.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"livedenoise demo --backbone {backbone} failed (exit {proc.returncode}): " + " / ".join(tail))
    r = json.loads(report_path.read_text())
    shown, q, ft = r.get("display_quality") or {}, r.get("quality") or {}, r.get("finetune") or {}
    return {"backbone": label or backbone, "display_backbone": shown.get("backbone"),
            "display_adapted": shown.get("adapted"),
            "display_frames": [shown.get("backbone_frames"), shown.get("adapted_frames")],
            "single_backbone": (q.get("backbone") or {}).get("psnr"),
            "single_adapted": (q.get("adapted") or {}).get("psnr"),
            "latency_ms": r.get("mean_latency_ms"), "display_fps": r.get("denoised_fps"),
            "skipped": r.get("frames_dropped"), "recorded": r.get("frames_written"),
            "acquired": r.get("frames_acquired"),
            "steps": ft.get("steps"), "swapped_at_frame": r.get("swapped_at_frame"),
            "finetune_elapsed_s": ft.get("elapsed_s"), "finetune_paused_s": ft.get("paused_s", 0.0),
            "finetune_stopped_waiting": ft.get("stopped_waiting"),
            "finetune_display_skipped": ft.get("display_skipped"),
            "finetune_stopped": ft.get("stopped"), "best_val_loss": ft.get("best_val_loss"),
            "phases": r.get("display_phases"),
            "recorded_backbone": (r.get("recorded_quality") or {}).get("backbone"),
            "recorded_adapted": (r.get("recorded_quality") or {}).get("adapted"),
            "recorded_frames_scored": [(r.get("recorded_quality") or {}).get("backbone_frames"),
                                       (r.get("recorded_quality") or {}).get("adapted_frames")],
            "recorded_window": r.get("recorded_window"), "recorder_tail_s": r.get("recorder_tail_s"),
            "display_passes": r.get("display_passes") or {},
            "session_wall_s": wall_s,
            "fixed_pattern": r.get("fixed_pattern"), "swap_criterion": r.get("swap_criterion"),
            "errors": r.get("errors") or [], "load_at_end": (r.get("machine") or {}).get("load_average"),
            "machine": r.get("machine")}


def summarise(runs: list[dict], backbones: list[str]) -> dict:
    return {b: {f: finite_mean([r[f] for r in runs if r["backbone"] == b]) for f in FIELDS} for b in backbones}


def render_phases(payload: dict) -> str:
    """Per session: the display while the background fine-tune ran and after it, and what the fine-tune did (the
    table of README "The display comes first")."""
    rows = []
    for r in payload["runs"]:
        ph = r.get("phases") or {}
        cells = []
        for name in ("while fine-tuning", "after fine-tuning"):
            p = ph.get(name)
            cells += (["-"] * 3 if not p else
                      [f"{p['denoised_fps']:.1f} of {p['camera_fps']:.1f}", f"{p['frames_dropped']}",
                       f"{p['mean_latency_ms']:.0f}"])
        paused = r.get("finetune_paused_s") or 0.0
        rows.append([f"`{r['backbone']}`", *cells, f"{r['steps']}", f"{r['finetune_elapsed_s']:.1f}",
                     f"{paused:.1f}", f"{r['best_val_loss']:.3g}", f"{r['display_fps']:.1f}", f"{r['skipped']}",
                     f"{r['latency_ms']:.0f}", f"{r['recorded']} of {r['acquired']}"])
    return table(["session", "while fine-tuning: shown of camera fps", "skipped", "latency ms",
                  "after: shown of camera fps", "skipped", "latency ms", "fine-tune steps", "fine-tune s",
                  "of it waiting s", "held-out loss", "whole session: display fps", "skipped", "latency ms",
                  "recorded"], rows)


def render_recorded(payload: dict) -> str:
    """Per session: what was recorded against what was shown, and what recording cost after the camera stopped (the
    table of README "Recorded frames of a temporal backbone")."""
    def db(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    rows = [[f"`{r['backbone']}`", r.get("recorded_window") or "-", db(r["display_backbone"]), db(r["display_adapted"]),
             db(r.get("recorded_backbone")), db(r.get("recorded_adapted")), f"{r['display_fps']:.1f}",
             f"{r['latency_ms']:.0f}", f"{r['recorded']} of {r['acquired']}", f"{r.get('recorder_tail_s') or 0.0:.1f}",
             f"{r.get('session_wall_s') or 0.0:.0f}", f"{r['steps']}"] for r in payload["runs"]]
    return table(["session", "recorded window", "shown: backbone", "shown: adapted", "recorded: backbone",
                  "recorded: adapted", "display fps", "latency ms", "recorded", "recording after the camera stopped s",
                  "session wall s", "fine-tune steps"], rows)


def render(payload: dict) -> str:
    """The comparison table (Markdown), also used by ``readme_tables.py``."""
    means, runs = payload["means"], payload["runs"]
    rows = []
    for b, m in means.items():
        n = sum(r["backbone"] == b for r in runs)
        swapped = sum(r["backbone"] == b and r.get("swapped_at_frame") is not None for r in runs)

        def adapted(value: float, swapped: int = swapped) -> str:
            return "not swapped in" if swapped == 0 else f"{value:.2f}"

        rows.append([f"`{b}`", f"{n} ({swapped} swapped)", f"{m['display_backbone']:.2f}",
                     adapted(m["display_adapted"]), f"{m['single_backbone']:.2f}", adapted(m["single_adapted"]),
                     f"{m['latency_ms']:.0f}",
                     f"{m['display_fps']:.1f}", f"{m['skipped']:.0f}", f"{m['recorded']:.0f} of {m['acquired']:.0f}",
                     f"{m['steps']:.0f}"])
    return table(["backbone", "sessions", "shown: backbone", "shown: adapted", "single: backbone",
                  "single: adapted", "latency ms", "display fps", "skipped", "recorded", "fine-tune steps"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="fast,temporal", help="comma-separated backbones to start sessions from")
    ap.add_argument("--repeats", type=int, default=2, help="sessions per backbone (interleaved)")
    ap.add_argument("--keep-fixed-pattern", action="store_true",
                    help="sessions with [live] remove_fixed_pattern = false (the references keep the camera's pattern)")
    ap.add_argument("--interval-ms", type=float, help="[live] interval_ms of the sessions (default: session.toml's)")
    ap.add_argument("--demo-args", default="", help="more `livedenoise demo` options for every session, e.g. "
                    "'--roi 512x512 --precision bf16 --finetune-seconds 30 --frames 200'")
    ap.add_argument("--checkout", action="append", default=[], metavar="LABEL=PATH",
                    help="also run every session with another checkout's livedenoise (a git worktree of an earlier "
                         "commit), interleaved; its rows are labelled 'backbone @ LABEL'")
    ap.add_argument("--recorded-windows", default="",
                    help="comma-separated [live] recorded_window values (centred, causal) to run every session with, "
                         "interleaved; rows are labelled 'backbone [window]'")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    variants: list[tuple[str, Path | None]] = [("", None)]
    for spec in args.checkout:
        label, sep, path = spec.partition("=")
        if not sep or not (Path(path) / "livedenoise" / "__init__.py").is_file():
            raise SystemExit(f"--checkout {spec!r}: expected LABEL=PATH of a livedenoise checkout")
        variants.append((label, Path(path).resolve()))
    config = None
    from livedenoise.config import settings_dir

    text = (settings_dir() / "session.toml").read_text()
    changed = text
    if args.keep_fixed_pattern:  # the default settings with one change
        if "remove_fixed_pattern = true" not in text:
            raise SystemExit("session.toml has no 'remove_fixed_pattern = true' line to turn off")
        changed = changed.replace("remove_fixed_pattern = true", "remove_fixed_pattern = false")
    if args.interval_ms is not None:
        changed, n = re.subn(r"(?m)^interval_ms = [0-9.]+", f"interval_ms = {args.interval_ms:g}", changed)
        if n != 1:
            raise SystemExit("session.toml has no 'interval_ms = ...' line to change")
    if changed != text:
        config = args.output / "session.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(changed)
    windows = [w.strip() for w in args.recorded_windows.split(",") if w.strip()]
    configs: list[tuple[str, Path | None]] = [("", config)]
    if windows:  # one session.toml per recorded window, each the settings above with that one line changed
        configs = []
        for w in windows:
            varied, n = re.subn(r'(?m)^recorded_window = "\w+"', f'recorded_window = "{w}"', changed)
            if n != 1:
                raise SystemExit("session.toml has no 'recorded_window = ...' line to change")
            path = args.output / f"session-{w}.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(varied)
            configs.append((w, path))
    demo_args = shlex.split(args.demo_args)
    runs, labels = [], []
    for i in range(args.repeats):
        for b in backbones:
            for window, cfg in (configs if i % 2 == 0 else configs[::-1]):
                for label, checkout in (variants if i % 2 == 0 else variants[::-1]):
                    name = (f"{b} @ {label}" if label else b) + (f" [{window}]" if window else "")
                    if name not in labels:
                        labels.append(name)
                    folder = (args.output / "live-sessions"
                              / f"{Path(b).stem}{'-' + label if label else ''}{'-' + window if window else ''}-{i}")
                    r = session(b, folder, cfg, demo_args, checkout, name)
                    runs.append(r)
                    adapted = r["display_adapted"] if r["display_adapted"] is not None else float("nan")
                    recorded = r["recorded_backbone"] if r["recorded_backbone"] is not None else float("nan")
                    print(f"[live] {name} #{i}: shown {r['display_backbone']:.2f} -> {adapted:.2f} dB, recorded "
                          f"{recorded:.2f} dB, {r['display_fps']:.1f} display fps, latency {r['latency_ms']:.0f} ms, "
                          f"{r['steps']} fine-tune steps, recording ended {r['recorder_tail_s'] or 0:.0f} s after "
                          "the camera", flush=True)
    backbones = labels
    info = machine()
    threads = {(r.get("machine") or {}).get("torch_threads") for r in runs} - {None}
    if threads:  # the sessions' own torch threads (each demo sets its own), not this parent process's
        info["torch_threads"] = threads.pop() if len(threads) == 1 else sorted(threads)
    payload = {"machine": info, "runs": runs, "means": summarise(runs, backbones),
               "command": "python benchmarks/bench_live.py" + (f" --backbones {args.backbones}"
                                                               if args.backbones != "fast,temporal" else "")
               + (f" --repeats {args.repeats}" if args.repeats != 2 else "")
               + (" --keep-fixed-pattern" if args.keep_fixed_pattern else "")
               + (f" --interval-ms {args.interval_ms:g}" if args.interval_ms is not None else "")
               + (f" --demo-args {shlex.quote(args.demo_args)}" if args.demo_args else "")
               + "".join(f" --checkout {shlex.quote(c)}" for c in args.checkout)
               + (f" --recorded-windows {args.recorded_windows}" if windows else ""),
               "demo_args": demo_args, "interval_ms": args.interval_ms,
               "commits": {label or "this checkout": checkout_commit(path or Path(__file__).resolve().parents[1])
                           for label, path in variants},
               "fixed_pattern_removed": not args.keep_fixed_pattern}
    md = ("Live sessions (`livedenoise demo`), mean over sessions; PSNR dB against the simulator's ground truth; "
          "*shown*: every 5th frame the viewer showed, *single*: 8 live frames each denoised on its own.\n\n"
          + render(payload) + "\n\n" + render_recorded(payload) + f"\n\n{machine_line(info)}\n")
    publish(args.output, "live", payload, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
