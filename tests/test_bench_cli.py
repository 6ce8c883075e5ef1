"""``bench/cli.py --quick`` runs and prints its table (timings never asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(400)


def test_cli_benchmark_quick_run_prints_its_table() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cli.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=360,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "store KDF (Argon2id, default cost) alone" in out
    for row in ("chats", "send Bob TEXT", "send nobody TEXT (bad input)", "sync --wait 0"):
        assert row in out
    # exit statuses (last column of each half): relays up, a send is stored
    # (0); relays down, it is queued (3); bad input fails (1) either way
    assert re.search(r"^send Bob TEXT .* 0   .* 3$", out, re.M), out
    assert re.search(r"^send nobody TEXT \(bad input\) .* 1   .* 1$", out, re.M), out
