"""The code passes the project's gates: ruff with the rules pyproject.toml selects (style, imports, bugbear, pyflakes:
no undefined names, unused imports or syntax errors anywhere in the checkout), and mypy with the pydantic plugin."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing_in_the_checkout():
    pytest.importorskip("ruff", reason="ruff is in the [test] extra: pip install -e '.[test]'")
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_the_lint_gate_can_fail(tmp_path):
    """The same command on a file with an undefined name and an unused import reports both (the gate is live)."""
    pytest.importorskip("ruff")
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    return undefined_name\n")
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(REPO / "pyproject.toml"),
                          str(bad)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "F401" in res.stdout and "F821" in res.stdout


def test_mypy_finds_nothing_in_the_package():
    """The type check pyproject.toml configures (livedenoise and simulators, with the pydantic plugin) is clean."""
    pytest.importorskip("mypy", reason="mypy is in the [test] extra: pip install -e '.[test]'")
    res = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0 and "Success: no issues found" in res.stdout, res.stdout[-4000:] + res.stderr[-2000:]


def test_the_type_gate_can_fail(tmp_path):
    """The same configuration reports a wrong argument type and a pydantic model built with an unknown field."""
    pytest.importorskip("mypy")
    bad = tmp_path / "bad.py"
    bad.write_text("from pydantic import BaseModel\n\n\nclass M(BaseModel):\n    x: int\n\n\n"
                   "def f(a: int) -> int:\n    return a\n\n\nf('text')\nM(x=1, y=2)\n")
    res = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--config-file",
                          str(REPO / "pyproject.toml"), str(bad)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "[arg-type]" in res.stdout and "[call-arg]" in res.stdout, res.stdout
