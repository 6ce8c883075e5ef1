"""Shared test fixtures: locating the official MLS test vectors; two relay
processes (``relays``) and three engines on them (``trio``), which a test
module may replace with its own.

``MLS_TEST_VECTORS`` names the vectors directory (default ``../shared/mls-vectors``
next to the checkout).  Outside CI, a missing directory skips the vector tests
with the reason; under ``CI=true`` it is a hard failure, so CI can never pass
without running them.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from client.engine import Engine
from harness.conformance.registry import case_id, detect_kind
from tests.client_support import RelayProcess, make_engine

# the coverage floors of a whole-suite run (tests/coverage_floor.py): hooks, so imported here
from tests.coverage_floor import pytest_runtestloop, pytest_terminal_summary  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent

#: No test leaves a key agent behind (client/agent.py): CLI processes, which
#: inherit this, never start one; tests/test_cli_agent.py turns it on per command.
os.environ["SAMIZDAT_AGENT"] = "off"
VECTORS_DIR = Path(os.environ.get("MLS_TEST_VECTORS", ROOT.parent / "shared" / "mls-vectors"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def vector_cases(filename: str) -> list[Any]:
    """pytest params for every case of one vector file, with readable ids.

    Called at collection time.  A missing file yields one param that skips (or,
    in CI, fails) with the reason, so the absence is always visible.
    """
    path = VECTORS_DIR / filename
    if not path.is_file():
        reason = f"MLS test vectors not found at {path} (set MLS_TEST_VECTORS)"
        marks = [pytest.mark.skip(reason=reason)] if not IN_CI else []
        return [pytest.param(_Missing(reason), id="vectors-missing", marks=marks)]
    cases = json.loads(path.read_text())
    kind = detect_kind(cases) or filename
    return [pytest.param(case, id=case_id(kind, i, case)) for i, case in enumerate(cases)]


class _Missing:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def run_vector(verifier: Any, case: Any) -> None:
    """Run one vector case; an unsupported suite is a named skip."""
    from protocol.errors import UnsupportedError

    if isinstance(case, _Missing):
        pytest.fail(case.reason)
    try:
        verifier.run(case)
    except UnsupportedError as exc:
        pytest.skip(f"unsupported: {exc}")


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    procs = [RelayProcess(tmp_path / f"relay{i}").start() for i in range(2)]
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
async def trio(tmp_path: Path, relays: list[RelayProcess]) -> AsyncIterator[list[Engine]]:
    urls = [r.url for r in relays]
    engines = [make_engine(tmp_path / n, n.capitalize(), urls) for n in ("alice", "bob", "carol")]
    for e in engines:
        await e.connect()
    yield engines
    for e in engines:
        await e.close()
