"""Post-quantum conversations in the client (SPEC §4.1.1, issue 14): real
``samizdat-relay`` processes, whole engines.  A group of five in the
ML-KEM-768 + X25519 suite over two relays exchanges messages, adds and
removes members and survives a relay move; a 1:1 chat opens in X-Wing from
a PQ invite; a member without a KeyPackage of the group's suite is refused
by name, and nothing is consumed or changed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from client.engine import Engine, EngineError
from protocol.app.invite import InboxAddress, Invite, seal_invite_blob
from protocol.mls.crypto import MLKEM768X25519_SUITE, XWING_SUITE
from protocol.mls.messages import MLSMessage
from tests.client_support import RelayProcess, befriend, eventually, make_engine

pytestmark = pytest.mark.timeout(240)
WAIT = 60.0  # generous: two cores shared by several test runs


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    procs = [RelayProcess(tmp_path / f"relay{i}").start() for i in range(3)]
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
async def world(tmp_path: Path, relays: list[RelayProcess]) -> AsyncIterator[dict[str, Engine]]:
    urls = [r.url for r in relays[:2]]  # the third relay is where the group moves
    engines = {
        name: make_engine(tmp_path / name, name.capitalize(), urls)
        for name in ("alice", "bob", "carol", "dave", "erin")
    }
    for e in engines.values():
        await e.connect()
    yield engines
    for e in engines.values():
        await e.close()


def texts(engine: Engine, conv_id: bytes) -> list[str]:
    return [e.text for e in engine.history(conv_id) if e.kind == "text"]


def suite_of(engine: Engine, conv_id: bytes) -> int:
    return engine.groups[conv_id].suite.suite_id


async def test_pq_group_of_five_over_two_relays_add_remove_move(
    world: dict[str, Engine], relays: list[RelayProcess]
) -> None:
    alice, bob, carol, dave, erin = (world[n] for n in ("alice", "bob", "carol", "dave", "erin"))
    for other in (bob, carol, dave, erin):
        await befriend(alice, other)
    group = await alice.create_group("Quantum readers", suite=MLKEM768X25519_SUITE)
    gid = group.group_id
    assert suite_of(alice, gid) == MLKEM768X25519_SUITE
    assert alice.conversation_relays(gid) == [r.url for r in relays[:2]]

    first = [bob, carol, dave]
    await alice.add_members(gid, [alice.find_contact(o.identity.name) for o in first])
    for other in first:
        await eventually(lambda o=other: gid in o.groups, WAIT, f"{other.identity.name} joined")
        assert suite_of(other, gid) == MLKEM768X25519_SUITE
        # every leaf's HPKE key is an X-Wing key (1,216 bytes), not X25519
        leaf = other.groups[gid].member_leaf(other.groups[gid].own_leaf_index)
        assert len(leaf.encryption_key) == 1216

    await alice.send_text(gid, "post-quantum hello")
    await bob.send_text(gid, "hello from bob")
    for engine in (alice, bob, carol, dave):
        await eventually(
            lambda e=engine: sorted(texts(e, gid)) == ["hello from bob", "post-quantum hello"],
            WAIT,
            f"{engine.identity.name} reads both",
        )

    await alice.add_members(gid, [alice.find_contact("Erin")])  # a later add
    await eventually(lambda: gid in erin.groups, WAIT, "erin joined")
    assert suite_of(erin, gid) == MLKEM768X25519_SUITE
    await erin.send_text(gid, "erin here")
    for engine in (alice, bob, carol, dave):
        await eventually(
            lambda e=engine: "erin here" in texts(e, gid),
            WAIT,
            f"{engine.identity.name} hears erin",
        )
    assert len(alice.members(gid)) == 5

    await alice.remove_member(gid, dave.identity.signature_pub)
    await eventually(lambda: not dave.groups[gid].active, WAIT, "dave sees his removal")
    await carol.send_text(gid, "without dave")
    for engine in (alice, bob, erin):
        await eventually(
            lambda e=engine: "without dave" in texts(e, gid),
            WAIT,
            f"{engine.identity.name} after removal",
        )
    assert "without dave" not in texts(dave, gid)

    old, new = relays[0].url, relays[2].url
    await alice.move_relay(old, new)
    for engine in (alice, bob, carol, erin):
        await eventually(
            lambda e=engine: e.conversation_relays(gid) == [new, relays[1].url],
            WAIT,
            f"{engine.identity.name} learns the move",
        )
    relays[0].kill()  # the group must not need the old relay any more
    await bob.send_text(gid, "after the move")
    for engine in (alice, carol, erin):
        await eventually(
            lambda e=engine: "after the move" in texts(e, gid),
            WAIT,
            f"{engine.identity.name} after the move",
        )
    assert suite_of(bob, gid) == MLKEM768X25519_SUITE
    assert {suite_of(e, gid) for e in (alice, bob, carol, erin)} == {MLKEM768X25519_SUITE}


async def test_pq_direct_chat_from_pq_invite(world: dict[str, Engine]) -> None:
    alice, bob = world["alice"], world["bob"]
    link = await alice.invite(suite=XWING_SUITE)
    conv = await bob.accept(link)
    assert suite_of(bob, conv.group_id) == XWING_SUITE
    await eventually(lambda: conv.group_id in alice.groups, WAIT, "alice joins the 1:1")
    assert suite_of(alice, conv.group_id) == XWING_SUITE
    await bob.send_text(conv.group_id, "quantum-safe hi")
    await eventually(lambda: texts(alice, conv.group_id) == ["quantum-safe hi"], WAIT, "delivery")


async def test_member_without_pq_key_package_is_refused_by_name(
    world: dict[str, Engine],
) -> None:
    alice, bob, carol = world["alice"], world["bob"], world["carol"]
    await befriend(alice, bob)
    await befriend(alice, carol)
    # carol's client published only classic KeyPackages (an older version)
    contact = alice.find_contact("Carol")
    contact.key_packages = [
        kp for kp in contact.key_packages if _suite(kp) not in (MLKEM768X25519_SUITE, XWING_SUITE)
    ]
    alice._save_contact(contact)
    held = {c.name: list(c.key_packages) for c in alice.contacts()}
    group = await alice.create_group("PQ only", suite=MLKEM768X25519_SUITE)
    epoch = alice.groups[group.group_id].epoch
    with pytest.raises(EngineError, match="Carol") as caught:
        await alice.add_members(group.group_id, [alice.find_contact(n) for n in ("Bob", "Carol")])
    assert "0x004e" in str(caught.value).lower()
    # nothing half-applied: no KeyPackage consumed, the group unchanged
    assert {c.name: list(c.key_packages) for c in alice.contacts()} == held
    assert alice.groups[group.group_id].epoch == epoch
    assert alice.members(group.group_id) == [alice.identity.signature_pub]


def test_pq_invite_fits_the_invite_blob(tmp_path: Path) -> None:
    """A PQ KeyPackage (~2.6 KB) fits the short link's stored invite, which
    stays in the 4 KiB bucket a classic invite uses (SPEC §8.5)."""
    engine = make_engine(tmp_path / "solo", "Solo", ["http://127.0.0.1:9"])
    try:
        sizes = {}
        for suite in (1, MLKEM768X25519_SUITE, XWING_SUITE):
            kp = engine._new_key_package(suite)
            assert _suite(kp) == suite
            inbox = InboxAddress("http://127.0.0.1:9", bytes(32), bytes(range(32)))
            invite = Invite.create((inbox,), engine.identity.signature_priv, kp, 2**40)
            sizes[suite] = len(seal_invite_blob(invite, bytes(16)))
        assert set(sizes.values()) == {4096}
    finally:
        engine.store.close()


def _suite(kp: bytes) -> int:
    parsed = MLSMessage.from_bytes(kp).key_package
    assert parsed is not None
    return parsed.cipher_suite
