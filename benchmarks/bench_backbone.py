"""Backbones side by side with VST+BM3D, zero-shot: the dev pairs and the simulator, in one run.

    python benchmarks/bench_backbone.py                              # shipped fast + standard backbones
    python benchmarks/bench_backbone.py --model runs/train/x.safetensors --model fast
    python benchmarks/bench_backbone.py --quick                      # 1 pair per set, 256² crops, fewer sim cases

What this answers (issue "Quality, part 2"): does a backbone, used the way ``livedenoise denoise`` uses
it (noise model fitted to each image, :func:`livedenoise.evaluate.with_normalizer`, the product's
:class:`~livedenoise.inference.Denoiser`), beat variance-stabilised BM3D given the *same* noise
estimate (``common.vst_bm3d``)? Per dev set and per simulated photon level / PSF / structure, with the
gap in dB, and every candidate's training steps from its own metadata.

Data:

* real dev pairs (``../shared/data/real_pairs_dev``, read in place), scored like ``bench_quality.py``:
  affine-fit metric for the independently scaled sets (``common.DEV_AFFINE_SETS``); ``nucleus_migration``
  (8x fewer counts in the noisy frame) is reported but left out of the mean, as MANIFEST.md advises;
* simulated fields from :mod:`simulators.structures` with seeds no training bank uses, through the
  Andor Zyla preset camera (exact per-pixel model) at 1, 5, 20, 100 and 1,000 photons peak, confocal-like
  (PSF sigma 1 px) and widefield-like (PSF sigma 2 px plus haze) optics; ``straight_filaments`` is the
  structure the synthetic backbones never saw. Scored against the truth with the fixed pattern (what the
  camera's expected image is) and without it (``flat``: median gain/offset).

BM3D outputs are cached under ``runs/cache/bm3d`` by the hash of their input, so comparing a new
candidate costs only its own inference.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_OUTPUT,
    DEV_AFFINE_SETS,
    REAL_PAIRS_DEV,
    REPO,
    finite_mean,
    machine,
    machine_line,
    publish,
    table,
    vst_bm3d,
)

CACHE = REPO / "runs" / "cache" / "bm3d"
PHOTONS = (1.0, 5.0, 20.0, 100.0, 1000.0)
#: name -> (PSF sigma px, haze share): confocal-like and widefield-like optics.
OPTICS = {"confocal": (1.0, 0.0), "widefield": (2.0, 0.6)}
SIM_STRUCTURES = ("straight_filaments", "curved_filaments", "puncta", "cytoplasm")
EXCLUDED_FROM_MEAN = ("nucleus_migration",)


@dataclass
class Case:
    name: str
    group: str  # dev set, or "sim <photons> <optics>"
    noisy: np.ndarray
    reference: np.ndarray
    flat: np.ndarray | None
    affine: bool
    structure: str = ""


def dev_cases(folder: Path, quick: bool) -> list[Case]:
    from livedenoise.evaluate.real_pairs import centre_crop
    from livedenoise.training.pairs import load_pair_folder

    seen: dict[str, int] = {}
    cases = []
    for p in load_pair_folder(folder):
        if quick and seen.get(p.set, 0) >= 1:
            continue
        seen[p.set] = seen.get(p.set, 0) + 1
        crop = 256 if quick else None
        cases.append(Case(f"{p.set}/{p.name}", p.set, centre_crop(np.asarray(p.noisy), crop),
                          centre_crop(np.asarray(p.clean), crop).astype(np.float32), None, p.set in DEV_AFFINE_SETS))
    return cases


def sim_cases(quick: bool, size: int = 256, seed: int = 777_000) -> list[Case]:
    """Held-out simulated fields through an exact sCMOS model (Zyla preset, its own per-pixel maps)."""
    from scipy.ndimage import gaussian_filter

    from simulators.camera import SCMOSCamera
    from simulators.config import load_camera_preset
    from simulators.structures import KINDS

    camera = SCMOSCamera(load_camera_preset("andor-zyla-4.2").model_copy(
        update={"seed": seed, "width": size, "height": size}), roi=(size, size))
    maps = camera.maps
    med_gain, med_offset = float(np.median(maps.gain)), float(np.median(maps.offset))
    structures = SIM_STRUCTURES[:2] if quick else SIM_STRUCTURES
    photons = (1.0, 20.0, 1000.0) if quick else PHOTONS
    cases = []
    for s_i, structure in enumerate(structures):
        for optics, (sigma, haze) in OPTICS.items():
            rng = np.random.default_rng([seed, s_i, int(sigma * 10)])
            part = KINDS[structure](rng, size)
            field = gaussian_filter(part, sigma)
            if haze:
                field = field + haze * gaussian_filter(field, 12)
            field = field / max(float(np.percentile(field, 99.9)), 1e-9)
            for peak in photons:
                photons_img = (field * peak + 0.05 * peak).astype(np.float32) / camera.config.quantum_efficiency
                t = 0.02
                noisy = camera.expose(photons_img, t, np.random.default_rng([seed, s_i, int(peak)]))
                truth = camera.expected(photons_img, t)
                e = camera.config.quantum_efficiency * photons_img + float(np.median(maps.dark_current)) * t
                flat = (e * med_gain + med_offset).astype(np.float32)
                cases.append(Case(f"sim {structure} {optics} {peak:g}", f"{peak:g} ph {optics}", noisy, truth, flat,
                                  False, structure))
    return cases


def _peer_code_version() -> str:
    """A hash of the code that makes a VST+BM3D output: the noise fit and transforms (``noise_model``,
    ``normalization``), the peer glue in ``common.py`` and the peers' worker. A change invalidates the cache;
    unrelated edits to ``common.py`` (tables, means) do not."""
    import inspect

    import common

    from livedenoise import noise_model, normalization

    parts = [inspect.getsource(m) for m in (noise_model, normalization)]
    parts += [inspect.getsource(f) for f in (common.vst_forward, common.vst_inverse, common.vst_bm3d, common.run_peer)]
    parts.append((Path(common.__file__).parent / "peers_worker.py").read_text())
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:12]


def cached_bm3d(frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    """VST+BM3D per frame, cached by the frame's bytes and the code version (BM3D is deterministic)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    version = _peer_code_version()
    outs: list[np.ndarray | None] = []
    secs: list[float] = []
    todo = []
    for i, f in enumerate(frames):
        key = hashlib.sha256(np.ascontiguousarray(f).tobytes() + str(f.shape).encode() + str(f.dtype).encode()
                             + version.encode()).hexdigest()[:24]
        path = CACHE / f"{key}.npz"
        if path.exists():
            with np.load(path) as d:
                outs.append(d["out"])
                secs.append(float(d["seconds"]))
        else:
            outs.append(None)
            secs.append(math.nan)
            todo.append((i, path))
    for start in range(0, len(todo), 4):  # a few frames per peer call: an interrupted fill keeps what it did
        chunk = todo[start:start + 4]
        done, s = vst_bm3d([frames[i] for i, _ in chunk])
        for (i, path), out, sec in zip(chunk, done, s, strict=True):
            tmp = path.with_suffix(".partial.npz")
            np.savez(tmp, out=out, seconds=sec)
            tmp.replace(path)
            outs[i], secs[i] = out, sec
    return outs, secs  # type: ignore[return-value]


