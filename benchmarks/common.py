"""Shared helpers of the benchmark scripts: machine description, output files, the peers environment.

Benchmarks are run on demand (never in CI's test command) and write ``<name>.json`` (every number
and the machine description) and ``<name>.md`` (the tables) into an output folder, ``runs/bench`` by
default (``runs/`` is gitignored).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.evaluate.report import json_safe

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


def checkout_env(root: Path, *extra: Path) -> dict[str, str]:
    """The environment in which a child process imports the livedenoise of checkout ``root`` (a git worktree of
    another commit) before the installed one; ``extra`` folders go on the path after it."""
    paths = [str(root), *(str(p) for p in extra), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def checkout_commit(root: Path) -> str:
    """The commit checked out at ``root`` ('' when it is not a git checkout), with ``+uncommitted changes`` when the
    product code (``livedenoise/``, ``simulators/``) differs from it: a result must name the code that made it."""
    import subprocess

    res = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if res.returncode != 0:
        return ""
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "livedenoise", "simulators"],
                           capture_output=True, text=True).stdout.strip()
    return res.stdout.strip() + (" +uncommitted changes" if dirty else "")


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


def publish(output: Path, name: str, payload: dict, markdown: str) -> None:
    """Write the run's JSON and Markdown (:func:`write_outputs`) and print the tables and where they went."""
    jp, mp = write_outputs(output, name, payload, markdown)
    print(markdown)
    print(f"wrote {jp} and {mp}")


def report(title: str, payload: dict, lines: list[str], heading: bool = True) -> str:
    """A run's Markdown: ``lines`` (the tables), under a title with the machine and command when ``heading`` (the
    ``.md`` file; the README's blocks take the lines alone)."""
    if heading:
        lines = [f"# {title}", "", f"- machine: {machine_line(payload['machine'])}",
                 f"- command: `{payload['command']}`", "", *lines]
    return "\n".join(lines) + "\n"


def finite_mean(values) -> float:
    """Mean of the finite numbers among ``values`` (None, NaN, inf and non-numbers skipped); NaN when none."""
    v = [float(x) for x in values if isinstance(x, (int, float, np.floating)) and math.isfinite(float(x))]
    return float(np.mean(v)) if v else math.nan


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def peers_python() -> Path | None:
    """The peers environment's python (``$LIVEDENOISE_PEERS_PYTHON`` or ``benchmarks/.venv``), if it exists."""
    env = os.environ.get("LIVEDENOISE_PEERS_PYTHON")
    for cand in ([Path(env)] if env else []) + [HERE / ".venv" / "bin" / "python",
                                                 REPO.parent / "peers-venv" / "bin" / "python"]:
        if cand.is_file():
            return cand
    return None


class PeerError(RuntimeError):
    """A peer tool failed or is not installed."""


def run_peer(spec: dict, images: list[np.ndarray], *,
             timeout_s: float = 3600) -> tuple[list[np.ndarray], list[float], dict]:
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


# ---------------------------------------------------------------------------------------------
# variance-stabilised classical peers (VST + BM3D, VST + NLM)
# ---------------------------------------------------------------------------------------------
def vst_forward(frame: np.ndarray) -> tuple[np.ndarray, Any]:
    """Stabilise ``frame`` to noise std 1 with the Poisson-Gaussian fit of the frame itself; returns (z, normalizer).

    The fit is :func:`livedenoise.noise_model.fit_noise_model` on the single image -- the same
    estimate ``livedenoise denoise`` makes for a lone 2-D image -- so the classical peers and the
    network start from the same noise model. The normaliser keeps ``scale = 1`` (stabilised units)
    and the closed-form unbiased inverse (Makitalo & Foi 2011/2013): a denoiser in the stabilised
    domain estimates ``E[GAT(x)]``, whose algebraic inverse is biased low at a few photons.
    """
    from livedenoise.noise_model import fit_noise_model

    fit = fit_noise_model([np.asarray(frame)])
    norm = fit.normalizer.copy(scale=1.0, inversion="unbiased")
    return norm.to_stabilised(frame), norm


def vst_inverse(z: np.ndarray, norm: Any) -> np.ndarray:
    """Back from the stabilised domain to the frame's units with the unbiased inverse (float32)."""
    return norm.inverse(np.asarray(z, np.float64))


def nlm_stabilised(z: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """scikit-image non-local means on a stabilised image (noise ``sigma``; MANIFEST.md's h = 0.8 sigma, 5/6
    patches)."""
    from skimage.restoration import denoise_nl_means

    return np.asarray(denoise_nl_means(np.asarray(z, np.float64), h=0.8 * sigma, sigma=sigma, fast_mode=True,
                                       patch_size=5, patch_distance=6), np.float64)


def vst_nlm(frame: np.ndarray) -> np.ndarray:
    """VST + NLM: stabilise with the frame's own noise fit, NLM with sigma 1, unbiased inverse.

    The stabilised image is centred first, as for BM3D (NLM commutes with a constant shift).
    """
    z, norm = vst_forward(frame)
    c = float(np.median(z))
    return vst_inverse(nlm_stabilised(z - c) + c, norm)


def vst_bm3d(frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    """VST + BM3D (sigma 1) in the peers environment; returns outputs and seconds per image (BM3D + transforms).

    Raises :class:`PeerError` when the peers environment (PyPI ``bm3d``) is missing.
    """
    import time

    t0 = time.perf_counter()
    zs, norms = zip(*(vst_forward(f) for f in frames), strict=True)
    # Centre each stabilised image: with a nearly signal-independent fit (8-bit renders) the GAT
    # sits near 2e5 with noise 1, and BM3D's float32 arithmetic there lost the image (fmd crop:
    # 15.7 dB, below the raw 17.5; centred 17.8). BM3D commutes with a constant shift.
    centres = [float(np.median(z)) for z in zs]
    t_vst = time.perf_counter() - t0
    den, secs, _ = run_peer({"method": "bm3d", "sigma": 1.0}, [z - c for z, c in zip(zs, centres, strict=True)])
    t1 = time.perf_counter()
    outs = [vst_inverse(d + c, nm) for d, c, nm in zip(den, centres, norms, strict=True)]
    t_vst += time.perf_counter() - t1
    # the worker's own BM3D timing plus the transforms here; the subprocess start-up is not counted
    return outs, [s + t_vst / len(frames) for s in secs]


def other_python_args(argv: list[str] | None, doc: str | None, python_help: str) -> argparse.Namespace:
    """``--python`` (another environment's interpreter, for checks against another tool) and ``--output``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, help=python_help)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return ap.parse_args(argv)
