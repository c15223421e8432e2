"""Run the BioImage Model Zoo's own model test (``bioimageio.core.test_model``) on a livedenoise export.

    python benchmarks/check_bioimageio_core.py --python /path/to/venv/bin/python

Exports the fast backbone with its noise model fitted to a simulated 256² frame (5 photons, sCMOS
camera model), then runs ``bioimageio.core.test_model`` on the package in ``--python``: an
environment with ``bioimageio.core``, ``torch`` and ``onnxruntime`` installed. It is a separate
environment because the current bioimageio.core release installs a bioimageio.spec that failed its
own validation with the pydantic livedenoise's environment holds (``pip install bioimageio.core
onnxruntime torch==<this torch> "pydantic<2.12"`` worked). Writes ``bioimageio-core.json``: every check
with its status, the versions in that environment, and the ONNX and TorchScript errors the export
measured against PyTorch.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, other_python_args, publish, table

PROBE = r"""
import json, sys
from importlib.metadata import version
from bioimageio.core import test_model
summary = test_model(sys.argv[1])
details = [{"name": d.name, "status": d.status, "errors": [e.msg for e in d.errors][:3]} for d in summary.details]
versions = {p: version(p) for p in ("bioimageio.core", "bioimageio.spec", "torch", "onnxruntime", "pydantic")}
print(json.dumps({"status": summary.status, "details": details, "versions": versions}))
"""


def main(argv: list[str] | None = None) -> int:
    from livedenoise.bioimageio import export_bioimageio
    from livedenoise.evaluate import SimulatedTask

    args = other_python_args(argv, __doc__, "python of an environment with bioimageio.core installed")
    noisy, _ = SimulatedTask("filaments", 256).test_set(5.0, 0, 1)
    with tempfile.TemporaryDirectory() as tmp:
        package = export_bioimageio("fast", Path(tmp) / "fast.zip", sample=noisy[0], authors=["livedenoise benchmark"])
        with zipfile.ZipFile(package) as z:
            readme = z.read("README.md").decode()
        run = subprocess.run([args.python, "-c", PROBE, str(package)], capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        print(run.stderr[-3000:], file=sys.stderr)
        return 1
    result = json.loads(run.stdout.strip().splitlines()[-1])
    onnx_error = re.search(r"within ([0-9.e+-]+) of the output's range", readme)
    payload = {"machine": machine(), "package": "fast backbone, noise model fitted to a simulated 256² frame",
               "onnx_error_of_range": float(onnx_error.group(1)) if onnx_error else None, **result,
               "command": "python benchmarks/check_bioimageio_core.py --python PYTHON"}
    passed = sum(d["status"] == "passed" for d in result["details"])
    md = "\n".join([f"# bioimageio.core test_model: {result['status']} ({passed}/{len(result['details'])} checks)", "",
                    "versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()), "",
                    table(["check", "status"], [[d["name"], d["status"]] for d in result["details"]])])
    publish(args.output, "bioimageio-core", payload, md)
    return 0 if result["status"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
