"""Reader-driven flow control against a real relay process (SPEC §7.6 "Flow
control"): a backlog larger than the relay's send queue drains without a
slow-consumer disconnect, and a small message in another mailbox of the same
connection gets through while it drains (GitHub issue 11, "Backlog lock-out").

The attacks use the real client (:class:`client.relay_client.RelayClient`)
and a real ``samizdat-relay`` process with its default limits: an 8 MiB send
queue and 64 KiB envelopes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from client.engine import Engine
from client.relay_client import RelayClient
from harness.relay_process import RelayProcess
from protocol.relay_frames import INITIAL_CREDIT, MAX_CREDIT, Credit, Ok, Posted, Subscribed
from tests.client_support import befriend, eventually, make_engine
from tests.relay_support import Client as RawClient
from tests.relay_support import Mailbox, envelope

BIG = 65_536  # the largest envelope bucket (SPEC §7.3)
SMALL = 256


@dataclass
class Box:
    id: bytes = field(default_factory=lambda: os.urandom(32))
    read_seed: bytes = field(default_factory=lambda: os.urandom(32))
    write_seed: bytes = field(default_factory=lambda: os.urandom(32))


class Reader:
    """A RelayClient that records what it is delivered, per mailbox."""

    def __init__(self, url: str) -> None:
        self.got: dict[bytes, list[tuple[int, int]]] = {}
        self.client = RelayClient(url, self._on_deliver, request_timeout=30.0, max_backoff=2.0)

    async def _on_deliver(self, url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
        self.got.setdefault(mailbox_id, []).append((seq, len(envelope)))

    def count(self, box: Box) -> int:
        return len(self.got.get(box.id, []))

    async def wait(self, box: Box, n: int, timeout: float) -> bool:
        """True once ``n`` messages of ``box`` arrived, False after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.count(box) < n:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


async def _noop(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
    return None


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path / "relay").start()
    yield proc
    proc.stop()


async def _flood(writer: RelayClient, box: Box, n: int, size: int) -> list[int]:
    """Post ``n`` envelopes of ``size`` bytes, pipelined 32 at a time; returns
    the seqs the relay gave them (increasing, but not from 1: SPEC §7.7)."""
    seqs: list[int] = []
    for start in range(0, n, 32):
        seqs += await asyncio.gather(
            *(
                writer.post(box.id, box.write_seed, os.urandom(16), os.urandom(size))
                for _ in range(min(32, n - start))
            )
        )
    return sorted(seqs)


async def _writer(url: str, *boxes: Box) -> RelayClient:
    writer = RelayClient(url, _noop, request_timeout=60.0)
    writer.start()
    for box in boxes:
        await writer.create_mailbox(box.id, box.read_seed, box.write_seed)
    return writer


async def _backlog_then_small(relay: RelayProcess, n_big: int) -> None:
    """An offline reader's mailbox fills with ``n_big`` 64 KiB envelopes; the
    reader comes online on both mailboxes; a small message in the other one
    must arrive within seconds and the backlog must drain without reconnects."""
    bulk, chat = Box(), Box()
    writer = await _writer(relay.url, bulk, chat)
    reader = Reader(relay.url)
    try:
        posted = await _flood(writer, bulk, n_big, BIG)
        # the bulk mailbox first: its backlog is sent before the chat's subscription
        await reader.client.subscribe(bulk.id, bulk.read_seed, 0)
        await reader.client.subscribe(chat.id, chat.read_seed, 0)
        reader.client.start()
        await writer.post(chat.id, chat.write_seed, os.urandom(16), os.urandom(SMALL))
        assert await reader.wait(chat, 1, 20.0), (
            f"the small message did not arrive; state {reader.client.state}, "
            f"{reader.client.failures} reconnects, {reader.count(bulk)}/{n_big} bulk delivered"
        )
        assert await reader.wait(bulk, n_big, 120.0), (
            f"backlog stalled at {reader.count(bulk)}/{n_big}, {reader.client.failures} reconnects"
        )
        assert reader.client.failures == 0, "the relay disconnected the reader"
        assert reader.client.state == "connected"
        seqs = [seq for seq, _ in reader.got[bulk.id]]
        assert seqs == posted, "backlog out of order, with a gap or duplicate"
        assert all(size == BIG for _, size in reader.got[bulk.id])
    finally:
        await reader.client.close()
        await writer.close()


async def test_9mb_backlog_does_not_lock_out_the_reader(relay: RelayProcess) -> None:
    """Issue 11: a 9 MB article (140 x 64 KiB) for an offline reader."""
    await _backlog_then_small(relay, 140)


async def test_invite_flood_does_not_cut_off_other_mailboxes(relay: RelayProcess) -> None:
    """Issue 11, on purpose: 1,024 x 64 KiB posted with an inbox's write seed
    (what an invite link gives away) must not cut the owner off."""
    await _backlog_then_small(relay, 1_024)


