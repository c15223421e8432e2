"""A CAREamics Noise2Void Model Zoo export run by livedenoise, against CAREamics' own prediction from that package.

    python benchmarks/check_careamics_import.py --python /path/to/venv/bin/python

``--python``: an environment with ``careamics`` (and so torch) installed and a pydantic its bioimageio.spec
validates with (CAREamics 0.3.5's export failed with pydantic 2.14 and worked with 2.11). There, with this
checkout on ``PYTHONPATH``, the probe trains a tiny Noise2Void model (one epoch on a 4 x 128² Poisson stack),
exports it with ``CAREamist.export_to_bmz``, denoises one 200 x 176 image with CAREamics' ``predict`` (the
package loaded with ``bmz_path=``) and with ``livedenoise.inference.Denoiser("package.zip")``
(:mod:`livedenoise.bioimageio_import`), and reports their differences, in the interior and near the borders.
Writes ``careamics-import.json``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, other_python_args, publish

PROBE = r"""
import json, sys
from pathlib import Path
import numpy as np
from importlib.metadata import version
from careamics import CAREamist
from careamics.config import create_n2v_config
from livedenoise.inference import Denoiser

work = Path(sys.argv[1])
rng = np.random.default_rng(0)
stack = (100 + 20 * rng.poisson(5, (4, 128, 128))).astype(np.float32)
cfg = create_n2v_config(experiment_name="n2v_tiny", data_type="array", axes="SYX", patch_size=[64, 64],
                        batch_size=4, num_epochs=1, n_val_patches=2)
model = CAREamist(cfg, work_dir=work / "train", enable_progress_bar=False)
model.train(train_data=stack)
package = work / "n2v_tiny.zip"
model.export_to_bmz(path_to_archive=package, friendly_model_name="n2v tiny", input_array=stack[:1, :64, :64],
                    authors=[{"name": "livedenoise benchmark"}], general_description="tiny N2V for an import check",
                    data_description="Poisson noise")
image = (100 + 20 * np.random.default_rng(5).poisson(5, (200, 176))).astype(np.float32)
loaded = CAREamist(bmz_path=package, work_dir=work / "predict", enable_progress_bar=False)
theirs = np.asarray(loaded.predict(image, data_type="array", axes="YX", tile_size=None)[0][0]).squeeze()
ours = Denoiser(str(package), device="cpu").denoise(image)
diff = np.abs(ours - theirs)
border = 24
print(json.dumps({
    "shape": list(image.shape), "their_range": float(np.ptp(theirs)), "their_mean": float(theirs.mean()),
    "our_mean": float(ours.mean()), "max_diff": float(diff.max()), "mean_diff": float(diff.mean()),
    "border_px": border, "interior_max_diff": float(diff[border:-border, border:-border].max()),
    "interior_mean_diff": float(diff[border:-border, border:-border].mean()),
    "versions": {p: version(p) for p in ("careamics", "torch", "pydantic", "bioimageio.spec")}}))
"""


def main(argv: list[str] | None = None) -> int:
    args = other_python_args(argv, __doc__, "a Python with careamics installed")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        run = subprocess.run([args.python, "-c", PROBE, tmp], capture_output=True, text=True, env=env, timeout=1800)
    if run.returncode != 0:
        print(run.stderr[-3000:], file=sys.stderr)
        return 1
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result["command"] = "python benchmarks/check_careamics_import.py --python PYTHON"
    result["machine"] = machine()
    md = (f"CAREamics {result['versions']['careamics']} N2V export, {result['shape'][0]}x{result['shape'][1]} image: "
          f"livedenoise vs CAREamics' predict, max |diff| {result['max_diff']:.4g} ADU, "
          f"{result['interior_max_diff']:.4g} ADU beyond {result['border_px']} px of the borders "
          f"(their output range {result['their_range']:.4g} ADU)\n")
    print(md, end="")
    publish(args.output, "careamics-import", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
