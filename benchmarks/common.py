"""Shared helpers of the benchmark scripts: machine description, output files, the peers environment.

Benchmarks are run on demand (never in CI's test command) and write ``<name>.json`` (every number
and the machine description) and ``<name>.md`` (the tables) into an output folder, ``runs/bench`` by
default (``runs/`` is gitignored).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.evaluate_report import json_safe

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUTPUT = REPO / "runs" / "bench"
#: The shared dev pairs (read at run time, never copied into the project).
REAL_PAIRS_DEV = REPO.parent / "shared" / "data" / "real_pairs_dev"
#: Sets of real_pairs_dev scored with the affine-fit metric: MANIFEST.md says noisy and clean were
#: scaled independently (8-bit display renders: rcan_isim, gigadb_hagen, acsn; W2S stretched per
#: image) or differ ~8x in counts (nucleus_migration). fmd (channels of one composite) and bacteria
#: (values unchanged) keep the plain percentile normalisation.
DEV_AFFINE_SETS = ("rcan_isim", "gigadb_hagen", "acsn", "w2s_widefield", "nucleus_migration")

if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(REPO))


def machine() -> dict:
    from livedenoise.evaluate import machine_info

    return machine_info()


def machine_line(info: dict) -> str:
    from livedenoise.evaluate import describe_machine

    line = describe_machine(info)
    if info.get("load_average_start"):
        line += f" (load average {info['load_average_start'][0]:g} at the start)"
    return line


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine skews every timing, so it is recorded."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover
        return None


def write_outputs(output: Path, name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` into ``output``; returns both paths."""
    output.mkdir(parents=True, exist_ok=True)
    jp, mp = output / f"{name}.json", output / f"{name}.md"
    jp.write_text(json.dumps(json_safe(payload), indent=1))
    mp.write_text(markdown)
    return jp, mp


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def peers_python() -> Path | None:
    """The peers environment's python (``$LIVEDENOISE_PEERS_PYTHON`` or ``benchmarks/.venv``), if it exists."""
    env = os.environ.get("LIVEDENOISE_PEERS_PYTHON")
    for cand in ([Path(env)] if env else []) + [HERE / ".venv" / "bin" / "python", REPO.parent / "peers-venv" / "bin" / "python"]:
        if cand.is_file():
            return cand
    return None


class PeerError(RuntimeError):
    """A peer tool failed or is not installed."""


def run_peer(spec: dict, images: list[np.ndarray], *, timeout_s: float = 3600) -> tuple[list[np.ndarray], list[float], dict]:
    """Run ``peers_worker.py`` in the peers environment on ``images``; returns outputs, seconds/image, info."""
    py = peers_python()
    if py is None:
        raise PeerError("peers environment missing: run `bash benchmarks/setup_peers.sh`")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, spec=json.dumps({**spec, "count": len(images)}),
                 **{f"img_{i}": np.asarray(im, np.float32) for i, im in enumerate(images)})
        proc = subprocess.run([str(py), str(HERE / "peers_worker.py"), str(src), str(dst)], capture_output=True,
                              text=True, timeout=timeout_s)
        if proc.returncode != 0 or not dst.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise PeerError(f"{spec['method']} failed (exit {proc.returncode}): " + " / ".join(tail))
        with np.load(dst) as data:
            outs = [data[f"out_{i}"] for i in range(len(images))]
            return outs, [float(s) for s in data["seconds"]], json.loads(str(data["info"]))