def model_outputs(spec: str, frames: list[np.ndarray], ensemble: int = 1) -> tuple[list[np.ndarray], float, dict]:
    """The default ``denoise`` path: noise model fitted to each image, the product's Denoiser."""
    from livedenoise.evaluate import with_normalizer
    from livedenoise.inference import Denoiser
    from livedenoise.modelspec import load_model_spec

    ckpt = load_model_spec(spec)
    t = ckpt.training or {}
    info = {"name": ckpt.name, "total_steps": t.get("total_steps", t.get("steps")),
            "stages": len(t.get("stages", [])) or None, "best_val_loss": t.get("best_val_loss")}
    outs = []
    t0 = time.perf_counter()
    for f in frames:
        den = Denoiser(with_normalizer(ckpt, [f]), device="cpu", ensemble=ensemble)
        outs.append(den.denoise(f))
    return outs, (time.perf_counter() - t0) / max(len(frames), 1), info


def score_rows(cases: list[Case], methods: dict[str, tuple[list[np.ndarray], float, dict]]) -> list[dict]:
    """One row per case and method: PSNR/SSIM against the case's reference (and its flat truth, if any)."""
    from livedenoise.metrics import score

    rows = []
    for i, c in enumerate(cases):
        for m, (outs, sec, _) in methods.items():
            s = score(c.reference, outs[i], affine=c.affine)
            f = score(c.flat, outs[i]) if c.flat is not None else None
            rows.append({"case": c.name, "group": c.group, "structure": c.structure, "method": m, "psnr": s.psnr,
                         "ssim": s.ssim, "psnr_flat": f.psnr if f else None, "ssim_flat": f.ssim if f else None,
                         "affine": c.affine, "seconds_per_image": sec})
    return rows


