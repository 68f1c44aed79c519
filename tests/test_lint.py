"""The lint step: `ruff check` and `mypy` on pss/ and pss_app/, with the settings in pyproject.toml.

Run alone with `pytest -m lint`. Both tools come with the `[test]` extra, so a missing tool fails here
rather than skipping. mypy keeps its cache in the git-ignored `.mypy_cache/` at the repository root.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["pss", "pss_app"]

pytestmark = pytest.mark.lint


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


def test_ruff_reports_nothing():
    result = _run("ruff", "check", "--no-fix", *TARGETS)
    if result.returncode != 0:
        pytest.fail(f"ruff check {' '.join(TARGETS)}:\n{result.stdout}{result.stderr}", pytrace=False)


def test_mypy_reports_nothing():
    result = _run("mypy", *TARGETS)
    if result.returncode != 0:
        pytest.fail(f"mypy {' '.join(TARGETS)}:\n{result.stdout}{result.stderr}", pytrace=False)
