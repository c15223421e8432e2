"""The code passes the project's lint gate (ruff with the rules pyproject.toml selects): no undefined names, unused
imports or variables, or syntax errors anywhere in the checkout."""
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