def main(argv: list[str] | None = None) -> int:
    import logging

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="candidate: 'fast', 'standard' or a checkpoint (repeatable)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ensemble", type=int, default=1,
                    help="also run every candidate with this self-ensemble size (2, 4 or 8; Denoiser(ensemble=))")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--no-sim", action="store_true")
    ap.add_argument("--pairs", type=Path, default=REAL_PAIRS_DEV)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.ERROR)
    models = args.model or ["fast", "standard"]
    cases: list[Case] = []
    if not args.no_real and args.pairs.is_dir():
        cases += dev_cases(args.pairs, args.quick)
    if not args.no_sim:
        cases += sim_cases(args.quick)
    frames = [c.noisy for c in cases]
    print(f"[backbone] {len(cases)} cases; VST+BM3D (cached under {CACHE})", flush=True)
    methods: dict[str, tuple[list[np.ndarray], float, dict]] = {}
    methods["noisy"] = ([np.asarray(f, np.float32) for f in frames], 0.0, {})
    bm, secs = cached_bm3d(frames)
    methods["vst+bm3d"] = (bm, float(np.nanmean(secs)), {})
    labels = []
    for spec in models:
        print(f"[backbone] {spec}", flush=True)
        outs, sec, info = model_outputs(spec, frames)
        label = f"{Path(spec).stem if spec.endswith('.safetensors') else spec}"
        labels.append(label)
        methods[label] = (outs, sec, info)
        if args.ensemble > 1:
            outs, sec, info = model_outputs(spec, frames, args.ensemble)
            labels.append(f"{label} x{args.ensemble}")
            methods[labels[-1]] = (outs, sec, {**info, "ensemble": args.ensemble})
    rows = score_rows(cases, methods)
    models = {label: {**methods[label][2], "seconds_per_image": methods[label][1]} for label in labels}
    payload = {"machine": machine(), "quick": args.quick, "command": "python benchmarks/bench_backbone.py "
               + " ".join(argv if argv is not None else sys.argv[1:]), "models": models,
               "bm3d_seconds_per_image": methods["vst+bm3d"][1], "rows": rows}
    md = render(payload)
    publish(args.output, "backbone" + ("-quick" if args.quick else ""), payload, md)
    return 0




def overall_means(payload: dict) -> dict[str, dict[str, float]]:
    """Per method, the mean PSNR over the dev sets (without :data:`EXCLUDED_FROM_MEAN`; each set weighs the same)
    and over the simulator's cases (against the sample, ``sim``), as the tables' **mean** rows give them."""
    rows = payload["rows"]
    groups = list(dict.fromkeys(r["group"] for r in rows))
    dev = [g for g in groups if not g[0].isdigit() and g not in EXCLUDED_FROM_MEAN]
    sim = [g for g in groups if g[0].isdigit()]

    def mean(method: str, sel: list[str], key: str) -> float:
        return finite_mean(finite_mean(r[key] for r in rows if r["group"] == g and r["method"] == method) for g in sel)

    methods = list(dict.fromkeys(r["method"] for r in rows))
    return {m: {"dev": mean(m, dev, "psnr"), "sim": mean(m, sim, "psnr_flat")} for m in methods}