async def test_the_reader_paces_the_relay(relay: RelayProcess) -> None:
    """Credit is returned only once the engine has handled a frame: while the
    engine is stuck, the relay sends one window (1 MiB) and then waits, with
    the connection up; when the engine resumes, everything follows in order."""
    bulk = Box()
    writer = await _writer(relay.url, bulk)
    gate = asyncio.Event()
    handled: list[int] = []

    async def slow(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
        await gate.wait()
        handled.append(seq)

    reader = RelayClient(relay.url, slow, request_timeout=30.0, max_backoff=2.0)
    try:
        posted = await _flood(writer, bulk, 64, BIG)  # 4 MiB
        await reader.subscribe(bulk.id, bulk.read_seed, 0)
        reader.start()
        frame = 1 + 32 + 8 + 4 + BIG  # a Deliver of a 64 KiB envelope
        window = -(-INITIAL_CREDIT // frame)
        deadline = time.monotonic() + 20
        while reader.next_seq(bulk.id) <= posted[window - 1] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # time for more, were the relay not waiting
        received = sum(1 for seq in posted if seq < reader.next_seq(bulk.id))
        assert received == window, f"{received} frames received on a {window}-frame window"
        assert reader.state == "connected" and reader.failures == 0
        gate.set()
        deadline = time.monotonic() + 60
        while len(handled) < 64 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert handled == posted
        assert reader.failures == 0
    finally:
        await reader.close()
        await writer.close()


async def test_engines_9mb_article_for_an_offline_member(tmp_path: Path) -> None:
    """Issue 11 as reported, with whole engines on two relay processes: while
    Bob is offline, Alice sends him a 9 MB article and Carol a short line.
    When Bob comes back, Carol's line arrives within seconds, the article
    follows, and no relay connection of Bob's ever drops."""
    relays = [RelayProcess(tmp_path / f"relay{i}").start() for i in range(2)]
    urls = [r.url for r in relays]
    names = ("alice", "bob", "carol")
    engines = {n: make_engine(tmp_path / n, n.capitalize(), urls) for n in names}
    bob2: Engine | None = None
    try:
        for e in engines.values():
            await e.connect()
        alice, bob, carol = engines["alice"], engines["bob"], engines["carol"]
        with_alice = await befriend(alice, bob)
        with_carol = await befriend(carol, bob)
        await bob.close()
        article = "# Samizdat\n\n" + "".join(
            f"Paragraph {i}: {os.urandom(32).hex()}\n\n" for i in range(110_000)
        )
        assert len(article) > 9_000_000
        await alice.send_article(with_alice, "The long read", article)
        await carol.send_text(with_carol, "are you there?")
        bob2 = Engine.open(tmp_path / "bob", b"test passphrase")
        await bob2.connect()
        b = bob2
        await eventually(
            lambda: (
                [e.text for e in b.history(with_carol) if e.kind == "text"] == ["are you there?"]
            ),
            timeout=30.0,
            what="Carol's line while the article's backlog drains",
        )
        await eventually(
            lambda: any(e.kind == "article" for e in b.history(with_alice)),
            timeout=180.0,
            what="the article",
        )
        got = next(e for e in b.history(with_alice) if e.kind == "article")
        assert got.text == article
        assert all(c.failures == 0 for c in b.relays.values()), "a relay dropped Bob"
    finally:
        for name, e in engines.items():
            if name != "bob":
                await e.close()
        if bob2 is not None:
            await bob2.close()
        for r in relays:
            r.stop()


async def test_a_conversation_line_goes_ahead_of_bulk(relay: RelayProcess) -> None:
    """Two mailboxes with 64 KiB backlogs and a chat line, all pending on an
    exhausted credit: the next frame the relay sends is the chat line (the
    relay tells it only by its size bucket), then the backlog resumes."""
    bulks, chat = [Mailbox() for _ in range(2)], Mailbox()
    per_box = 12  # 2 x 12 x 64 KiB: more than the initial credit, and each
    # bulk mailbox gets frames (so a size) before the credit runs out
    async with aiohttp.ClientSession() as session:
        w = await RawClient.connect(session, relay.url + "/ws")
        for mb in [*bulks, chat]:
            assert isinstance(await w.create(mb), Ok)
            assert isinstance(await w.auth_write(mb), Ok)
        posted: dict[bytes, list[int]] = {mb.id: [] for mb in bulks}
        for mb in bulks:
            for _ in range(per_box):
                p = await w.post(mb, envelope(size=BIG))
                assert isinstance(p, Posted)
                posted[mb.id].append(p.seq)
        r = await RawClient.connect(session, relay.url + "/ws")
        for mb in [chat, *bulks]:
            await r.auth_read(mb)
            assert isinstance(await r.subscribe(mb), Subscribed)
        frame = 1 + 32 + 8 + 4 + BIG
        window = -(-INITIAL_CREDIT // frame)
        await r.wait_delivered(window, timeout=20)
        assert {d.mailbox_id for d in r.delivered} == {mb.id for mb in bulks}
        assert isinstance(await w.post(chat, envelope(b"are you there?")), Posted)
        await asyncio.sleep(0.5)
        await r.ack(chat, 0)  # a round trip: nothing may come on a spent credit
        assert len(r.delivered) == window
        overdraft = window * frame - INITIAL_CREDIT  # the last frame overdrew the credit
        await r.ws.send_bytes(Credit(overdraft + 1).encode())  # room for one more frame
        await r.wait_delivered(window + 1, timeout=20)
        assert r.delivered[window].mailbox_id == chat.id
        await r.ws.send_bytes(Credit(MAX_CREDIT).encode())
        await r.wait_delivered(2 * per_box + 1, timeout=30)
        for mb in bulks:
            got = [d.seq for d in r.delivered if d.mailbox_id == mb.id]
            assert got == posted[mb.id]
        await r.close()
        await w.close()
