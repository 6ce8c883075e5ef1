"""Cold-mailbox promotion and ``catch_up`` accounting (client/sessions.py,
SPEC.md §7.1 "Connection roles").

The behaviour under test: a user with more mailboxes on one relay than held
readers gets the cold ones by polls every few minutes.  A conversation that
becomes active while cold must not stay a poll interval behind per message:
once a poll finds something new there, the mailbox is read live (promoted),
displacing the hot mailbox idle longest, without thrash and without closing
the displaced reader at the instant the promoted one opens (a timing signal
that would link the two mailboxes for the relay).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from client.relay_client import RelayClient
from client.sessions import RelaySessions, SessionPolicy
from harness.relay_process import RelayProcess
from protocol.padding import pad
from tests.client_support import befriend, eventually, make_engine
from tests.test_session_isolation import what_the_relay_saw

pytestmark = pytest.mark.timeout(180)

# 4 held readers for 8 mailboxes (the default is 64 per relay): polls every
# 12 to 15 s, so "live" (a few seconds) and "by poll" are told apart
POLICY = replace(
    SessionPolicy(),
    max_readers=4,
    max_polls=2,
    poll_interval=(12.0, 15.0),
    demote_delay=(1.0, 4.0),
    first_poll=(0.05, 0.3),
    poll_quiet=0.5,
    open_delay=(0.0, 0.05),
    post_linger=(0.1, 0.3),
)
LIVE = 8.0  # seconds: well under a poll interval, generous for a loaded machine


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path / "relay", settings={"debug_log": True}).start()
    yield proc
    proc.stop()


async def _noop(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
    return None


class _Recorder:
    """When each reader connection of the pool started and closed, per mailbox."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, bytes]] = []

    def client_class(self) -> type[RelayClient]:
        events = self.events

        class Recording(RelayClient):
            def start(self) -> None:
                for mailbox_id in self._subs:
                    events.append((time.monotonic(), "open", mailbox_id))
                super().start()

            async def close(self) -> None:
                if self._task is not None and not self._stop.is_set():
                    for mailbox_id in self._subs:
                        events.append((time.monotonic(), "close", mailbox_id))
                await super().close()

        return Recording