def render(payload: dict, *, heading: bool = True) -> str:
    """Markdown tables from a result payload (what ``main`` writes as JSON; ``readme_tables.py`` reuses it)."""
    rows, models = payload["rows"], payload["models"]
    labels = list(models)
    order = ["noisy", "vst+bm3d", *labels]
    groups = list(dict.fromkeys(r["group"] for r in rows))
    lines = [f"# Backbones vs VST+BM3D{' (quick)' if payload.get('quick') else ''}", "",
             f"- machine: {machine_line(payload['machine'])}"] if heading else []
    lines += ["- VST+BM3D and the networks start from the same noise fit of each image (`fit_noise_model`; the "
              "networks' normaliser also keeps the dark level in the backbone's range); PSNR dB / SSIM; "
              "Δ = candidate − VST+BM3D (dB)", ""]
    for label, info in models.items():
        ens = f", self-ensemble x{info['ensemble']}" if info.get("ensemble") else ""
        lines.append(f"- `{label}`: {info.get('name')}, {info.get('total_steps')} training steps in all{ens}, "
                     f"{info.get('seconds_per_image', math.nan) * 1000:.0f} ms per image (noise fit + inference)")
    lines.append("")

    def cell(m: str, g: str, key: str = "psnr", skey: str = "ssim") -> str:
        sel = [r for r in rows if r["group"] == g and r["method"] == m]
        return f"{finite_mean(r[key] for r in sel):.2f} / {finite_mean(r[skey] for r in sel):.3f}"

    def group_mean(m: str, groups: list[str], key: str) -> float:
        return finite_mean(finite_mean(r[key] for r in rows if r["group"] == g and r["method"] == m) for g in groups)

    def delta(m: str, g: str, key: str = "psnr") -> float:
        a = finite_mean(r[key] for r in rows if r["group"] == g and r["method"] == m)
        b = finite_mean(r[key] for r in rows if r["group"] == g and r["method"] == "vst+bm3d")
        return a - b

    dev = [g for g in groups if not g[0].isdigit()]
    sim_groups = [g for g in groups if g[0].isdigit()]
    for kind, sel_groups, key, skey in (
            ("dev pairs", dev, "psnr", "ssim"),
            ("simulator, against the sample (truth without the camera's fixed pattern)", sim_groups, "psnr_flat",
             "ssim_flat"),
            ("simulator, against the camera's expected image (with its fixed pattern)", sim_groups, "psnr", "ssim")):
        if not sel_groups:
            continue
        lines += [f"## {kind}" if heading else f"**{kind}**", ""]
        head = ["set", *order, *[f"Δ {lab}" for lab in labels]]
        body = [[g, *[cell(m, g, key, skey) for m in order], *[f"{delta(lab, g, key):+.2f}" for lab in labels]]
                for g in sel_groups]
        mean_groups = [g for g in sel_groups if g not in EXCLUDED_FROM_MEAN]
        body.append(["**mean**" + (" (without nucleus_migration)" if len(mean_groups) < len(sel_groups) else ""),
                     *[f"{group_mean(m, mean_groups, key):.2f} / {group_mean(m, mean_groups, skey):.3f}"
                       for m in order],
                     *[f"{finite_mean(delta(lab, g, key) for g in mean_groups):+.2f}" for lab in labels]])
        lines += [table(head, body), ""]
    sim = [r for r in rows if r["structure"]]
    if sim:
        title = ("simulator by structure (mean over photon levels and optics; PSNR against the sample / the camera's "
                 "image)")
        lines += [f"## {title}" if heading else f"**{title}**", ""]
        structures = list(dict.fromkeys(r["structure"] for r in sim))
        head = ["structure", *order]
        body = [[s, *[f"{finite_mean(r['psnr_flat'] for r in sim if r['structure'] == s and r['method'] == m):.2f} / "
                      f"{finite_mean(r['psnr'] for r in sim if r['structure'] == s and r['method'] == m):.2f}"
                      for m in order]] for s in structures]
        lines += [table(head, body), "", "`straight_filaments` is held out of the synthetic training bank.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
