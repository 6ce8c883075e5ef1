"""End-to-end: real samizdat-relay processes on 127.0.0.1, several client
homes, the whole client engine (BRIEF §2 failures answered one by one)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from client.engine import Engine
from client.store import Store
from protocol.app.messages import File
from tests.client_support import RelayProcess, befriend, eventually, make_engine, scan_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    procs = [RelayProcess(tmp_path / f"relay{i}").start() for i in range(3)]
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
async def world(tmp_path: Path, relays: list[RelayProcess]) -> AsyncIterator[dict[str, Engine]]:
    urls = [r.url for r in relays[:2]]
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


def conv_named(engine: Engine, name: str) -> bytes:
    return engine.find_conversation(name).group_id


async def test_invite_accept_and_message(world: dict[str, Engine]) -> None:
    alice, bob = world["alice"], world["bob"]
    conv = await befriend(alice, bob)
    mid = await bob.send_text(conv, "hello alice")
    alice_conv = conv_named(alice, "Bob")
    await eventually(lambda: texts(alice, alice_conv) == ["hello alice"], what="delivery")
    await eventually(lambda: len(bob.status(mid).delivered_to) == 1, what="receipt")  # type: ignore[union-attr]
    status = bob.status(mid)
    assert status is not None and len(status.relays_stored) == 2


async def test_group_of_five_photo_and_article(world: dict[str, Engine], tmp_path: Path) -> None:
    alice = world["alice"]
    others = [world[n] for n in ("bob", "carol", "dave", "erin")]
    for other in others:
        await befriend(alice, other)
    group = await alice.create_group("Samizdat readers")
    await alice.add_members(group.group_id, [alice.find_contact(o.identity.name) for o in others])
    for other in others:
        await eventually(
            lambda o=other: any(c.name == "Samizdat readers" for c in o.conversations()),
            what=f"{other.identity.name} joined",
        )
    await alice.send_text(group.group_id, "welcome everyone")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(os.urandom(600_000))  # three chunks
    await alice.send_file(group.group_id, photo)
    article = "# On censorship\n\n" + ("Words that must not be silenced. " * 8000)
    await alice.send_article(group.group_id, "On censorship", article)
    for other in others:
        gid = conv_named(other, "Samizdat readers")
        await eventually(
            lambda o=other, g=gid: len(o.history(g)) == 3, what=f"{other.identity.name} history"
        )
        entries = other.history(gid)
        assert entries[0].text == "welcome everyone"
        body = File.from_bytes(bytes.fromhex(entries[1].file["descriptor"]))
        dest = tmp_path / f"{other.identity.name}.jpg"
        await other.fetch_file(gid, body, dest)
        assert dest.read_bytes() == photo.read_bytes()
        assert entries[2].kind == "article" and entries[2].text == article


async def test_relay_killed_mid_conversation(
    world: dict[str, Engine], relays: list[RelayProcess]
) -> None:
    alice, bob = world["alice"], world["bob"]
    conv = await befriend(alice, bob)
    await bob.send_text(conv, "before")
    alice_conv = conv_named(alice, "Bob")
    await eventually(lambda: texts(alice, alice_conv) == ["before"])
    relays[0].kill()
    await asyncio.sleep(0.3)
    for i in range(5):
        await bob.send_text(conv, f"after {i}")
    await eventually(lambda: len(texts(alice, alice_conv)) == 6, what="delivery via relay 2")
    assert not alice.missing(alice.find_conversation("Bob"))


async def test_relay_move_with_old_relay_dead(
    world: dict[str, Engine], relays: list[RelayProcess]
) -> None:
    alice, bob, carol = world["alice"], world["bob"], world["carol"]
    await befriend(alice, bob)
    await befriend(alice, carol)
    old, new = relays[0].url, relays[2].url
    relays[0].kill()
    await alice.move_relay(old, new)
    assert old not in alice.identity.relays and new in alice.identity.relays
    for other in (bob, carol):
        await eventually(
            lambda o=other: any(
                new in [i.relay_url for i in c.inboxes]
                and old not in [i.relay_url for i in c.inboxes]
                for c in o.contacts()
                if c.identity_key == alice.identity.signature_pub
            ),
            what=f"{other.identity.name} learns the new inbox",
        )
        gid = conv_named(other, "Alice")
        await eventually(lambda o=other, g=gid: new in o._meta(g).relay_urls, what="new relay list")
    # messages keep flowing through the moved conversation
    gid = conv_named(bob, "Alice")
    await bob.send_text(gid, "still here")
    await eventually(lambda: "still here" in texts(alice, conv_named(alice, "Bob")))


async def test_export_import_continues(world: dict[str, Engine], tmp_path: Path) -> None:
    alice, bob = world["alice"], world["bob"]
    conv = await befriend(alice, bob)
    await bob.send_text(conv, "first")
    await eventually(lambda: texts(alice, conv_named(alice, "Bob")) == ["first"])
    backup = tmp_path / "alice.backup"
    alice.export_backup(backup, b"backup words")
    await alice.close()
    Store.import_backup(
        backup, b"backup words", tmp_path / "alice2", b"new pass", fast_kdf=True
    ).close()
    restored = Engine.open(tmp_path / "alice2", b"new pass")
    world["alice"] = restored
    await restored.connect()
    assert texts(restored, conv_named(restored, "Bob")) == ["first"]
    await bob.send_text(conv, "second")
    await eventually(lambda: texts(restored, conv_named(restored, "Bob")) == ["first", "second"])
    await restored.send_text(conv_named(restored, "Bob"), "reply from new device")
    await eventually(lambda: "reply from new device" in texts(bob, conv))


async def test_dropped_message_shows_missing_then_heals(world: dict[str, Engine]) -> None:
    alice, bob = world["alice"], world["bob"]
    conv = await befriend(alice, bob)
    alice_conv = conv_named(alice, "Bob")
    relay_a, relay_b = alice.identity.relays
    # alice stops reading relay B; relay A "drops" bob's second message
    await alice.relays[relay_b].close()
    del alice.relays[relay_b]
    await bob.send_text(conv, "one")
    original = bob._post_item

    async def drop_on_a(item):  # type: ignore[no-untyped-def]
        if item.relay_url == relay_a and item.message_id and "two" not in dropped:
            dropped.add("two")
            bob.store.delete("outbox", item.msg_id + item.mailbox_id)
            return True
        return await original(item)

    dropped: set[str] = set()
    bob._post_item = drop_on_a  # type: ignore[method-assign]
    await bob.send_text(conv, "two")
    bob._post_item = original  # type: ignore[method-assign]
    await bob.send_text(conv, "three")
    await eventually(lambda: texts(alice, alice_conv) == ["one", "three"])
    missing = alice.missing(alice.find_conversation("Bob"))
    assert list(missing.values()) == [1]
    # reading relay B again heals the gap
    mb = next(m for m in alice._mailboxes.values() if m.relay_url == relay_b and m.conv_id)
    await alice._subscribe(mb)
    await eventually(lambda: sorted(texts(alice, alice_conv)) == ["one", "three", "two"])
    assert not alice.missing(alice.find_conversation("Bob"))


async def test_no_plaintext_on_relays_or_disk(
    world: dict[str, Engine], tmp_path: Path, relays: list[RelayProcess]
) -> None:
    alice, bob = world["alice"], world["bob"]
    canaries = [b"CANARY-message-7f3a", b"CANARY-article-91bc", b"CANARY-file-2d4e"]
    conv = await befriend(alice, bob)
    await bob.send_text(conv, canaries[0].decode())
    await bob.send_article(conv, "t", canaries[1].decode() * 3)
    f = tmp_path / "secret.txt"
    f.write_bytes(canaries[2] * 1000)
    await bob.send_file(conv, f)
    await eventually(lambda: len(alice.history(conv_named(alice, "Bob"))) == 3)
    f.unlink()
    names = [b"Alice", b"Bob"]
    keys = [alice.identity.signature_priv, bob.identity.signature_priv]
    for engine in world.values():
        await engine.close()
    world.clear()
    homes = [tmp_path / "alice", tmp_path / "bob"]
    relay_dirs = [r.data_dir for r in relays]
    assert scan_for(homes + relay_dirs, canaries + keys) == []
    assert scan_for(relay_dirs, names) == []
