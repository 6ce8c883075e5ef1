"""``bench/groups.py --quick`` runs and prints its table (timings never asserted)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_groups_benchmark_quick_run_prints_ratios() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "groups.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for op in (
        "add-all commit",
        "join",
        "process remove",
        "process path-update",
        "app message receive",
    ):
        assert op in out
    assert "doubling exponent" in out and "20->40" in out
    assert "message sizes" in out
    if importlib.util.find_spec("mls_rs_uniffi") is not None:
        assert "x (" in out  # ratios against mls-rs
