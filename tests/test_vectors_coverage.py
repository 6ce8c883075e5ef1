"""Every official vector file is checked by pytest, and the harness's
``vectors`` command itself works (issue: tests that can't lie)."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from harness.conformance import passive_client
from tests.conftest import ROOT, VECTORS_DIR, run_vector, vector_cases
from tests.required import missing


@pytest.mark.parametrize("case", vector_cases("passive-client-welcome.json"))
def test_passive_client_welcome_vectors(case: Any) -> None:
    run_vector(passive_client, case)


@pytest.mark.parametrize("case", vector_cases("passive-client-handling-commit.json"))
def test_passive_client_handling_commit_vectors(case: Any) -> None:
    run_vector(passive_client, case)


def _consumed() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        names.update(re.findall(r'vector_cases\(\s*"([^"]+\.json)"', path.read_text()))
    return names


def test_every_vector_file_is_consumed_by_a_test() -> None:
    files = sorted(p.name for p in VECTORS_DIR.glob("*.json")) if VECTORS_DIR.is_dir() else []
    if not files:
        missing(f"no MLS test vectors in {VECTORS_DIR} (set MLS_TEST_VECTORS)")
    unconsumed = sorted(set(files) - _consumed())
    assert not unconsumed, f"vector files no test reads: {unconsumed}"


def test_harness_vectors_command_reports_every_case(tmp_path: Any) -> None:
    src = VECTORS_DIR / "tree-math.json"
    if not src.is_file():
        missing(f"MLS test vectors not found at {VECTORS_DIR}")
    (tmp_path / "renamed.json").write_bytes(src.read_bytes())  # recognised by its fields
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "vectors", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"(\d+) passed, 0 failed, 0 skipped", last)
    assert m and int(m.group(1)) > 0, out.stdout


def test_harness_vectors_command_fails_on_a_wrong_vector(tmp_path: Any) -> None:
    src = VECTORS_DIR / "tree-math.json"
    if not src.is_file():
        missing(f"MLS test vectors not found at {VECTORS_DIR}")
    text = src.read_text()
    first = re.search(r'"root":\s*(\d+)', text)
    assert first is not None
    bad = text[: first.start(1)] + str(int(first.group(1)) + 1) + text[first.end(1) :]
    (tmp_path / "tree-math.json").write_text(bad)
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "vectors", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert re.search(r"[1-9]\d* failed", out.stdout), out.stdout


def test_scenario_reports_default_outside_the_working_tree() -> None:
    from harness.cli import build_parser, default_report_dir

    args = build_parser().parse_args(["scenario", "x.toml"])
    assert args.report_dir is None
    assert not default_report_dir().resolve().is_relative_to(ROOT)
