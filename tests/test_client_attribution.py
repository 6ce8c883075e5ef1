"""Real engines and relay processes: who a received message is credited to,
and that a message whose processing cannot be persisted changes nothing.

Late delivery is made deterministic by holding the sealed envelopes a sender
would post (as a slow or partitioned network would) and handing them to the
recipient's receive path later, exactly as a relay would deliver them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.engine import Engine
from client.model import NS_GROUPS, OutboxItem
from tests.client_support import RelayProcess, befriend, eventually, make_engine

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def engines(tmp_path: Path, relays: list[RelayProcess]) -> AsyncIterator[list[Engine]]:
    urls = [r.url for r in relays]
    names = ("alice", "bob", "carol", "dave")
    engines = [make_engine(tmp_path / n, n.capitalize(), urls) for n in names]
    for e in engines:
        await e.connect()
    yield engines
    for e in engines:
        await e.close()


def texts(engine: Engine, conv_id: bytes) -> list[str]:
    return [e.text for e in engine.history(conv_id) if e.kind == "text"]


async def send_held(engine: Engine, conv_id: bytes, text: str) -> list[OutboxItem]:
    """``engine`` sends ``text``; the network holds every envelope of it."""
    held: list[OutboxItem] = []
    original = engine._post_item

    async def hold(item: OutboxItem) -> bool:
        held.append(item)
        engine.store.delete("outbox", item.msg_id + item.mailbox_id)
        return True

    engine._post_item = hold  # type: ignore[method-assign]
    try:
        await engine.send_text(conv_id, text)
    finally:
        engine._post_item = original  # type: ignore[method-assign]
    assert held
    return held


async def deliver(engine: Engine, items: list[OutboxItem]) -> None:
    """What a relay does with each envelope: hand it to the receive path."""
    for seq, item in enumerate(items):
        async with engine._lock:
            await engine._receive(item.relay_url, item.mailbox_id, seq, item.sealed)


async def test_late_message_is_shown_under_its_real_senders_name(engines: list[Engine]) -> None:
    alice, bob, carol, dave = engines
    for other in (bob, carol, dave):
        await befriend(alice, other)
    group = await alice.create_group("crew")
    gid = group.group_id
    await alice.add_members(gid, [alice.find_contact("Dave"), alice.find_contact("Bob")])
    await eventually(lambda: any(c.name == "crew" for c in bob.conversations()), what="bob in")
    bob_gid = bob.find_conversation("crew").group_id
    bob_leaf = bob.groups[bob_gid].own_leaf_index
    first = await send_held(bob, bob_gid, "first, said before removal")
    second = await send_held(bob, bob_gid, "second, said before removal")

    await alice.remove_member(gid, bob.identity.signature_pub)
    assert bob_leaf not in [i for i, _, _ in alice.groups[gid].members()]
    await deliver(alice, first)  # from a leaf that is blank now
    await eventually(lambda: len(texts(alice, gid)) == 1, what="first late message")

    await alice.add_members(gid, [alice.find_contact("Carol")])
    await eventually(lambda: any(c.name == "crew" for c in carol.conversations()), what="carol")
    carol_leaf = next(
        i for i, _, key in alice.groups[gid].members() if key == carol.identity.signature_pub
    )
    assert carol_leaf == bob_leaf  # carol took bob's leaf
    await deliver(alice, second)  # from a leaf that is carol's now
    await eventually(lambda: len(texts(alice, gid)) == 2, what="second late message")

    entries = [e for e in alice.history(gid) if e.kind == "text"]
    assert [e.text for e in entries] == [
        "first, said before removal",
        "second, said before removal",
    ]
    for entry in entries:
        assert entry.sender == bob.identity.signature_pub
        assert alice.display_name(entry.sender) == "Bob"


async def test_store_failure_leaves_group_as_stored_and_message_readable(
    engines: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob, _, _ = engines
    conv = await befriend(alice, bob)
    alice_conv = alice.find_conversation("Bob").group_id
    held = await send_held(bob, conv, "persist me")
    stored = alice.store.get(NS_GROUPS, alice_conv)
    assert stored == alice.groups[alice_conv].to_bytes()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    # the history write fails after group.process has accepted the message
    monkeypatch.setattr(alice.store, "append", disk_full)
    with pytest.raises(sqlite3.OperationalError):
        await deliver(alice, held[:1])
    monkeypatch.undo()
    assert alice.store.get(NS_GROUPS, alice_conv) == stored
    assert alice.groups[alice_conv].to_bytes() == stored  # memory follows the store
    assert texts(alice, alice_conv) == []
    # the same message, delivered again (another relay's copy), still opens
    await deliver(alice, held)
    await eventually(lambda: texts(alice, alice_conv) == ["persist me"], what="redelivery")
