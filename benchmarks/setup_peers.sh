#!/usr/bin/env bash
# Build the SEPARATE environment that holds the peer tools of the quality benchmark
# (CAREamics Noise2Void, BM3D, BM4D and DeepCAD-RT). They are never dependencies of livedenoise.
#
#   bash benchmarks/setup_peers.sh            # creates benchmarks/.venv (gitignored)
#   PEERS_VENV=/somewhere bash benchmarks/setup_peers.sh
#
# How, and why (ARCHITECTURE.md "Verified facts"):
# * The peers venv is an *overlay* of the livedenoise environment: a .pth file adds that
#   environment's site-packages after the venv's own, so the peers see the same torch build
#   (no second multi-GB torch download) and the venv's own packages win where versions differ.
# * CAREamics 0.3.5 pins torchvision <= 0.26 (i.e. torch <= 2.11); a plain `pip install careamics`
#   next to torch 2.13 backtracks for many minutes. So careamics is installed with --no-deps, then
#   its other requirements under a constraint that pins torch to the installed version.
# * Its Noise2Void path never calls torchvision, so a stub `torchvision` package that raises on
#   use is enough.
# * PyPI `bm3d` (BM3D with correlated-noise support) for the VST+BM3D baseline, `bm4d` for VST+BM4D on time-lapses.
# * DeepCAD-RT (PyPI `deepcad`, bench_temporal.py): 1.2.0, because the 1.3.0 release is empty (its sdist holds
#   setup.py and README only; `import deepcad` fails after installing it). Installed like careamics: --no-deps, then
#   its requirements under the torch constraint (none of them needs torch; opencv-python and csbdeep are only
#   imported). It pins gdown==4.2.0 (deepcad.utils imports it for its demo download), which imports pkg_resources,
#   gone from setuptools >= 81: hence setuptools<81 in this venv. The package's training loop calls .cuda()
#   unconditionally, so peers_worker.py trains its network with a CPU loop of its own (see there).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BASE_PY="${LIVEDENOISE_PYTHON:-$(command -v python3)}"
if [ -x "$HERE/../.venv/bin/python" ] && [ -z "${LIVEDENOISE_PYTHON:-}" ]; then BASE_PY="$HERE/../.venv/bin/python"; fi
if [ -x /work/venv/bin/python ] && [ -z "${LIVEDENOISE_PYTHON:-}" ]; then BASE_PY=/work/venv/bin/python; fi
VENV="${PEERS_VENV:-$HERE/.venv}"
CAREAMICS_VERSION="${CAREAMICS_VERSION:-0.3.5}"
DEEPCAD_VERSION="${DEEPCAD_VERSION:-1.2.0}"

"$BASE_PY" -c "import torch, livedenoise" 2>/dev/null || {
  echo "error: $BASE_PY cannot import torch and livedenoise; set LIVEDENOISE_PYTHON to the livedenoise environment's python" >&2
  exit 2
}
BASE_SITE="$("$BASE_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
TORCH_VERSION="$("$BASE_PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
BASE_EXE="$("$BASE_PY" -c 'import sys; print(sys._base_executable)')"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[peers] creating $VENV (overlay of $BASE_SITE)" >&2
  "$BASE_EXE" -m venv "$VENV"
fi
PY="$VENV/bin/python"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# addsitedir (not a plain path line) so that the base environment's own .pth files (the editable
# livedenoise install) are processed too.
echo "import site; site.addsitedir('$BASE_SITE')" > "$SITE/zz_livedenoise_base.pth"

CONSTRAINTS="$VENV/constraints.txt"
printf 'torch==%s\n' "$TORCH_VERSION" > "$CONSTRAINTS"
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
echo "[peers] installing careamics==$CAREAMICS_VERSION and deepcad==$DEEPCAD_VERSION (--no-deps), bm3d, bm4d" >&2
"$PY" -m pip install -q --no-deps "careamics==$CAREAMICS_VERSION" "deepcad==$DEEPCAD_VERSION"
REQFILE="$VENV/careamics-requirements.txt"
DEEPCAD_REQFILE="$VENV/deepcad-requirements.txt"
for pair in "careamics:$REQFILE" "deepcad:$DEEPCAD_REQFILE"; do
"$PY" - "${pair#*:}" "${pair%%:*}" <<'PYEOF'
import importlib.metadata as md
import sys

from packaging.requirements import Requirement

out = []
for r in md.requires(sys.argv[2]) or []:
    req = Requirement(r)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # optional extras (examples, dev, tensorboard, ...)
    if req.name.lower() in {"torch", "torchvision"}:
        continue  # torch comes from the base environment; torchvision is stubbed below
    req.marker = None
    out.append(str(req))
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PYEOF
done
echo "[peers] careamics requirements: $(tr '\n' ' ' < "$REQFILE")" >&2
echo "[peers] deepcad requirements: $(tr '\n' ' ' < "$DEEPCAD_REQFILE")" >&2
"$PY" -m pip install -q -c "$CONSTRAINTS" -r "$REQFILE" -r "$DEEPCAD_REQFILE" bm3d bm4d "setuptools<81"

STUB="$SITE/torchvision"
if [ ! -d "$STUB" ] || [ -f "$STUB/LIVEDENOISE_STUB" ]; then
  # Import-time names resolve to placeholders (torchmetrics and careamics import a few at module
  # level); calling any of them raises, so a code path that really needs torchvision fails loudly.
  mkdir -p "$STUB/transforms" "$STUB/models"
  touch "$STUB/LIVEDENOISE_STUB"
  STUB_BODY='"""Stub written by livedenoise benchmarks/setup_peers.sh: the real torchvision wheel would force an older
torch, and CAREamics Noise2Void never uses it. Names exist so imports succeed; using one raises."""


class _Unavailable:
    def __init__(self, name):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise ImportError(f"torchvision is a stub in the peers benchmark environment ({self._name} was called)")

    def __getattr__(self, attr):
        return _Unavailable(f"{self._name}.{attr}")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Unavailable(f"{__name__}.{name}")
'
  printf '%s\n__version__ = "0.0.0+stub"\nfrom . import models, transforms  # noqa: E402,F401\n' "$STUB_BODY" > "$STUB/__init__.py"
  printf '%s\nfrom . import functional  # noqa: E402,F401\n' "$STUB_BODY" > "$STUB/transforms/__init__.py"
  printf '%s\n' "$STUB_BODY" > "$STUB/transforms/functional.py"
  printf '%s\n' "$STUB_BODY" > "$STUB/models/__init__.py"
fi
"$PY" -W ignore -c "import careamics, bm3d, bm4d, deepcad.network; print('[peers] ok: careamics', careamics.__version__)"
echo "$PY"
