"""Isolated relay sessions (client/sessions.py, SPEC.md §7.1 "Connection roles"):
bounded connections for many mailboxes, jitter from an injected rng, and
one SOCKS5 identity per connection."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from client.relay_client import RelayClient, isolated_proxy_url
from client.sessions import RelaySessions, SessionPolicy
from harness.relay_process import RelayProcess
from protocol.padding import pad
from tests.client_support import ROOT, env_without_proxy, eventually
from tests.test_session_isolation import what_the_relay_saw

pytestmark = pytest.mark.timeout(180)

FAST = replace(
    SessionPolicy(),
    max_readers=3,
    max_polls=2,
    max_posters=2,
    poll_interval=(0.3, 0.6),
    first_poll=(0.05, 0.3),
    poll_quiet=0.5,
    open_delay=(0.0, 0.05),
    post_linger=(0.1, 0.3),
)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path / "relay", settings={"debug_log": True}).start()
    yield proc
    proc.stop()


async def _noop(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
    return None


def test_isolated_proxy_urls_differ_and_keep_an_explicit_login() -> None:
    urls = {isolated_proxy_url("socks5://127.0.0.1:9050") for _ in range(50)}
    assert len(urls) == 50 and all(
        u.startswith("socks5://") and "@127.0.0.1:9050" in u for u in urls
    )
    assert isolated_proxy_url("socks5h://me:secret@tor:9050") == "socks5://me:secret@tor:9050"


async def test_jitter_comes_from_the_injected_rng_and_clock() -> None:
    """Two pools with the same seed and clock schedule the same polls."""
    now = [1000.0]
    dues = []
    for _ in range(2):
        pool = RelaySessions(
            "http://127.0.0.1:1",
            _noop,
            policy=replace(FAST, max_readers=0),
            rng=random.Random(7),
            clock=lambda: now[0],
        )
        for i in range(5):
            await pool.subscribe(bytes([i]) * 32, os.urandom(32), 0)
        dues.append([sub.due for sub in pool._subs.values()])
        await pool.close()
    assert dues[0] == dues[1]
    low, high = FAST.first_poll
    assert all(now[0] + low <= d <= now[0] + high for d in dues[0])
    assert len(set(dues[0])) == 5  # each mailbox its own time


async def test_many_mailboxes_are_read_over_bounded_isolated_connections(
    relay: RelayProcess,
) -> None:
    """20 mailboxes, at most 3 held readers, 2 polls and 2 posters at once:
    everything posted is delivered (to hot and cold mailboxes alike), never
    more connections than the bounds, and on the relay's side no connection
    reads two mailboxes and no post comes on a reading connection."""
    got: dict[bytes, list[int]] = {}

    async def deliver(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
        got.setdefault(mailbox_id, []).append(seq)

    pool = RelaySessions(relay.url, deliver, policy=FAST, rng=random.Random(1))
    boxes = [(os.urandom(32), os.urandom(32), os.urandom(32)) for _ in range(20)]
    peak = 0
    try:
        for m, r, w in boxes:
            await pool.create_mailbox(m, r, w, shared=True)
            await pool.subscribe(m, r, 0, write_seed=w, shared=True)
        for round_ in range(2):
            for m, _, w in boxes:
                await pool.post(m, w, os.urandom(16), pad(b"x"))
                peak = max(peak, pool.open_connections())

            def all_in(n: int = round_ + 1) -> bool:
                nonlocal peak
                peak = max(peak, pool.open_connections())
                return all(len(got.get(m, [])) >= n for m, _, _ in boxes)

            await eventually(all_in, 60, f"round {round_ + 1} delivered")
        assert peak <= FAST.max_readers + FAST.max_polls + FAST.max_posters
        assert all(len(got[m]) == 2 for m, _, _ in boxes), "a message came twice"
    finally:
        await pool.close()
    reads, posts = what_the_relay_saw(relay)
    assert len(reads) > FAST.max_readers, "cold mailboxes were not polled on their own"
    assert all(len(b) == 1 for b in reads.values()), "a connection read two mailboxes"
    assert posts and not [c for c, _ in posts if c in reads], "a post came on a reader"


async def test_a_cold_mailboxs_ack_waits_for_its_poll(relay: RelayProcess) -> None:
    """An inbox (a queue) read by polls: the ack goes over its next poll, and
    what was acked is not delivered again."""
    got: list[int] = []

    async def deliver(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
        got.append(seq)

    pool = RelaySessions(relay.url, deliver, policy=replace(FAST, max_readers=0))
    writer = RelayClient(relay.url, _noop)
    writer.start()
    m, r, w = os.urandom(32), os.urandom(32), os.urandom(32)
    try:
        await writer.create_mailbox(m, r, w)
        seq = await writer.post(m, w, os.urandom(16), pad(b"x"))
        await pool.subscribe(m, r, 0, write_seed=w)
        await eventually(lambda: got == [seq], 30, "the poll")
        await pool.ack(m, seq)
        await asyncio.sleep(FAST.poll_interval[1] * 3)  # a few more polls
        assert got == [seq]
        assert pool._subs[m].pending_ack == 0, "the ack was never sent"
    finally:
        await writer.close()
        await pool.close()


def test_bench_sessions_smoke(tmp_path: Path) -> None:
    """bench/sessions.py runs and reports isolation from the relay's side."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.sessions",
            "--mailboxes",
            "24",
            "--readers",
            "4",
            "--first-poll",
            "1",
            "--timeout",
            "90",
        ],
        cwd=ROOT,
        env=env_without_proxy(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = dict(line.split() for line in result.stdout.splitlines() if line.strip())
    assert figures["delivered"] == "24"
    assert figures["relay_conns_reading_2+_mailboxes"] == "0"
    assert figures["relay_posts_on_reader_conns"] == "0"
    assert int(figures["client_peak_connections"]) <= 4 + SessionPolicy().max_polls + 1


async def test_catch_up_reads_every_mailbox_once_even_cold_ones(relay: RelayProcess) -> None:
    """A one-shot ``sync`` must not wait for polls that fall due in minutes."""
    got: set[bytes] = set()

    async def deliver(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
        got.add(mailbox_id)

    policy = replace(FAST, max_readers=2, first_poll=(300.0, 600.0))
    pool = RelaySessions(relay.url, deliver, policy=policy)
    writer = RelayClient(relay.url, _noop)
    writer.start()
    boxes = [(os.urandom(32), os.urandom(32), os.urandom(32)) for _ in range(6)]
    try:
        for m, r, w in boxes:
            await writer.create_mailbox(m, r, w, shared=True)
            await writer.post(m, w, os.urandom(16), pad(b"x"))
            await pool.subscribe(m, r, 0, write_seed=w, shared=True)
        assert await pool.catch_up(60)
        assert got == {m for m, _, _ in boxes}
    finally:
        await writer.close()
        await pool.close()


async def test_a_conversation_mailbox_is_read_live_when_the_readers_are_taken() -> None:
    """A new group mailbox (a new conversation, or the group moved after a
    removal) subscribed after ``max_readers`` inboxes gets a held reader, and
    an inbox goes to polling: before, it was polled every few minutes and
    its commits arrived late (the hostile-member scenario's victim lagged)."""
    pool = RelaySessions("http://127.0.0.1:1", _noop, policy=FAST, rng=random.Random(3))
    inboxes = [bytes([i]) * 32 for i in range(FAST.max_readers)]
    for box in inboxes:
        await pool.subscribe(box, os.urandom(32), 0)
    group = bytes([99]) * 32
    await pool.subscribe(group, os.urandom(32), 0, shared=True)
    try:
        assert pool.is_hot(group)
        assert sum(pool.is_hot(b) for b in inboxes) == FAST.max_readers - 1
        assert len(pool._hot) == FAST.max_readers  # still bounded
        # another conversation demotes an inbox, never the first conversation
        other = bytes([98]) * 32
        await pool.subscribe(other, os.urandom(32), 0, shared=True)
        assert pool.is_hot(group) and pool.is_hot(other)
        # a further inbox waits for a poll
        late = bytes([97]) * 32
        await pool.subscribe(late, os.urandom(32), 0)
        assert not pool.is_hot(late)
    finally:
        await pool.close()
