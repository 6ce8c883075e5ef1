"""Silent drops at the tail: a relay that fake-acks a sender's last messages,
or everything it posts (harness/malicious), against real engines and relay
processes.  Receivers flag the gap within heartbeat_delay + gap_grace; the
sender gets a loud alert naming the members and the relay, and the retry
through the recipients' inboxes on another relay delivers (SPEC.md §8.11).
The engines' clock is injected: no test waits minutes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.engine import Engine
from client.model import NS_OUTBOX
from harness.malicious import Fault, MaliciousRelay
from protocol.app.messages import (
    RECEIPT_WITNESSES,
    AppMessage,
    Heartbeat,
    receipt_witnesses,
)
from tests.client_support import RelayProcess, befriend, eventually, make_engine

pytestmark = pytest.mark.timeout(180)


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class World:
    alice: Engine
    bob: Engine
    carol: Engine
    gid: bytes  # alice's id of the group "crew" (the same for everyone)
    proxy: MaliciousRelay
    fault: Fault  # drops every post of Alice's connection while active
    honest: RelayProcess
    clock: Clock

    async def drop_alices_posts(self) -> None:
        """Drop what Alice posts from now on.  The relay cannot tell her posts
        by the connection (each post goes on a connection that reads nothing,
        SPEC.md §7.1), so it drops every post to the group's mailbox while
        she alone posts: first wait until Bob and Carol have nothing in flight."""

        def idle(e: Engine) -> bool:
            task = e._receipt_task
            return (
                not e._receipts
                and (task is None or task.done())
                and not list(e.store.items(NS_OUTBOX))
            )

        for e in (self.bob, self.carol):
            await eventually(lambda e=e: idle(e), what=f"{e.identity.name} to be idle")
        self.fault.after = self.proxy.log.elapsed()

    def stop_dropping(self) -> None:
        self.fault.until = self.proxy.log.elapsed()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """The group "crew" lives on one relay, behind a malicious proxy.  Alice
    uses only that relay; Bob and Carol also have inboxes on an honest one."""
    # relay A also refuses envelopes above 16 KiB (a legitimate setting)
    upstream = RelayProcess(tmp_path / "relay-a", limits={"max_envelope_size": 16384}).start()
    honest = RelayProcess(tmp_path / "relay-b").start()
    fault = Fault("drop", direction="post", after=1e9)
    proxy = await MaliciousRelay(upstream.url, [fault]).start()
    clock = Clock()
    alice = make_engine(tmp_path / "alice", "Alice", [proxy.url])
    bob = make_engine(tmp_path / "bob", "Bob", [proxy.url, honest.url])
    carol = make_engine(tmp_path / "carol", "Carol", [proxy.url, honest.url])
    engines = (alice, bob, carol)
    for e in engines:
        e.clock = clock
        e.watch_tick = 0.05
        await e.connect()
    try:
        await befriend(alice, bob)
        await befriend(alice, carol)
        group = await alice.create_group("crew")
        assert alice.conversation_relays(group.group_id) == [proxy.url]
        await alice.add_members(
            group.group_id, [alice.find_contact("Bob"), alice.find_contact("Carol")]
        )
        for e in (bob, carol):
            await eventually(lambda e=e: any(c.name == "crew" for c in e.conversations()))
        # the relay drops posts to the group's mailbox (see drop_alices_posts)
        fault.mailbox = alice._meta(group.group_id).mailboxes[0].mailbox_id.hex()
        yield World(alice, bob, carol, group.group_id, proxy, fault, honest, clock)
    finally:
        for e in engines:
            await e.close()
        await proxy.stop()
        upstream.stop()
        honest.stop()


def texts(engine: Engine, conv_id: bytes) -> list[str]:
    return [e.text for e in engine.history(conv_id) if e.text]


def warnings(engine: Engine, *needles: str) -> list[str]:
    return [n.text for n in engine.notices if n.warning and all(x in n.text for x in needles)]


async def test_dropped_tail_is_flagged_by_receivers_and_healed_by_the_retry(
    world: World,
) -> None:
    w = world
    await w.alice.send_text(w.gid, "one")
    for e in (w.bob, w.carol):
        await eventually(lambda e=e: texts(e, w.gid) == ["one"], what="the first message")
    await w.drop_alices_posts()
    await w.alice.send_text(w.gid, "two")
    await w.alice.send_text(w.gid, "three")
    await eventually(lambda: w.proxy.log.counts().get("drop", 0) >= 2, what="both dropped")
    w.stop_dropping()
    assert texts(w.bob, w.gid) == ["one"]

    # Alice's high-water mark follows her last message after heartbeat_delay...
    w.clock.advance(w.alice.heartbeat_delay + 1)
    for e in (w.bob, w.carol):
        conv = e.conversation(w.gid)
        await eventually(
            lambda e=e: e.missing(e.conversation(w.gid)) == {w.alice.identity.signature_pub: 2},  # type: ignore[arg-type]
            what="the receivers to see the tail gap",
        )
        assert conv is not None and not warnings(e, "from Alice never arrived")
    # ...and a gap no relay fills within gap_grace is reported, naming Alice.
    w.clock.advance(w.bob.gap_grace + 1)
    for e in (w.bob, w.carol):
        await eventually(
            lambda e=e: bool(warnings(e, "2 messages from Alice never arrived")),
            what="a loud notice of the dropped tail",
        )

    # The sender's deadline passes: alert, and the retry heals the gap.
    w.clock.advance(w.alice.delivery_timeout)
    await eventually(
        lambda: len(warnings(w.alice, "NOT DELIVERED to", "Bob", "Carol", "after 2 min")) == 2,
        what="alice's alerts for both dropped messages",
    )
    # Bob and Carol were heard from (their own heartbeats) after "two" was sent
    assert all("posted since" in t for t in warnings(w.alice, "NOT DELIVERED"))
    for e in (w.bob, w.carol):
        await eventually(
            lambda e=e: sorted(texts(e, w.gid)) == ["one", "three", "two"],
            what="the retry to deliver",
        )
        await eventually(lambda e=e: not e.missing(e.conversation(w.gid)))  # type: ignore[arg-type]


async def test_everything_dropped_alerts_the_sender_and_the_retry_goes_around(
    world: World,
) -> None:
    w = world
    await w.drop_alices_posts()
    mid = await w.alice.send_text(w.gid, "hello?")
    await eventually(  # the relay lies: "stored"
        lambda: w.alice.status(mid).relays_stored == [w.proxy.url],  # type: ignore[union-attr]
        what="the fake ack",
    )
    w.stop_dropping()  # Alice's message is gone; Bob's and Carol's receipts will pass
    w.clock.advance(60)
    await asyncio.sleep(0.5)  # ten ticks of the watch
    assert not warnings(w.alice, "NOT DELIVERED")
    assert texts(w.bob, w.gid) == [] and texts(w.carol, w.gid) == []

    w.clock.advance(w.alice.delivery_timeout - 60 + 1)
    await eventually(
        lambda: bool(warnings(w.alice, "NOT DELIVERED to", "Bob", "Carol", "after 2 min")),
        what="the sender's alert",
    )
    alert = warnings(w.alice, "NOT DELIVERED")[0]
    assert f"relay {w.proxy.url} accepted it but is silent" in alert
    # the retry goes through Bob's and Carol's inboxes on the honest relay
    for e in (w.bob, w.carol):
        await eventually(lambda e=e: texts(e, w.gid) == ["hello?"], what="delivery by retry")
    await eventually(
        lambda: len(w.alice.status(mid).delivered_to) == 2,  # type: ignore[union-attr]
        what="both receipts",
    )
    w.clock.advance(2 * w.alice.delivery_timeout)
    await asyncio.sleep(0.5)
    assert not warnings(w.alice, "STILL NOT DELIVERED")


async def test_a_refusing_relay_is_named_and_the_retry_goes_around(world: World) -> None:
    w = world
    mid = await w.alice.send_article(w.gid, "long", "x" * 30_000)  # a 32 KiB envelope
    await eventually(
        lambda: any("refused a message" in n.text for n in w.alice.notices), what="the refusal"
    )
    w.clock.advance(w.alice.delivery_timeout + 1)
    await eventually(
        lambda: bool(warnings(w.alice, "NOT DELIVERED to", "Bob", "Carol")), what="the alert"
    )
    alert = warnings(w.alice, "NOT DELIVERED")[0]
    assert f"relay {w.proxy.url} refused it (TooLarge" in alert
    for e in (w.bob, w.carol):  # through their inboxes on the other relay
        await eventually(
            lambda e=e: [x.title for x in e.history(w.gid)] == ["long"], what="the retry"
        )
    await eventually(
        lambda: len(w.alice.status(mid).delivered_to) == 2,  # type: ignore[union-attr]
        what="both receipts",
    )


def test_receipt_witnesses_bound_receipts_in_large_groups() -> None:
    members = [os.urandom(32) for _ in range(200)]
    small = members[:64]
    mid = os.urandom(16)
    assert receipt_witnesses(mid, small) == sorted(small)
    sample = receipt_witnesses(mid, members)
    assert len(sample) == RECEIPT_WITNESSES and set(sample) <= set(members)
    assert receipt_witnesses(mid, list(reversed(members))) == sample  # order-free
    others = {tuple(receipt_witnesses(os.urandom(16), members)) for _ in range(20)}
    assert len(others) > 1  # a different sample per message spreads the load


def test_heartbeat_is_a_header_only_message() -> None:
    msg = AppMessage.new(Heartbeat(), rng=os.urandom, now_ms=1, sender_seq=7)
    back = AppMessage.from_bytes(msg.to_bytes())
    assert isinstance(back.body, Heartbeat) and back.sender_seq == 7
