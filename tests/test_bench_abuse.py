"""Smoke test of ``bench/abuse.py --quick`` (GitHub issue 11, "Measure it").

It runs the benchmark as a process, with real relay and attacker processes,
and checks that it prints the table, that every scenario's abuse actually
ran and that nothing it started is left running.  It asserts no timing: the
figures of a quick run on a shared machine mean little.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.relay_process import ROOT
from tests.client_support import env_without_proxy
from tests.required import missing

pytestmark = [
    pytest.mark.timeout(300),
]

if not Path("/proc/self/fd").is_dir():
    missing("needs /proc/PID/fd to count the relay's descriptors", module=True)

SCENARIOS = (
    "baseline",
    "a-backlog",
    "b-invite-flood",
    "c-slow-sockets",
    "d-random-bytes",
    "baseline-end",
)


def test_quick_run_prints_the_table(tmp_path: Path) -> None:
    out_json = tmp_path / "abuse.json"
    env = env_without_proxy()
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "abuse.py"), "--quick", "--json", str(out_json)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith("scenario ")]
    assert header, proc.stdout
    for column in ("p50 ms", "p99 ms", "p99/base", "fds before/peak/after", "RSS MB"):
        assert column in lines[header[-1]]
    table = lines[header[-1] + 1 : header[-1] + 1 + len(SCENARIOS)]
    assert [line.split()[0] for line in table] == list(SCENARIOS)
    for line in table:
        fields = line.split()
        assert int(fields[1]) > 0  # texts were sent in every scenario
        fds = [int(x) for x in fields[7].split("/")]
        assert len(fds) == 3 and all(x > 0 for x in fds)

    data = json.loads(out_json.read_text())
    results = {r["name"]: r for r in data["results"]}
    assert results["a-backlog"]["notes"]["backlog"] == "1 MB article"
    flood = results["b-invite-flood"]["notes"]["attacker"]["counts"]
    assert flood.get("posted", 0) > 0
    held = results["c-slow-sockets"]["notes"]["attacker"]["peak"]
    assert held["idle"] > 0 and held["uploads"] > 0
    noise = results["d-random-bytes"]["notes"]["attacker"]["counts"]
    assert sum(noise.values()) > 0
    # everything the benchmark started is gone: the relay and the attackers
    for pid in data["pids"]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert b"relay.cli" not in cmdline and b"abuse_attack" not in cmdline, pid