async def test_a_cold_conversation_that_becomes_active_is_read_live(
    relay: RelayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 conversation mailboxes, 4 held readers: a message to a cold one is
    found by a poll; the burst that follows must arrive live, not one poll
    interval (12 to 15 s here, 1 to 3 min by default) per message.  The
    displaced reader does not close at the instant the promoted one opens,
    the bound on held readers stands, and no connection reads two mailboxes."""
    recorder = _Recorder()
    monkeypatch.setattr("client.sessions.RelayClient", recorder.client_class())
    got: dict[bytes, list[tuple[int, float]]] = {}

    async def deliver(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
        got.setdefault(mailbox_id, []).append((seq, time.monotonic()))

    pool = RelaySessions(relay.url, deliver, policy=POLICY, rng=random.Random(5))
    peer = RelayClient(relay.url, _noop)  # the other member, posting
    peer.start()
    boxes = [(os.urandom(32), os.urandom(32), os.urandom(32)) for _ in range(8)]
    try:
        for m, r, w in boxes:
            await peer.create_mailbox(m, r, w, shared=True)
            await pool.subscribe(m, r, 0, write_seed=w, shared=True)
        hot_before = [m for m, _, _ in boxes if pool.is_hot(m)]
        cold = [(m, w) for m, _, w in boxes if not pool.is_hot(m)]
        assert len(hot_before) == POLICY.max_readers and cold
        target, write = cold[0]
        # every cold mailbox read up to its (empty) head once
        await eventually(lambda: all(pool._subs[m].fetched for m, _ in cold), 30, "the first polls")
        await peer.post(target, write, os.urandom(16), pad(b"first"))
        await eventually(lambda: len(got.get(target, [])) == 1, 40, "the poll to find it")
        for n in range(2, 6):  # the burst, a message a second or so
            await asyncio.sleep(1.0)  # (the poll's connection has closed by then)
            posted = time.monotonic()
            await peer.post(target, write, os.urandom(16), pad(b"more"))

            def arrived(n: int = n) -> bool:
                return len(got.get(target, [])) == n

            await eventually(arrived, LIVE, f"message {n} live (not one poll interval later)")
            assert got[target][-1][1] - posted < LIVE
        assert pool.is_hot(target)
        assert len(pool._hot) <= POLICY.max_readers
        demoted = [m for m in hot_before if not pool.is_hot(m)]
        assert len(demoted) == 1
        # the displaced reader closes a jittered while after the promoted
        # one opens, not at the same instant
        opened = [t for t, what, m in recorder.events if what == "open" and m == target]
        await eventually(
            lambda: any(what == "close" and m == demoted[0] for _, what, m in recorder.events),
            30,
            "the displaced reader to close",
        )
        closed = [t for t, what, m in recorder.events if what == "close" and m == demoted[0]]
        assert abs(closed[0] - opened[-1]) >= POLICY.demote_delay[0] / 2
        # the displaced mailbox is still read: by polls
        m2, w2 = demoted[0], next(w for m, _, w in boxes if m == demoted[0])
        await peer.post(m2, w2, os.urandom(16), pad(b"to the displaced one"))
        await eventually(lambda: len(got.get(m2, [])) == 1, 60, "a poll of the displaced one")
    finally:
        await peer.close()
        await pool.close()
    reads, _ = what_the_relay_saw(relay)
    assert all(len(b) == 1 for b in reads.values()), "a connection read two mailboxes"


def _pool(policy: SessionPolicy, now: list[float]) -> RelaySessions:
    return RelaySessions(
        "http://127.0.0.1:1", _noop, policy=policy, rng=random.Random(9), clock=lambda: now[0]
    )


async def test_promotion_displaces_an_idle_inbox_first_and_does_not_thrash() -> None:
    """Who is displaced, and hysteresis: a promoted mailbox stays hot for
    ``min_hot``, so active cold conversations do not swap readers back and
    forth on every poll; an inbox is displaced before a conversation, and
    never displaces one."""
    now = [1000.0]
    policy = replace(POLICY, max_readers=3, first_poll=(300.0, 600.0))
    pool = _pool(policy, now)
    c1, inbox, c2, c3, c4 = (bytes([i]) * 32 for i in range(1, 6))
    try:
        for m in (c1, inbox, c2):
            await pool.subscribe(m, os.urandom(32), 0, shared=m != inbox)
        # a conversation subscribed while the readers are taken displaces
        # the inbox, though c1 has been idle longer
        await pool.subscribe(c3, os.urandom(32), 0, shared=True)
        assert [pool.is_hot(m) for m in (c1, inbox, c2, c3)] == [True, False, True, True]
        now[0] += 1.0
        await pool.subscribe(c4, os.urandom(32), 0, shared=True)  # displaces c1
        assert not pool.is_hot(c1)
        now[0] += 1.0
        assert pool.promote(c1)  # c1 becomes active: displaces c2, idle longest
        assert pool.is_hot(c1) and not pool.is_hot(c2)
        now[0] += 1.0
        assert pool.promote(c2)  # displaces c3 (a subscription is no activity)
        now[0] += 1.0
        assert pool.promote(c3)  # displaces c4
        assert [pool.is_hot(m) for m in (c1, c2, c3, c4)] == [True, True, True, False]
        # c4 wants back at once: every hot mailbox was promoted within
        # min_hot, so it waits (polled) instead of displacing one of them
        now[0] += 1.0
        assert not pool.promote(c4)
        assert not pool.is_hot(c4) and len(pool._hot) == policy.max_readers
        assert not pool.promote(inbox)
        now[0] += policy.min_hot + 1.0
        assert not pool.promote(inbox), "an inbox displaced a conversation"
        assert pool.promote(c4)  # after the minimum time: displaces c1, idle longest
        assert pool.is_hot(c4) and not pool.is_hot(c1)
        assert len(pool._hot) == policy.max_readers
    finally:
        await pool.close()


async def test_catch_up_counts_the_failures_of_readers_created_while_it_runs() -> None:
    """A relay that is down ends ``catch_up`` once every mailbox has been
    tried, also one subscribed meanwhile (a welcome read from another relay
    subscribes the new group's mailboxes here): before, only the readers
    present at its start were counted, and ``sync`` waited out the whole
    timeout.  The relay here accepts TCP and never answers (a censor's
    black hole): each attempt takes ``connect_timeout``."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)  # never accepted: the WebSocket upgrade gets no answer
        policy = replace(POLICY, connect_timeout=3.0, fail_fast_readers=True)
        url = f"http://127.0.0.1:{hole.getsockname()[1]}"
        pool = RelaySessions(url, _noop, policy=policy, rng=random.Random(2))
        try:
            for i in range(2):
                await pool.subscribe(bytes([i]) * 32, os.urandom(32), 0, shared=True)
            started = time.monotonic()
            task: asyncio.Task[Any] = asyncio.ensure_future(pool.catch_up(120))
            await asyncio.sleep(0.5)
            assert not task.done()
            await pool.subscribe(bytes([9]) * 32, os.urandom(32), 0, shared=True)
            assert pool.is_hot(bytes([9]) * 32)
            done = await asyncio.wait_for(task, 45)
            assert done is False
            assert time.monotonic() - started < 45
        finally:
            await pool.close()


async def test_opening_a_conversation_reads_its_mailboxes_live(
    tmp_path: Path, relays: list[RelayProcess]
) -> None:
    """The user opens a conversation (the TUI and ``history`` mark it read)
    whose mailboxes are cold: they are promoted, so the reply the user is
    likely waiting for arrives live, not at the next poll (1 to 3 min)."""
    urls = [r.url for r in relays]
    alice, bob = (make_engine(tmp_path / n, n.capitalize(), urls) for n in ("alice", "bob"))
    try:
        for e in (alice, bob):
            await e.connect()
        conv = await befriend(alice, bob)
        boxes = [
            (mb.relay_url, mb.mailbox_id)
            for mb in alice._mailboxes.values()
            if mb.conv_id == conv and not mb.retired
        ]
        assert boxes
        for url, m in boxes:  # the conversation went cold, every reader is taken
            pool = alice.relays[url]
            if pool.is_hot(m):
                pool._demote(m)
            pool.policy = replace(pool.policy, max_readers=len(pool._hot))
            assert not pool.is_hot(m)
        alice.mark_read(conv)
        assert all(alice.relays[url].is_hot(m) for url, m in boxes)
        await bob.send_text(conv, "are you there?")

        def arrived() -> bool:
            return any(e.text == "are you there?" for e in alice.history(conv))

        await eventually(arrived, 20, "the reply live (polls are 1 to 3 min apart)")
    finally:
        await alice.close()
        await bob.close()


async def test_only_new_activity_in_a_conversation_promotes(relay: RelayProcess) -> None:
    """What a poll finds promotes only if it is new (arrived since the
    mailbox was last read up to its head: not the backlog of a client that
    was offline) and only in a conversation (an inbox's invite is no
    conversation)."""
    policy = replace(POLICY, max_readers=0, poll_interval=(0.5, 1.0))
    got: dict[bytes, int] = {}

    async def deliver(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
        got[mailbox_id] = got.get(mailbox_id, 0) + 1

    pool = RelaySessions(relay.url, deliver, policy=policy, rng=random.Random(4))
    peer = RelayClient(relay.url, _noop)
    peer.start()
    conv = (os.urandom(32), os.urandom(32), os.urandom(32))
    inbox = (os.urandom(32), os.urandom(32), os.urandom(32))
    try:
        for (m, r, w), shared in ((conv, True), (inbox, False)):
            await peer.create_mailbox(m, r, w, shared=shared)
            for _ in range(3):  # a backlog from while we were offline
                await peer.post(m, w, os.urandom(16), pad(b"old"))
            await pool.subscribe(m, r, 0, write_seed=w, shared=shared)
            assert not pool.is_hot(m)
        pool.policy = replace(policy, max_readers=2)  # room for both
        await eventually(
            lambda: got.get(conv[0]) == 3 and got.get(inbox[0]) == 3, 30, "the backlog"
        )
        await asyncio.sleep(3 * policy.poll_interval[1])  # a few more polls
        assert not pool.is_hot(conv[0]), "a backlog promoted"
        await peer.post(inbox[0], inbox[2], os.urandom(16), pad(b"an invite"))
        await eventually(lambda: got.get(inbox[0]) == 4, 30, "the inbox's poll")
        await asyncio.sleep(policy.poll_interval[1])
        assert not pool.is_hot(inbox[0]), "an inbox's poll promoted it"
        await peer.post(conv[0], conv[2], os.urandom(16), pad(b"new"))
        await eventually(lambda: pool.is_hot(conv[0]), 30, "the active conversation promoted")
    finally:
        await peer.close()
        await pool.close()


async def test_an_engines_cold_conversation_gets_a_burst_live(
    tmp_path: Path, relays: list[RelayProcess]
) -> None:
    """The same through real engines: Alice's conversation with Bob went
    cold on both relays (every reader taken); Bob writes, the first message
    comes by a poll, the following ones live.  (This passed on the old code
    too: the delivery receipt Alice posts after the first message promoted
    the mailbox by the post rule.  Where no receipt goes, in a group of more
    than 65 members where she is no receipt witness, only the poll rule
    tested above promotes.)"""
    urls = [r.url for r in relays]
    alice, bob = (make_engine(tmp_path / n, n.capitalize(), urls) for n in ("alice", "bob"))
    alice.session_policy = replace(POLICY, max_readers=64)
    try:
        for e in (alice, bob):
            await e.connect()
        conv = await befriend(alice, bob)
        for mb in [m for m in alice._mailboxes.values() if m.conv_id == conv and not m.retired]:
            pool = alice.relays[mb.relay_url]
            if pool.is_hot(mb.mailbox_id):
                pool._demote(mb.mailbox_id)
            pool.policy = replace(pool.policy, max_readers=len(pool._hot))
        await asyncio.sleep(POLICY.demote_delay[1] + 1)  # the displaced readers closed

        def count() -> int:
            return sum(e.text.startswith("burst") for e in alice.history(conv))

        await bob.send_text(conv, "burst 1")
        await eventually(lambda: count() == 1, 40, "the first message (by a poll)")
        for n in range(2, 5):
            await asyncio.sleep(1.0)
            await bob.send_text(conv, f"burst {n}")

            def arrived(n: int = n) -> bool:
                return count() == n

            await eventually(arrived, LIVE, f"message {n} live")
    finally:
        await alice.close()
        await bob.close()
