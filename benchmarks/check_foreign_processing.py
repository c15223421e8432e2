"""Foreign Model Zoo packages with ONNX-only weights and whole-image statistics, run by livedenoise, against the
Model Zoo's own runner (``bioimageio.core.predict``) on the same packages.

    python benchmarks/check_foreign_processing.py --python /path/to/venv/bin/python

``--python``: an environment with ``bioimageio.core``, ``onnxruntime`` and ``torch`` installed (its
bioimageio.spec must validate with its pydantic: ``pip install bioimageio.core onnxruntime torch "pydantic<2.12"``
worked). Here, the shipped fast backbone is exported (``livedenoise export fast``) and re-packed as another tool
would ship it (no livedenoise checkpoint in the zip), in four variants:

- ``torchscript``: TorchScript weights only, the export's own processing (the reference for the others);
- ``onnx``: ONNX weights only, the export's own processing;
- ``statistics``: TorchScript weights, preprocessing ``zero_mean_unit_variance`` -> ``scale_linear`` (to about
  the camera's level, where the network works) and postprocessing ``scale_range`` (1st to 99.5th percentile of the
  input), each over the whole image (bioimageio.core takes every statistic of the input as given, before the first
  step);
- ``onnx-statistics``: ONNX weights, a percentile ``clip`` and the ``statistics`` steps before the network and the
  same ``scale_range`` after.

Each is run on a simulated 5-photon 512 x 384 frame by ``Denoiser("package.zip")`` with a pixel budget that would
cut the frame into tiles (statistics must still be the whole frame's), and by ``bioimageio.core.predict`` in
``--python``. Writes ``foreign-processing.json``: max and mean |difference| relative to the output's range, whole and
beyond 48 px of the edges (the two runners mirror frames differently), and the same network with its statistics
taken from the frame padded by 64 px (symmetric), which is what bioimageio.core 0.11 does before it takes them (a
probe found it; livedenoise takes them from the frame as given, as the description says).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, other_python_args, publish

#: Pixels from the frame's edges left out of the "interior" figures: the two runners pad frames differently.
BORDER = 48
#: How far bioimageio.core 0.11 pads a frame (symmetric) before it takes the frame's statistics.
PADDED = 64

PROBE = r"""
import json, sys
from importlib.metadata import version
import numpy as np
from bioimageio.core import predict
from bioimageio.spec import load_model_description

work = sys.argv[1]
image = np.load(f"{work}/image.npy")
out = {}
for name in sys.argv[2:]:
    descr = load_model_description(f"{work}/{name}.zip", perform_io_checks=False)
    sample = predict(model=descr, inputs={descr.inputs[0].id: image[None, None]})
    y = np.asarray(sample.members[descr.outputs[0].id].data).squeeze()
    np.save(f"{work}/{name}-theirs.npy", y.astype(np.float32))
    out[name] = list(y.shape)
print(json.dumps({"shapes": out, "versions": {p: version(p) for p in
                  ("bioimageio.core", "bioimageio.spec", "onnxruntime", "torch", "pydantic")}}))
"""

STATISTICS_PRE = [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}},
                  {"id": "scale_linear", "kwargs": {"gain": 20.0, "offset": 110.0}}]


def variants(rdf: dict) -> dict[str, dict]:
    """The four descriptions, edited from the export's."""
    scale_range_post = [{"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": 1.0,
                                                         "max_percentile": 99.5,
                                                         "reference_tensor": rdf["inputs"][0]["id"]}}]
    onnx = {"onnx": rdf["weights"]["onnx"]}
    torchscript = {"torchscript": rdf["weights"]["torchscript"]}
    percentile_clip = [{"id": "clip", "kwargs": {"axes": ["y", "x"], "min_percentile": 0.1, "max_percentile": 99.9}}]
    all_three = percentile_clip + STATISTICS_PRE
    edits = {
        "torchscript": {"weights": torchscript},
        "onnx": {"weights": onnx},
        "statistics": {"weights": torchscript, "pre": STATISTICS_PRE, "post": scale_range_post},
        "onnx-statistics": {"weights": onnx, "pre": all_three, "post": scale_range_post},
    }
    out = {}
    for name, edit in edits.items():
        new = yaml.safe_load(yaml.safe_dump(rdf))
        new["weights"] = edit["weights"]
        new["name"] = f"foreign {name}"
        if "pre" in edit:
            new["inputs"][0]["preprocessing"] = edit["pre"]
            new["outputs"][0]["postprocessing"] = edit["post"]
        out[name] = new
    return out


def repack(export: Path, folder: Path) -> list[str]:
    """The export as another tool would ship it (no livedenoise checkpoint), once per variant."""
    from livedenoise.bioimageio import CHECKPOINT_ATTACHMENT

    with zipfile.ZipFile(export) as z:
        files = {n: z.read(n) for n in z.namelist() if n not in (CHECKPOINT_ATTACHMENT, "rdf.yaml")}
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    rdf.pop("attachments", None)
    for name, descr in variants(rdf).items():
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as z:
            for n, data in files.items():
                z.writestr(n, data)
            z.writestr("rdf.yaml", yaml.safe_dump(descr))
    return list(variants(rdf))


