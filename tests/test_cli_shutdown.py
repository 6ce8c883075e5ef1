"""Every online ``samizdat`` command exits promptly after its work is done.

GitHub issue 11, item 6: ``samizdat save`` printed "saved" and then hung
(3 of 3 tries): ``RelayClient.close`` waited on a cancelled supervisor while
its read task stayed pending.  Here ``save``, ``send`` and ``sync`` run as
real processes against a real relay, ten times each, each under a timeout;
and ``close`` is checked directly with the cancellation lost the way
Python 3.11's ``asyncio.wait_for`` can lose it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.relay_client import RelayClient
from tests.client_support import (
    ROOT,
    RelayProcess,
    cli_identity,
    env_without_proxy,
    eventually,
)

pytestmark = pytest.mark.timeout(600)

ROUNDS = 10
# A command that has finished its work must be gone well within this (the
# work itself takes a second or two; the hang was indefinite).
EXIT_TIMEOUT = 45.0
PASSPHRASE = "correct horse"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path_factory.mktemp("shutdown-relay") / "data").start()
    yield proc
    proc.stop()


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = env_without_proxy()
    env["SAMIZDAT_PASSPHRASE"] = PASSPHRASE
    cmd = [sys.executable, "-m", "client.cli", "--home", str(home), *args]
    try:
        result = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=EXIT_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(f"`samizdat {args[0]}` did not exit within {EXIT_TIMEOUT:.0f} s: {out!r}")
    assert result.returncode == 0, result.stderr + result.stdout
    return result


def test_save_send_sync_exit_promptly_every_time(tmp_path: Path, relay: RelayProcess) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    # made as `init` would (tests/test_cli.py runs init), cheap to unlock 37 times
    cli_identity(alice, "Alice", [relay.url], PASSPHRASE.encode())
    cli_identity(bob, "Bob", [relay.url], PASSPHRASE.encode())
    run(bob, "accept", run(alice, "invite").stdout.split()[0])
    run(alice, "sync", "--wait", "2")
    run(bob, "sync", "--wait", "1")
    doc = tmp_path / "doc.bin"
    doc.write_bytes(bytes(range(256)) * 2000)  # 512 kB: three chunks
    run(bob, "send", "Alice", "--file", str(doc))
    run(alice, "sync", "--wait", "2")
    history = json.loads(run(alice, "history", "Bob", "--json").stdout)["messages"]
    file_id = next(m["id"] for m in history if m["kind"] == "file")

    slowest = 0.0
    for i in range(ROUNDS):
        dest = tmp_path / f"saved-{i}.bin"
        start = time.monotonic()
        saved = run(alice, "save", "Bob", file_id[:16], "-o", str(dest))
        slowest = max(slowest, time.monotonic() - start)
        assert saved.stdout.startswith("saved") and dest.read_bytes() == doc.read_bytes()
        start = time.monotonic()
        run(bob, "send", "Alice", f"message {i}")
        slowest = max(slowest, time.monotonic() - start)
        start = time.monotonic()
        run(alice, "sync", "--wait", "0.2")
        slowest = max(slowest, time.monotonic() - start)
    texts = [
        m["text"] for m in json.loads(run(alice, "history", "Bob", "--json").stdout)["messages"]
    ]
    assert [t for t in texts if t.startswith("message ")] == [f"message {i}" for i in range(ROUNDS)]
    print(f"slowest command: {slowest:.1f} s")


async def test_close_is_bounded_when_a_cancellation_is_lost(relay: RelayProcess) -> None:
    async def on_deliver(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
        return None

    client = RelayClient(relay.url, on_deliver)
    client.start()
    await eventually(lambda: client.state == "connected", what="connected")
    supervisor = client._task
    assert supervisor is not None

    async def loses_its_cancellation() -> None:
        # What the supervisor did when wait_for swallowed the CancelledError:
        # carry on, then wait on a read of a socket nobody closes.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(supervisor)
        await supervisor

    client._task = asyncio.create_task(loses_its_cancellation())
    await asyncio.sleep(0.1)
    closing = asyncio.create_task(client.close())
    done, _ = await asyncio.wait({closing}, timeout=15)
    if not done:  # the old close(): waits for ever; let it finish, then fail
        supervisor.cancel()
        await closing
        pytest.fail("RelayClient.close() did not return within 15 s")
    assert supervisor.done() and client._task.done()
