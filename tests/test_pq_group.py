"""Post-quantum conversations in the client (SPEC §4.1.1, issue 14): real
``samizdat-relay`` processes, whole engines.  A group of five in the
ML-KEM-768 + X25519 suite over two relays exchanges messages, adds and
removes members and survives a relay move; a 1:1 chat opens in X-Wing from
a PQ invite; a member without a KeyPackage of the group's suite is refused
by name, and nothing is consumed or changed."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from client import conversations, tree_welcome
from client.engine import Engine, EngineError
from protocol.app.envelope import EnvelopeType
from protocol.app.invite import InboxAddress, Invite, seal_invite_blob
from protocol.app.messages import BlobRef, ChunkRef
from protocol.app.tree_welcome import TreeWelcome, decrypt_tree, encrypt_tree
from protocol.errors import CryptoError, DecodeError
from protocol.mls.crypto import MLKEM768X25519_SUITE, XWING_SUITE
from protocol.mls.messages import MLSMessage
from tests.client_support import RelayProcess, befriend, eventually, free_port, make_engine

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


# -- the ratchet tree posted once as a blob (SPEC §4.1.1, client/tree_welcome.py) ---------


@pytest.fixture
async def trio(tmp_path: Path, relays: list[RelayProcess]) -> AsyncIterator[dict[str, Engine]]:
    urls = [r.url for r in relays[:2]]
    engines = {
        name: make_engine(tmp_path / name, name.capitalize(), urls)
        for name in ("alice", "bob", "carol")
    }
    for e in engines.values():
        await e.connect()
    for other in ("bob", "carol"):
        await befriend(engines["alice"], engines[other])
    yield engines
    for e in engines.values():
        await e.close()


def _record_posts(engine: Engine) -> list[tuple[EnvelopeType, int]]:
    """Record (envelope type, payload size) of what ``engine`` posts to inboxes."""
    seen: list[tuple[EnvelopeType, int]] = []
    original = engine._post_to_inboxes

    async def recording(payload: bytes, inboxes, conv_id, **kw):  # type: ignore[no-untyped-def]
        seen.append((kw.get("kind", EnvelopeType.WELCOME), len(payload)))
        await original(payload, inboxes, conv_id, **kw)

    engine._post_to_inboxes = recording  # type: ignore[method-assign]
    return seen


async def test_pq_add_posts_the_tree_once_as_a_blob(trio: dict[str, Engine]) -> None:
    alice, bob, carol = trio["alice"], trio["bob"], trio["carol"]
    alice.tree_blob_threshold = 0  # as for a large group: every add goes lean
    posts = _record_posts(alice)
    group = await alice.create_group("Lean", suite=XWING_SUITE)
    gid = group.group_id
    await alice.add_members(gid, [alice.find_contact("Bob"), alice.find_contact("Carol")])
    for other in (bob, carol):
        await eventually(lambda o=other: gid in o.groups, WAIT, f"{other.identity.name} joined")
    welcomes = [p for p in posts if p[0] in (EnvelopeType.WELCOME, EnvelopeType.TREE_WELCOME)]
    assert [k for k, _ in welcomes] == [EnvelopeType.TREE_WELCOME] * 2
    # each joiner's post holds its own Welcome entry and no tree: smaller than the tree
    assert all(size < len(alice.groups[gid].ratchet_tree()) for _, size in welcomes)
    await bob.send_text(gid, "joined without the tree in my Welcome")
    await eventually(
        lambda: texts(carol, gid) == ["joined without the tree in my Welcome"], WAIT, "delivery"
    )


async def test_stale_tree_blob_is_refused(
    trio: dict[str, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile committer (or anyone swapping the blob) serves the tree of
    the previous epoch, correctly encrypted: the joiner refuses to join."""
    alice, bob = trio["alice"], trio["bob"]
    alice.tree_blob_threshold = 0
    group = await alice.create_group("Stale", suite=MLKEM768X25519_SUITE)
    gid = group.group_id
    stale = alice.groups[gid].ratchet_tree()
    real_encrypt = tree_welcome.encrypt_tree
    real_welcomes = tree_welcome.tree_welcomes
    monkeypatch.setattr(tree_welcome, "encrypt_tree", lambda key, _tree: real_encrypt(key, stale))
    monkeypatch.setattr(
        conversations,
        "tree_welcomes",
        lambda suite, result, *rest: real_welcomes(
            suite, dataclasses.replace(result, ratchet_tree=stale), *rest
        ),
    )
    await alice.add_members(gid, [alice.find_contact("Bob"), alice.find_contact("Carol")])
    await eventually(
        lambda: any("tree hash" in n.text for n in bob.notices),
        WAIT,
        f"bob refuses the tree: {[n.text for n in bob.notices]}",
    )
    assert gid not in bob.groups and bob.conversation(gid) is None


async def test_tree_blob_on_an_outside_server_is_not_fetched(
    trio: dict[str, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TreeWelcome naming a server the joiner does not use is refused
    without contacting it (it would learn the joiner's address)."""
    alice, bob = trio["alice"], trio["bob"]
    alice.tree_blob_threshold = 0
    outside = f"http://127.0.0.1:{free_port()}"
    real_welcomes = tree_welcome.tree_welcomes

    def elsewhere(suite, result, items, refs, digest):  # type: ignore[no-untyped-def]
        moved = tuple(
            ChunkRef(tuple(BlobRef(outside, c.blob_id, c.download_token) for c in r.copies))
            for r in refs
        )
        return real_welcomes(suite, result, items, moved, digest)

    monkeypatch.setattr(conversations, "tree_welcomes", elsewhere)
    group = await alice.create_group("Elsewhere", suite=XWING_SUITE)
    gid = group.group_id
    await alice.add_members(gid, [alice.find_contact("Bob"), alice.find_contact("Carol")])
    await eventually(
        lambda: any("no copy on a relay we use" in n.text for n in bob.notices),
        WAIT,
        "bob refuses the outside server",
    )
    assert gid not in bob.groups


def test_tree_welcome_codec_and_tampering() -> None:
    """TreeWelcome round-trips; a chunk count that does not match the size,
    a flipped ciphertext byte or a wrong key is refused (no I/O here)."""
    key, tree = bytes(range(32)), bytes(300_000)  # two chunks
    chunks, digest = encrypt_tree(key, tree)
    ref = ChunkRef((BlobRef("https://relay.example", bytes(16), b"t"),))
    body = TreeWelcome(b"welcome", len(tree), (ref, ref), digest)
    assert TreeWelcome.from_bytes(body.to_bytes()) == body
    assert decrypt_tree(key, body, chunks) == tree
    bad = TreeWelcome(b"welcome", 1, (ref,), digest).to_bytes()
    with pytest.raises(DecodeError, match="number of chunks"):
        # opaque welcome<V> is 1 + 7 bytes; tree_size (uint32) follows
        TreeWelcome.from_bytes(bad[:8] + len(tree).to_bytes(4, "big") + bad[12:])
    flipped = (bytes([chunks[0][0] ^ 1]) + chunks[0][1:], chunks[1])
    with pytest.raises(CryptoError):
        decrypt_tree(key, body, flipped)
    with pytest.raises(CryptoError):
        decrypt_tree(bytes(32), replace_digest(body, digest), chunks)


def replace_digest(body: TreeWelcome, digest: bytes) -> TreeWelcome:
    return dataclasses.replace(body, ciphertext_digest=digest)
