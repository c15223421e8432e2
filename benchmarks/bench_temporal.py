"""Time-lapses: the temporal backbone against the 2-D one, VST+BM3D and VST+BM4D, in one run.

    python benchmarks/bench_temporal.py                                   # shipped temporal + fast backbones
    python benchmarks/bench_temporal.py --temporal runs/train/temporal.safetensors
    python benchmarks/bench_temporal.py --quick                           # one case, fewer frames

What this answers (issue "Time-lapses"): on simulated time-lapses at 5 and 20 photons, does the temporal
model beat the best 2-D model on the same frames by >= 1.5 dB and VST+BM4D by >= 1 dB, without doing worse
on moving objects? Both ways the product runs it are measured:

* ``temporal live``: :meth:`Denoiser.push` frame after frame, a causal window (what the live display shows);
* ``temporal batch``: :meth:`Denoiser.denoise_stack`, each frame fused with neighbours on both sides (``denoise``);
* ``fusion only live`` / ``fusion only batch``: the same without the second pass (``second_pass=False``: the
  frames' 2-D results fused, their motion-compensated raw average not denoised again; :mod:`livedenoise.second_pass`);
* ``one pass live``: :meth:`Denoiser.push` with ``one_pass=True``: each new raw frame averaged with the frames before
  it where their outputs agree with it, denoised once (:mod:`livedenoise.one_pass`).

Data: the project simulator (:class:`simulators.microscope.SimulatedMicroscope`, Andor Zyla preset with
its exact per-pixel camera model), a slide of filaments, mitochondria, nuclei and puncta that random-walk
(``motion``: ~1.4 px rms per axis per frame), sample drift (0.5 px/frame in x, 0.3 in y, whole pixels as
the stage reports them) and bleaching (1 % per frame), 20 ms frames at 5, 20 and 100 photons peak,
confocal-like (PSF sigma 1 px) and widefield-like (2 px) optics. The sample renderer is not the one the
backbones were trained on (:mod:`simulators.structures`). Scored against the camera's expected image per
frame's sample (median gain and offset: the fixed pattern is noise to remove) and against the camera's expected image;
``moving`` is the error on pixels where the moving puncta contribute more than 10 % of the peak
(the simulator renders the field with and without them), ``rest`` the error everywhere else.

Every network gets the noise model the product fits to the stack (:func:`livedenoise.evaluate.with_normalizer`
on all frames); VST+BM3D stabilises each frame with its own fit (as in ``bench_backbone.py``), VST+BM4D the
whole stack with the stack's fit. BM3D/BM4D outputs are cached under ``runs/cache``.

``DeepCAD-RT`` (Li et al., Nat. Methods 2021 / Nat. Biotechnol. 2022; PyPI ``deepcad`` 1.2.0 in the peers
environment, ``peers_worker.py`` method ``deepcad``): self-supervised, trained from scratch on each case's stack
itself (interleaved frames as input and target) for a fixed wall-clock budget (``--deepcad-budget``, 1 torch
thread), then applied to that stack. It gets the raw camera frames (ADU; the package subtracts the stack's mean),
no noise model. Its ``ms per frame`` counts training and prediction (the method cannot run without its training);
the JSON gives both, and per case the iterations, epochs and losses of the training. Cached under ``runs/cache``.
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
from common import DEFAULT_OUTPUT, REPO, PeerError, finite_mean, machine, machine_line, publish, run_peer, table

CACHE = REPO / "runs" / "cache" / "bm4d"
# DeepCAD-RT: 3-D patches of 64x64 px; patch_t 8 frames (a multiple of 8 for its three poolings, and training takes
# 2 * patch_t frames: all 16 of a case); tiles and patches overlap by half; the package's f_maps. lr 5e-4, ten times
# its demo's 5e-5: that assumes ~10^4-10^5 iterations on a GPU; in a few hundred CPU iterations 5e-5 did not get
# below the raw input's error on a toy stack (16x128^2 Poisson, 60 s: out MSE 15.9 vs raw 15.9; 5e-4: 1.2).
DEEPCAD = {"patch_xy": 64, "patch_t": 8, "overlap": 0.5, "lr": 5e-4, "fmap": 16, "seed": 0}
EXPOSURE_S = 0.02
PHOTONS = (5.0, 20.0, 100.0)
OPTICS = {"confocal": 1.0, "widefield": 2.0}


@dataclass
class Series:
    name: str
    photons: float
    optics: str
    noisy: np.ndarray  # [T, H, W] uint16, what the camera gave
    truth: np.ndarray  # [T, H, W] float32 expected ADU (the camera's fixed pattern included)
    flat: np.ndarray  # [T, H, W] float32 the sample through a flat camera (median gain and offset)
    moving: np.ndarray  # [T, H, W] bool, pixels of moving puncta


def flat_truth(mic, photons: np.ndarray) -> np.ndarray:
    """``photons`` (the microscope's expected photons) through a flat camera: the median gain and offset of ``mic``'s
    camera, no noise, no fixed pattern, clipped at full well; what :func:`score_series` scores against."""
    cam = mic.camera
    electrons = np.minimum(cam.mean_electrons(photons, EXPOSURE_S), cam.config.full_well)
    return (electrons * float(np.median(cam.maps.gain)) + float(np.median(cam.maps.offset))).astype(np.float32)


def simulate_series(photons: float, optics: str, frames: int, size: int, seed: int,
                    psf_sigma: float | None = None) -> Series:
    """A time-lapse of one field from the project simulator, with the moving-object mask of every frame.

    ``psf_sigma`` (px) replaces the PSF of ``optics`` (e.g. 0.3 px: an undersampled image, sharper than any the
    backbones were trained on)."""
    from simulators.config import MicroscopeConfig, SampleConfig
    from simulators.microscope import SimulatedMicroscope

    sample = SampleConfig(slide_width=1024, slide_height=1024, peak_rate=photons / EXPOSURE_S,
                          background_rate=0.05 * photons / EXPOSURE_S,
                          psf_sigma=OPTICS[optics] if psf_sigma is None else psf_sigma, motion=10.0,
                          drift=(25.0, 15.0), bleaching_rate=0.5, density=1.5, seed=seed)
    mic = SimulatedMicroscope(MicroscopeConfig(camera="andor-zyla-4.2", sample=sample, roi_width=size,
                                               roi_height=size, exposure_ms=EXPOSURE_S * 1000, light_power=100.0,
                                               seed=seed + 1))
    noisy, truth, flat, moving = [], [], [], []
    for _ in range(frames):
        with_spots = mic.expected_photons()
        spots, mic.sample.puncta_yx = mic.sample.puncta_yx, np.zeros((0, 2))
        without = mic.expected_photons()
        mic.sample.puncta_yx = spots
        moving.append((with_spots - without) > 0.1 * photons)
        flat.append(flat_truth(mic, with_spots))
        frame = mic.snap()
        noisy.append(frame.image)
        truth.append(frame.truth)
    return Series(f"{photons:g} ph {optics}", photons, optics, np.stack(noisy), np.stack(truth).astype(np.float32),
                  np.stack(flat), np.stack(moving))


#: Drift (px per frame, y and x, whole pixels as a stage reports them) and bleaching of real-structure time-lapses.
REAL_DRIFT = (0.3, 0.5)
REAL_BLEACH = 0.01


def real_structures(folder: Path) -> list[Path]:
    """One high-SNR image per set of a pair folder (``<set>/<name>_clean.tif``): the first, by name, at least 288 px
    on each side (room for a 256² field and its drift)."""
    import tifffile

    picked = []
    for set_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        for path in sorted(set_dir.glob("*_clean.tif")):
            if min(tifffile.imread(path).shape[-2:]) >= 288:
                picked.append(path)
                break
    return picked


def real_structure_series(path: Path, photons: float, frames: int, size: int, seed: int) -> Series:
    """A time-lapse on a real structure: the high-SNR image ``path`` (scaled to 0..1 by its 0.1/99.9 percentiles)
    drifts (:data:`REAL_DRIFT`) and bleaches (:data:`REAL_BLEACH`), 12 Gaussian puncta (sigma 1.2 px, 0.8 of the
    peak) random-walk over it (1.4 px rms per axis per frame), and the Zyla camera model of the simulator images it
    at ``photons`` at the peak (background 5 %). The field is the ``size``² window with the most structure (largest
    standard deviation on a 32-px grid). The structure is real, its optics are the image's own; the motion, the
    bleaching and the camera are simulated: so the truth is known and the moving puncta can be scored apart."""
    from types import SimpleNamespace

    import tifffile

    from simulators.camera import SCMOSCamera
    from simulators.config import load_camera_preset

    img = tifffile.imread(path).astype(np.float64)
    img = img.reshape(-1, *img.shape[-2:])[0]
    lo, hi = np.percentile(img, (0.1, 99.9))
    img = np.clip((img - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    rng = np.random.default_rng(seed)
    reach = [round(d * (frames - 1)) for d in REAL_DRIFT]
    span = (size + reach[0], size + reach[1])
    if img.shape[0] < span[0] or img.shape[1] < span[1]:
        raise ValueError(f"{path}: {img.shape} is too small for a {size}² field drifting {reach} px")
    corners = [(y, x) for y in range(0, img.shape[0] - span[0] + 1, 32)
               for x in range(0, img.shape[1] - span[1] + 1, 32)]
    y0, x0 = max(corners, key=lambda c: float(img[c[0]:c[0] + span[0], c[1]:c[1] + span[1]].std()))
    field = img[y0:y0 + span[0], x0:x0 + span[1]]
    cam = SCMOSCamera(load_camera_preset("andor-zyla-4.2"), roi=(size, size))
    spots = rng.uniform(0, size, (12, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    noisy, truth, flat, moving = [], [], [], []
    for t in range(frames):
        dy, dx = (round(d * t) for d in REAL_DRIFT)
        base = field[dy:dy + size, dx:dx + size] * math.exp(-REAL_BLEACH * t)
        puncta = np.zeros((size, size))
        for y, x in spots:
            puncta += 0.8 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.2**2))
        expected_photons = photons * (0.05 + base + puncta)
        moving.append(puncta * photons > 0.1 * photons)
        flat.append(flat_truth(SimpleNamespace(camera=cam), expected_photons))
        noisy.append(cam.expose(expected_photons, EXPOSURE_S, rng))
        truth.append(cam.expected(expected_photons, EXPOSURE_S))
        spots = np.clip(spots + rng.normal(0.0, 1.4, spots.shape), 0, size - 1)
    name = f"{path.parent.name}/{path.name.removesuffix('_clean.tif')} {photons:g} ph"
    return Series(name, photons, "real", np.stack(noisy), np.stack(truth).astype(np.float32), np.stack(flat),
                  np.stack(moving))


def _stack_normalizer(stack: np.ndarray):
    """The stack's noise fit in stabilised units (scale 1, unbiased inverse): what BM3D/BM4D get."""
    from livedenoise.noise_model import fit_noise_model

    return fit_noise_model(list(stack)).normalizer.copy(scale=1.0, inversion="unbiased")


def _cached(kind: str, data: np.ndarray, compute, salt: str = "") -> tuple[np.ndarray, float, dict]:
    """A peer's output for ``data``, cached by its bytes and the code that makes it (as ``cached_bm3d`` does).

    ``compute`` returns ``(out, seconds)`` or ``(out, seconds, info)``; ``salt``: the peer's settings."""
    import inspect
    import json

    from bench_backbone import _peer_code_version

    CACHE.mkdir(parents=True, exist_ok=True)
    version = _peer_code_version() + "".join(inspect.getsource(f) for f in (_stack_normalizer, vst_bm4d)) + salt
    key = hashlib.sha256(data.tobytes() + str(data.shape).encode() + kind.encode() + version.encode()).hexdigest()[:24]
    path = CACHE / f"{kind}-{key}.npz"
    if path.exists():
        with np.load(path) as d:
            return d["out"], float(d["seconds"]), json.loads(str(d["info"])) if "info" in d else {}
    out, seconds, *rest = compute()
    info = rest[0] if rest else {}
    tmp = path.with_suffix(".partial.npz")
    np.savez(tmp, out=out, seconds=seconds, info=json.dumps(info))
    tmp.replace(path)
    return out, seconds, info


def vst_bm4d(stack: np.ndarray) -> tuple[np.ndarray, float]:
    """VST + BM4D (T as the third axis, sigma 1), seconds per frame."""
    def compute():
        norm = _stack_normalizer(stack)
        z = np.stack([norm.to_stabilised(f) for f in stack])
        centre = float(np.median(z))
        (den,), secs, _ = run_peer({"method": "bm4d", "sigma": 1.0}, [z - centre])
        return np.stack([norm.inverse(np.asarray(d, np.float64) + centre) for d in den]).astype(np.float32), \
            secs[0] / len(stack)
    out, seconds, _ = _cached("bm4d", np.ascontiguousarray(stack), compute)
    return out, seconds


def deepcad(stack: np.ndarray, budget_s: float) -> tuple[np.ndarray, float, dict]:
    """DeepCAD-RT trained on ``stack`` (raw ADU) for ``budget_s`` seconds, then applied to it; seconds per frame
    (training + prediction) and the worker's account of the training."""
    spec = {"method": "deepcad", "time_budget_s": float(budget_s), **DEEPCAD}

    def compute():
        (out,), secs, info = run_peer(spec, [stack.astype(np.float32)], timeout_s=budget_s + 1800)
        fit = info["fits"][0]
        info = {**{k: v for k, v in info.items() if k != "fits"}, **fit,
                "predict_ms_per_frame": 1000 * fit["predict_seconds"] / len(stack)}
        return np.asarray(out, np.float32), secs[0] / len(stack), info

    return _cached("deepcad", np.ascontiguousarray(stack), compute, salt=repr(sorted(spec.items())))


def vst_bm3d_frames(stack: np.ndarray) -> tuple[np.ndarray, float]:
    """VST + BM3D frame by frame, each with its own noise fit (``bench_backbone.cached_bm3d``)."""
    from bench_backbone import cached_bm3d

    outs, secs = cached_bm3d(list(stack))
    return np.stack(outs).astype(np.float32), finite_mean(secs)


def network(spec: str, stack: np.ndarray, mode: str, calibration=None,
            second_pass: bool = True, one_pass: bool = False) -> tuple[np.ndarray, float, dict]:
    """The product's Denoiser with the stack's noise fit: ``frames`` (2-D), ``live`` (push) or ``batch`` (stack).

    ``calibration``: a camera calibration (``livedenoise calibrate-camera``) the noise model is built from;
    ``second_pass``: the temporal backbone's second pass (``Denoiser(second_pass=...)``); ``one_pass``: live frames
    in one pass (``Denoiser.push(..., one_pass=True)``).
    """
    from livedenoise.evaluate import with_normalizer
    from livedenoise.inference import Denoiser
    from livedenoise.modelspec import load_model_spec
    from livedenoise.noise_model import normalizer_for

    ckpt = load_model_spec(spec)
    if calibration is not None:
        ckpt = ckpt.clone()
        ckpt.normalizer = normalizer_for(list(stack), like=ckpt.normalizer, calibration=calibration,
                                         saturation=ckpt.normalizer.saturation)
    t = ckpt.training or {}
    info = {"name": ckpt.name, "arch": ckpt.arch, "total_steps": t.get("total_steps", t.get("steps")),
            "best_val_loss": t.get("best_val_loss")}
    den = Denoiser(ckpt if calibration is not None else with_normalizer(ckpt, list(stack)), device="cpu",
                   second_pass=second_pass)
    info["second_pass"] = bool(second_pass and den.is_temporal and not one_pass)
    info["one_pass"] = bool(one_pass and den.is_temporal)
    den.warmup(stack.shape[-2:])
    t0 = time.perf_counter()
    if mode == "live":
        out = np.stack([den.push(f, one_pass=one_pass) for f in stack])
    else:
        out = den.denoise_stack(stack)
    return out.astype(np.float32), (time.perf_counter() - t0) / len(stack), info


def _masked_psnr(truth: np.ndarray, image: np.ndarray, mask: np.ndarray) -> float:
    from livedenoise.metrics import normalize_pair

    se, n, peak = 0.0, 0, 0.0
    for r, x, m in zip(truth, image, mask, strict=True):
        rn, xn = normalize_pair(r, x)
        peak = max(peak, float(rn.max() - rn.min()))
        se += float(np.sum((xn - rn)[m] ** 2))
        n += int(m.sum())
    return 10 * math.log10(peak**2 / (se / n)) if n and se > 0 else math.nan


def score_series(s: Series, out: np.ndarray) -> dict:
    """Against the sample (``flat``: what a denoiser that also removes the fixed pattern should give), and against
    the camera's expected image (``*_camera``); moving/rest split against the sample."""
    from livedenoise.metrics import score

    frames = [score(t, o) for t, o in zip(s.flat, out, strict=True)]
    camera = [score(t, o) for t, o in zip(s.truth, out, strict=True)]
    return {"psnr": finite_mean([f.psnr for f in frames]), "ssim": finite_mean([f.ssim for f in frames]),
            "psnr_camera": finite_mean([f.psnr for f in camera]), "ssim_camera": finite_mean([f.ssim for f in camera]),
            "psnr_moving": _masked_psnr(s.flat, out, s.moving), "psnr_rest": _masked_psnr(s.flat, out, ~s.moving),
            "moving_share": float(s.moving.mean())}


def summarise(results: list[dict]) -> dict:
    """Means over cases of every method: PSNR against the sample and the camera image, moving/rest, cost."""
    methods = list(results[0]["methods"])

    def mean(key: str, k: str) -> float:
        return finite_mean([e["methods"][k][key] for e in results if k in e["methods"]])

    return {"methods": methods, "means": {k: mean("psnr", k) for k in methods},
            "means_ssim": {k: mean("ssim", k) for k in methods},
            "means_camera": {k: mean("psnr_camera", k) for k in methods},
            "moving": {k: mean("psnr_moving", k) for k in methods}, "rest": {k: mean("psnr_rest", k) for k in methods},
            "seconds_per_frame": {k: finite_mean([e["seconds_per_frame"].get(k, math.nan) for e in results])
                                  for k in methods if k != "raw"}}


def deepcad_summary(results: list[dict]) -> dict:
    """DeepCAD-RT's settings (the same for every case) and its training over the cases."""
    fits = [e["deepcad"] for e in results if "deepcad" in e]
    per_case = ("iterations", "epochs_started", "train_seconds", "predict_seconds", "first_epoch_loss",
                "last_epoch_loss", "patches_per_epoch", "tiles", "predict_ms_per_frame")
    out = {k: v for k, v in fits[0].items() if k not in per_case}
    out.update(iterations=[f["iterations"] for f in fits], epochs_started=[f["epochs_started"] for f in fits],
               train_seconds=[f["train_seconds"] for f in fits], patches_per_epoch=fits[0]["patches_per_epoch"],
               predict_ms_per_frame=finite_mean([f["predict_ms_per_frame"] for f in fits]))
    return out


def render(payload: dict, heading: bool = True) -> str:
    """The results table (Markdown) from a run's JSON payload (also used by ``readme_tables.py``)."""
    methods, results = payload["methods"], payload["cases"]
    rows = [[e["case"]] + [f"{e['methods'][k]['psnr']:.2f} / {e['methods'][k]['ssim']:.3f}"
                           if k in e["methods"] else "-" for k in methods] for e in results]
    rows.append(["**mean PSNR / SSIM**"] + [f"**{payload['means'][k]:.2f}** / {payload['means_ssim'][k]:.3f}"
                                            for k in methods])
    rows.append(["mean PSNR against the camera's expected image"]
                + [f"{payload['means_camera'][k]:.2f}" for k in methods])
    rows.append(["mean PSNR on moving puncta"] + [f"{payload['moving'][k]:.2f}" for k in methods])
    rows.append(["mean PSNR everywhere else"] + [f"{payload['rest'][k]:.2f}" for k in methods])
    secs = payload["seconds_per_frame"]
    threads = payload.get("machine", {}).get("torch_threads", 1)
    rows.append([f"ms per frame ({threads} thread{'s' if threads != 1 else ''}; peers as first computed, cached)"]
                + ["-"]
                + [f"{secs[k] * 1000:.0f}" for k in methods[1:]])
    models = "; ".join(f"{k}: `{v['name']}` ({v['arch']}, {v['total_steps']} steps"
                       + (", second pass)" if v.get("second_pass") else ", one pass)" if v.get("one_pass") else ")")
                       for k, v in payload["models"].items())
    head = (f"Time-lapses ({payload['frames']} frames of {payload['size']}x{payload['size']} per case), PSNR dB / SSIM "
            "against the sample (the camera's fixed pattern removed); the last rows give the mean against the camera's "
            "expected image, split into moving puncta and everything else, and the cost per frame.\n\n"
            ) if heading else ""
    dc = payload.get("deepcad")
    if dc:
        models += (f"; DeepCAD-RT: `deepcad` {dc['deepcad']} trained from scratch on each stack (raw ADU) for "
                   f"{dc['time_budget_s']:g} s on {dc['torch_threads']} thread: {min(dc['iterations'])}-"
                   f"{max(dc['iterations'])} iterations of batch 1 ({min(dc['epochs_started'])}-"
                   f"{max(dc['epochs_started'])} epochs of {dc['patches_per_epoch']} patches of "
                   f"{dc['patch_t']}x{dc['patch_xy']}x{dc['patch_xy']}, lr {dc['lr']:g}); its ms per frame include "
                   f"the training, prediction alone {dc['predict_ms_per_frame']:.0f} ms per frame")
    return head + table(["case", *methods], rows) + f"\n\nModels: {models}.\n"


def main(argv: list[str] | None = None) -> int:
    import logging

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--temporal", default="temporal", help="temporal model: 'temporal' (shipped) or a checkpoint")
    ap.add_argument("--frame-model", default="fast", help="2-D model: 'fast', 'standard' or a checkpoint")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="one case (5 photons, confocal), 8 frames of 128^2")
    ap.add_argument("--no-bm4d", action="store_true", help="skip VST+BM4D (about 2 min per case on 1 core)")
    ap.add_argument("--no-deepcad", action="store_true", help="skip DeepCAD-RT (trained per case, --deepcad-budget)")
    ap.add_argument("--deepcad-budget", type=float, default=180.0,
                    help="DeepCAD-RT's training time per case in seconds (default 180, 1 torch thread)")
    ap.add_argument("--structures", type=Path, metavar="PAIRS",
                    help="instead of the simulator's slide, time-lapses on the high-SNR images of a pair folder (one "
                         "per set, e.g. ../shared/data/real_pairs_dev): real structure, simulated drift, bleaching, "
                         "moving puncta and camera, at 5 and 20 photons")
    ap.add_argument("--no-bm3d", action="store_true", help="skip VST+BM3D frame by frame")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    logging.getLogger("livedenoise").setLevel(logging.ERROR)
    frames, size = (8, 128) if args.quick else (args.frames, args.size)
    if args.structures is not None:
        cases = [(p, path) for path in real_structures(args.structures) for p in (5.0, 20.0)]
    else:
        cases = [(5.0, "confocal")] if args.quick else [(p, o) for p in PHOTONS for o in OPTICS]
    results, models = [], {}
    for i, (photons, optics) in enumerate(cases):
        s = (real_structure_series(optics, photons, frames, size, seed=525_000 + i) if isinstance(optics, Path)
             else simulate_series(photons, optics, frames, size, seed=424_000 + i))
        raw = score_series(s, s.noisy.astype(np.float32))
        entry = {"case": s.name, "photons": photons, "optics": s.optics, "frames": frames, "size": size,
                 "methods": {"raw": raw}, "seconds_per_frame": {}}
        runs = {  # called within this iteration only: the late binding of s is harmless
            "2-D " + args.frame_model: lambda: network(args.frame_model, s.noisy, "frames"),  # noqa: B023
            "temporal live": lambda: network(args.temporal, s.noisy, "live"),  # noqa: B023
            "temporal batch": lambda: network(args.temporal, s.noisy, "batch"),  # noqa: B023
            "fusion only live": lambda: network(args.temporal, s.noisy, "live", second_pass=False),  # noqa: B023
            "fusion only batch": lambda: network(args.temporal, s.noisy, "batch", second_pass=False),  # noqa: B023
            "one pass live": lambda: network(args.temporal, s.noisy, "live", one_pass=True),  # noqa: B023
        }
        for label, run in runs.items():
            out, sec, info = run()
            models[label] = info
            entry["methods"][label] = score_series(s, out)
            entry["seconds_per_frame"][label] = sec
        if not args.no_bm3d:
            out, sec = vst_bm3d_frames(s.noisy)
            entry["methods"]["VST+BM3D"] = score_series(s, out)
            entry["seconds_per_frame"]["VST+BM3D"] = sec
        if not args.no_bm4d:
            try:
                out, sec = vst_bm4d(s.noisy)
                entry["methods"]["VST+BM4D"] = score_series(s, out)
                entry["seconds_per_frame"]["VST+BM4D"] = sec
            except PeerError as exc:
                entry["bm4d_error"] = str(exc)
        if not args.no_deepcad:
            try:
                out, sec, dc = deepcad(s.noisy, args.deepcad_budget)
                entry["methods"]["DeepCAD-RT"] = score_series(s, out)
                entry["seconds_per_frame"]["DeepCAD-RT"] = sec
                entry["deepcad"] = dc
            except PeerError as exc:
                entry["deepcad_error"] = str(exc)
        results.append(entry)
        m = entry["methods"]
        print(f"[temporal] {s.name}: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in m.items()), flush=True)
    info = machine()
    command = "python benchmarks/bench_temporal.py" + "".join(
        f" {flag} {value}" for flag, value in (("--temporal", args.temporal), ("--frame-model", args.frame_model),
                                               ("--frames", args.frames), ("--size", args.size))
        if value is not None and str(value) != str(ap.get_default(flag.lstrip("-").replace("-", "_")))) + (
        " --quick" if args.quick else "") + (f" --structures {args.structures}" if args.structures else "") + (
        " --no-bm3d" if args.no_bm3d else "") + (" --no-bm4d" if args.no_bm4d else "") + (
        " --no-deepcad" if args.no_deepcad else f" --deepcad-budget {args.deepcad_budget:g}")
    payload = {"machine": info, "models": models, "cases": results, "frames": frames, "size": size, "quick": args.quick,
               "command": command}
    if any("deepcad" in e for e in results):
        payload["deepcad"] = deepcad_summary(results)
    payload.update(summarise(results))
    md = render(payload) + f"\n{machine_line(info)}\n"
    publish(args.output, "temporal", payload, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