WHAT = {"torchscript": ("TorchScript", "the export's fixed steps"), "onnx": ("ONNX", "the export's fixed steps"),
        "statistics": ("TorchScript", "zero_mean_unit_variance before, scale_range (the input's) after"),
        "onnx-statistics": ("ONNX", "percentile clip, zero_mean_unit_variance before, scale_range after")}


def foreign_table(result: dict) -> str:
    """The differences per package (the README's ``foreign-processing`` block and this run's Markdown)."""
    border, padded = result.get("border_px", BORDER), PADDED
    lines = ["| package | weights | processing | max \\|diff\\| / range | mean \\|diff\\| / range | "
             f"max \\|diff\\| / range beyond {border} px of the edges | the same, with statistics of the frame "
             f"padded by {padded} px as bioimageio.core pads it |", "|---|---|---|---|---|---|---|"]
    for name, row in result["variants"].items():
        weights, steps = WHAT.get(name, ("?", "?"))
        lines.append(f"| {name} | {weights} | {steps} | {row['max_diff_of_range']:.1e} | "
                     f"{row['mean_diff_of_range']:.1e} | {row['interior_max_diff_of_range']:.1e} | "
                     f"{row['interior_max_diff_of_range_with_padded_statistics']:.1e} |")
    versions = result["their_versions"]
    image = result["image"]
    return "\n".join(lines) + (f"\n\nlivedenoise against bioimageio.core {versions['bioimageio.core']} "
                               f"(onnxruntime {versions['onnxruntime']}, torch {versions['torch']}) on a "
                               f"{image[0]}x{image[1]} simulated frame.")


def main(argv: list[str] | None = None) -> int:
    args = other_python_args(argv, __doc__, "a Python with bioimageio.core and onnxruntime installed")
    import tifffile

    from livedenoise.cli import main as cli
    from livedenoise.evaluate import SimulatedTask
    from livedenoise.inference import Denoiser

    noisy, _ = SimulatedTask("filaments", 512).test_set(5.0, 0, 1)
    image = np.asarray(noisy[0], dtype=np.float32).reshape(-1, 512, 512)[0][:, :384].copy()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tifffile.imwrite(work / "sample.tif", np.round(image).astype(np.uint16))
        if cli(["export", "fast", "-o", str(work / "export.zip"), "--sample", str(work / "sample.tif")]) != 0:
            return 1
        names = repack(work / "export.zip", work)
        np.save(work / "image.npy", image)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        env.pop("PYTHONPATH", None)
        run = subprocess.run([args.python, "-c", PROBE, tmp, *names], capture_output=True, text=True, env=env,
                             timeout=1800)
        if run.returncode != 0:
            print(run.stderr[-3000:], file=sys.stderr)
            return 1
        theirs_info = json.loads(run.stdout.strip().splitlines()[-1])
        for name in names:
            theirs = np.load(work / f"{name}-theirs.npy")
            ours = Denoiser(str(work / f"{name}.zip"), device="cpu", pixel_budget=128 * 128).denoise(image)
            diff = np.abs(ours.astype(np.float64) - theirs)
            span = float(np.ptp(theirs))
            inner = diff[BORDER:-BORDER, BORDER:-BORDER]
            worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
            # bioimageio.core 0.11 takes its statistics of the frame padded by PADDED px (symmetric), found by a probe:
            # the same network with statistics frozen on that padded frame, to show that this is the difference
            import torch

            from livedenoise.bioimageio_import import load_foreign_bioimageio

            model = load_foreign_bioimageio(work / f"{name}.zip").model
            padded = torch.from_numpy(np.pad(image, PADDED, mode="symmetric"))[None, None]
            with torch.no_grad():
                like_theirs = model.frozen(padded)(torch.from_numpy(image)[None, None])[0, 0].double().numpy()
            like_diff = np.abs(like_theirs - theirs)[BORDER:-BORDER, BORDER:-BORDER]
            rows[name] = {"shape": list(ours.shape), "their_range": span, "max_diff": float(diff.max()),
                          "interior_max_diff_of_range_with_padded_statistics": float(like_diff.max()) / span,
                          "mean_diff": float(diff.mean()), "max_diff_of_range": float(diff.max()) / span,
                          "mean_diff_of_range": float(diff.mean()) / span,
                          "interior_max_diff_of_range": float(inner.max()) / span,
                          "interior_mean_diff_of_range": float(inner.mean()) / span,
                          "worst_pixel": [int(worst[0]), int(worst[1])]}
    result = {"variants": rows, "their_versions": theirs_info["versions"], "image": list(image.shape),
              "pixel_budget": 128 * 128, "border_px": BORDER, "machine": machine(),
              "command": "python benchmarks/check_foreign_processing.py --python PYTHON"}
    md = foreign_table(result) + "\n"
    publish(args.output, "foreign-processing", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
