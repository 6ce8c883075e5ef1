"""relay-conformance passes on samizdat-relay (SQLite in process, SQLite as a
process, NATS JetStream) and fails, on the right checks, on a broken relay."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import ModuleType

import pytest

import relay.app
import relay.connection
import relay.subscriptions
from harness.relay_conformance import Options, format_outcomes, run_suite
from harness.relay_process import ROOT
from harness.scenario.relays import LocalRelay, ProcessRelay
from tests import nats_fixtures
from tests.nats_fixtures import NatsServer, wait_jetstream

pytestmark = pytest.mark.timeout(120)
nats_server = nats_fixtures.nats_server
QUOTA = 12


def statuses(outcomes: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {o.name: o.status for o in outcomes}


async def test_passes_on_sqlite_relay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay.app, "EXPIRY_INTERVAL", 0.5)  # so the TTL check can run
    # and times stored to the second, not the default hour (SPEC §7.12)
    r = await LocalRelay(
        tmp_path / "r", prefix="k3y-9f", limits={"mailbox_max_messages": QUOTA, "time_bucket": 1}
    ).start()
    try:
        out = await run_suite(Options(r.url, mailbox_max_messages=QUOTA, ttl_wait=3.0))
    finally:
        await r.stop()
    text = format_outcomes(out)
    assert all(o.status == "passed" for o in out), text
    assert text.endswith(f"{len(out)} passed, 0 failed, 0 skipped")


async def test_passes_on_relay_process_via_cli(tmp_path: Path) -> None:
    r = await ProcessRelay(tmp_path / "r").start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "harness.cli",
            "relay-conformance",
            r.url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        stdout, _ = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        await r.stop()
    text = stdout.decode()
    assert proc.returncode == 0, text
    assert "PASS padding" in text and "SKIP quota" in text
    assert text.strip().splitlines()[-1].endswith("0 failed, 2 skipped")


async def test_passes_on_nats_relay(tmp_path: Path, nats_server: NatsServer) -> None:
    await wait_jetstream(nats_server.url)
    r = await LocalRelay(
        tmp_path / "r",
        backend="nats",
        nats_url=nats_server.url,
        limits={"mailbox_max_messages": QUOTA},
    ).start()
    try:
        out = await run_suite(Options(r.url, mailbox_max_messages=QUOTA))
    finally:
        await r.stop()
    failed = {o.name: o.detail for o in out if o.status == "failed"}
    assert not failed, format_outcomes(out)


async def test_broken_relay_fails_what_it_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a relay that accepts any envelope size and never checks a signature
    monkeypatch.setattr(relay.connection, "is_envelope_size", lambda n: n > 0)
    monkeypatch.setattr(relay.connection, "verify", lambda *a: True)
    r = await LocalRelay(tmp_path / "r").start()
    try:
        out = await run_suite(Options(r.url))
    finally:
        await r.stop()
    got = statuses(out)
    broken = {"padding", "auth", "post-signed", "rotate-write", "delete-mailbox"}
    assert {n for n, s in got.items() if s == "failed"} == broken, format_outcomes(out)
    by_name = {o.name: o for o in out}
    assert "want 106" in by_name["padding"].detail
    assert "want 104" in by_name["auth"].detail
    assert format_outcomes(out).splitlines()[-1].startswith(f"{len(out) - 7} passed, 5 failed")


async def test_probe_resistance_catches_a_talkative_relay(tmp_path: Path) -> None:
    r = await LocalRelay(tmp_path / "r", server_header="Python/3.11 aiohttp").start()
    try:
        out = await run_suite(Options(r.url), only=["probe-resistance"])
    finally:
        await r.stop()
    assert out[0].status == "failed" and "names" in out[0].detail


@pytest.mark.parametrize(
    ("module", "name", "value", "detail"),
    [
        # a relay that ignores the reader's credit (sends all it has)
        (relay.connection, "INITIAL_CREDIT", (1 << 32) - 1, "initial credit"),
        # a relay that drains one mailbox's backlog before serving the next
        (relay.subscriptions, "QUANTUM", 1 << 30, "round-robin"),
    ],
)
async def test_flow_control_catches_a_relay_without_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: ModuleType,
    name: str,
    value: int,
    detail: str,
) -> None:
    monkeypatch.setattr(module, name, value)
    r = await LocalRelay(tmp_path / "r").start()
    try:
        out = await run_suite(Options(r.url), only=["flow-control"])
    finally:
        await r.stop()
    assert out[0].status == "failed" and detail in out[0].detail, format_outcomes(out)
