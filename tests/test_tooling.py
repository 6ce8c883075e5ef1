"""Strict tooling as part of the suite: ruff on everything, mypy --strict on
protocol/, relay/, client/ and harness/ (STYLE.md, convention 11).  The tools come
with the ``test`` extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_clean() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_on_all_packages() -> None:
    # strict = true in pyproject.toml; the packages are named here as well so that a
    # narrower ``files`` there cannot quietly drop one
    result = _run("mypy", "--cache-dir=/dev/null", "protocol", "relay", "client", "harness")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout, result.stdout
