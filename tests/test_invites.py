"""Invites are not a permanent flood key (GitHub issue 11, item 2).

Real ``samizdat-relay`` processes and real engines.  The attacker is a
censor holding an invite link: it posts with the link's write capability
through its own relay connection, as any stranger could."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from client.engine import Engine, EngineError
from client.invites import read_invite_link
from client.model import ContactInbox
from client.relay_client import RelayClient
from harness.scenario.relays import LocalRelay
from protocol import relay_frames
from protocol.app.envelope import EnvelopeType, split
from protocol.app.invite import Invite
from protocol.app.sealed import MAX_SEALED_PLAINTEXT, seal, seal_key
from protocol.relay_frames import (
    BadSignature,
    DeleteMailbox,
    QuotaExceeded,
    UnknownMailbox,
    decode_client_frame,
)
from tests.client_support import RelayProcess, eventually, make_engine

pytestmark = pytest.mark.timeout(180)
PASSPHRASE = b"test passphrase"
QUOTA = 300  # messages per mailbox on the test relay: the flood fills one


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path / "relay", limits={"mailbox_max_messages": QUOTA}).start()
    yield proc
    proc.stop()


@pytest.fixture
async def people(tmp_path: Path, relay: RelayProcess) -> AsyncIterator[dict[str, Engine]]:
    engines = {
        name: make_engine(tmp_path / name, name.capitalize(), [relay.url])
        for name in ("alice", "bob", "carol")
    }
    for engine in engines.values():
        await engine.connect()
    yield engines
    for engine in engines.values():
        if not engine.closed:
            await engine.close()


async def _ignore(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
    return None


# Invites a censor read from a short link's relay while they were live: the
# link names a stored invite that is deleted when the invite ends, so a censor
# keeps what it read to try the capability later (SPEC.md §8.5).
_captured: dict[str, Invite] = {}


async def capture(link: str, now_ms: int | None = None) -> Invite:
    """What a censor holding ``link`` reads while the invite is live."""
    invite = await read_invite_link(link, now_ms or int(time.time() * 1000))
    _captured[link] = invite
    return invite


async def post_with_link(
    link: str, count: int = 1, batch: int = 50, *, now_ms: int | None = None
) -> list[object]:
    """Post ``count`` sealed junk 'welcome' envelopes with the link's write
    capability (what a censor holding the link can do); the relay's answer
    (a seq or the exception) for each."""
    invite = _captured.get(link) or await capture(link, now_ms)
    inbox = invite.inboxes[0]
    client = RelayClient(inbox.relay_url, _ignore)
    client.start()
    results: list[object] = []
    try:
        for start in range(0, count, batch):
            posts = []
            for _ in range(min(batch, count - start)):
                piece = split(
                    EnvelopeType.WELCOME, os.urandom(40), os.urandom, max_size=MAX_SEALED_PLAINTEXT
                )[0]
                sealed = seal(seal_key(inbox.write_seed), inbox.mailbox_id, piece, os.urandom)
                msg_id = os.urandom(16)
                posts.append(client.post(inbox.mailbox_id, inbox.write_seed, msg_id, sealed))
            results.extend(await asyncio.gather(*posts, return_exceptions=True))
    finally:
        await client.close()
    return results


async def test_revoked_invite_is_refused_by_the_relay(people: dict[str, Engine]) -> None:
    alice, bob = people["alice"], people["bob"]
    record, link = await alice.create_invite()
    assert all(isinstance(r, int) for r in await post_with_link(link))  # active: posts land
    revoked = await alice.revoke_invite(record.invite_id.hex()[:8])
    assert revoked is not None and revoked.state == "revoked" and revoked.deleted
    # the link's capability is dead on the relay: its mailbox is gone
    (refused,) = await post_with_link(link)
    assert isinstance(refused, UnknownMailbox)
    # and whoever accepts the link gets one clear error, nothing is created
    with pytest.raises(EngineError, match="no longer valid"):
        await bob.accept(link)
    assert bob.conversations() == [] and alice.contacts() == []
    [listed] = alice.invites()
    assert listed.current_state(int(time.time() * 1000)) == "revoked"


async def test_once_invite_refuses_a_second_acceptance(people: dict[str, Engine]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    link = await alice.invite()  # --once is the default
    await capture(link)
    await bob.accept(link)
    await eventually(
        lambda: [c.name for c in alice.contacts()] == ["Bob"], what="Alice to accept Bob"
    )
    await eventually(lambda: alice.invites()[0].deleted, what="the used invite to be deleted")
    [record] = alice.invites()
    assert record.state == "used" and record.uses == 1
    with pytest.raises(EngineError, match="no longer valid"):
        await carol.accept(link)
    (refused,) = await post_with_link(link)
    assert isinstance(refused, UnknownMailbox)
    await asyncio.sleep(1.0)
    assert [c.name for c in alice.contacts()] == ["Bob"]


async def test_once_invite_accepted_twice_while_offline_opens_one_contact(
    tmp_path: Path, people: dict[str, Engine]
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    link = await alice.invite()
    await alice.close()  # both requests wait on the relay
    await bob.accept(link)
    await carol.accept(link)
    alice = people["alice"] = Engine.open(tmp_path / "alice", PASSPHRASE)
    await alice.connect()
    await eventually(lambda: len(alice.contacts()) >= 1, what="the first request")
    await eventually(lambda: alice.invites()[0].deleted, what="the used invite to be deleted")
    await asyncio.sleep(1.0)
    assert len(alice.contacts()) == 1  # the second request was ignored
    assert alice.invites()[0].uses == 1


async def test_expired_invite_is_deleted_whatever_the_acceptor_clock(
    people: dict[str, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = people["alice"], people["bob"]
    record, link = await alice.create_invite(lifetime_ms=2000)
    assert all(isinstance(r, int) for r in await post_with_link(link))
    await asyncio.sleep(2.5)
    await eventually(lambda: alice.invites()[0].deleted, what="the expiry timer")
    assert alice.invites()[0].current_state(int(time.time() * 1000)) == "expired"
    # a poster whose clock still calls the link valid is refused by the relay
    monkeypatch.setattr("client.engine.now_ms", lambda: record.created_ms)
    with pytest.raises(EngineError, match="no longer valid"):
        await bob.accept(link)
    (refused,) = await post_with_link(link, now_ms=record.created_ms)
    assert isinstance(refused, UnknownMailbox)


async def test_invite_flood_does_not_delay_a_contact(
    tmp_path: Path, people: dict[str, Engine]
) -> None:
    alice, bob = people["alice"], people["bob"]
    link = await alice.invite(uses=2)  # a censor got hold of it too
    await bob.accept(link)
    await eventually(lambda: bool(alice.contacts()), what="Alice to accept Bob")
    await eventually(
        lambda: bool(bob.contacts()) and bool(bob.contacts()[0].key_packages),
        what="Bob to hold Alice's KeyPackages",
    )
    await alice.close()  # Alice's phone is off while the censor floods
    results = await post_with_link(link, QUOTA)
    assert sum(isinstance(r, int) for r in results) >= QUOTA - 5
    assert isinstance((await post_with_link(link))[0], QuotaExceeded)  # the invite is full
    # Bob adds Alice to a group: the Welcome goes to the inbox Alice gave
    # Bob alone, which the flood did not touch
    group = await bob.create_group("after the flood")
    await bob.add_members(group.group_id, [bob.find_contact("Alice")])
    alice = people["alice"] = Engine.open(tmp_path / "alice", PASSPHRASE)
    start = time.monotonic()
    await alice.connect()
    await eventually(
        lambda: group.group_id in alice.groups, timeout=20, what="Bob's Welcome after the flood"
    )
    assert time.monotonic() - start < 10
    await bob.send_text(group.group_id, "still reaching you")
    await eventually(
        lambda: any(e.text == "still reaching you" for e in alice.history(group.group_id)),
        timeout=20,
        what="Bob's text",
    )
    assert len(alice.contacts()) == 1  # 300 junk requests opened nothing


async def test_relay_deletes_a_mailbox_only_for_its_read_key(relay: RelayProcess) -> None:
    client = RelayClient(relay.url, _ignore)
    client.start()
    try:
        mailbox, read_seed, write_seed = os.urandom(32), os.urandom(32), os.urandom(32)
        await client.create_mailbox(mailbox, read_seed, write_seed)
        await client.post(mailbox, write_seed, os.urandom(16), bytes(256))
        with pytest.raises(BadSignature):  # a writer (an invitee) cannot delete it
            await client.delete_mailbox(mailbox, write_seed)
        await client.post(mailbox, write_seed, os.urandom(16), bytes(256))
        await client.delete_mailbox(mailbox, read_seed)
        with pytest.raises(UnknownMailbox):
            await client.post(mailbox, write_seed, os.urandom(16), bytes(256))
        with pytest.raises(UnknownMailbox):
            await client.prove_write(mailbox, write_seed)
    finally:
        await client.close()


def test_delete_mailbox_frame_wire_form() -> None:
    frame = DeleteMailbox(7, b"\x01" * 32, b"\x02" * 64)
    raw = frame.encode()
    assert raw == bytes([0x10]) + (7).to_bytes(4, "big") + b"\x01" * 32 + b"\x02" * 64
    assert decode_client_frame(raw) == frame


async def test_old_contacts_migrate_and_the_legacy_inbox_can_be_closed(
    tmp_path: Path, people: dict[str, Engine]
) -> None:
    alice, bob = people["alice"], people["bob"]
    await bob.accept(await alice.invite())
    await eventually(
        lambda: bool(bob.contacts()) and bool(bob.contacts()[0].my_inboxes),
        what="Bob's contact record",
    )
    await eventually(lambda: bool(alice.contacts()), what="Alice's contact record")
    # Alice's handling of the request is over (she gave Bob an inbox and he
    # has her KeyPackages): the edits below must not race with it
    await eventually(
        lambda: bool(alice.contacts()[0].my_inboxes) and bool(bob.contacts()[0].key_packages),
        what="Alice's introduction",
    )
    # Make it a contact of an older version: Alice gave Bob her identity
    # inbox, whose write seed is also in every link she made back then.
    legacy = alice.identity.inboxes[0]
    alice.identity.inbox_private = False  # as stored by an older version
    alice.save_identity()
    contact = alice.contacts()[0]
    contact.my_inboxes = []
    alice._save_contact(contact)
    await alice.close()
    old_bob_view = bob.contacts()[0]
    old_bob_view.inboxes = [ContactInbox(legacy.relay_url, legacy.mailbox_id, legacy.write_seed)]
    bob._save_contact(old_bob_view)
    alice = people["alice"] = Engine.open(tmp_path / "alice", PASSPHRASE)
    await alice.connect()  # migration: Bob gets an inbox of his own
    await eventually(
        lambda: (
            bob.contacts()[0].inboxes
            and all(i.mailbox_id != legacy.mailbox_id for i in bob.contacts()[0].inboxes)
        ),
        timeout=20,
        what="Bob to learn his own inbox",
    )
    assert alice.legacy_inbox_relays() == [legacy.relay_url]
    assert await alice.revoke_invite("legacy") is None
    assert alice.identity.inboxes == [] and alice.legacy_inbox_relays() == []
    with pytest.raises(EngineError, match="no legacy inbox"):
        await alice.revoke_invite("legacy")
    # an old link's capability is now refused by the relay
    client = RelayClient(legacy.relay_url, _ignore)
    client.start()
    try:
        with pytest.raises(UnknownMailbox):
            await client.prove_write(legacy.mailbox_id, legacy.write_seed)
    finally:
        await client.close()
    # and Bob still reaches Alice: he adds her to a group
    group = await bob.create_group("after the migration")
    await bob.add_members(group.group_id, [bob.find_contact("Alice")])
    await eventually(lambda: group.group_id in alice.groups, timeout=20, what="the Welcome")


async def test_contact_message_arrives_during_an_invite_flood(people: dict[str, Engine]) -> None:
    alice, bob = people["alice"], people["bob"]
    link = await alice.invite(uses=5)
    conv = await bob.accept(link)
    await eventually(lambda: bool(alice.contacts()), what="Alice to accept Bob")
    await eventually(
        lambda: bool(bob.contacts()) and bool(bob.contacts()[0].key_packages),
        what="Bob to hold Alice's KeyPackages",
    )
    alice_conv = alice.contacts()[0].conversation
    flood = asyncio.create_task(post_with_link(link, QUOTA))  # Alice is online meanwhile
    await asyncio.sleep(0.2)
    group = await bob.create_group("during the flood")
    start = time.monotonic()
    await bob.send_text(conv.group_id, "through the flood")
    await bob.add_members(group.group_id, [bob.find_contact("Alice")])
    await eventually(
        lambda: (
            any(e.text == "through the flood" for e in alice.history(alice_conv))
            and group.group_id in alice.groups
        ),
        timeout=20,
        what="Bob's text and Welcome during the flood",
    )
    assert time.monotonic() - start < 10
    await flood
    assert len(alice.contacts()) == 1


async def test_revocation_on_a_relay_without_delete_mailbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a relay from before DeleteMailbox: frame 0x10 is a fatal BadFrame there
    monkeypatch.delitem(relay_frames.CLIENT_FRAMES, DeleteMailbox.TYPE)
    relay = await LocalRelay(tmp_path / "old-relay").start()
    alice = make_engine(tmp_path / "alice", "Alice", [relay.url])
    bob = make_engine(tmp_path / "bob", "Bob", [relay.url])
    try:
        await alice.connect()
        await bob.connect()
        record, link = await alice.create_invite()
        await capture(link)
        revoked = await alice.revoke_invite(record.invite_id.hex())
        assert revoked is not None and revoked.deleted  # the capability is dead
        (refused,) = await post_with_link(link)
        assert isinstance(refused, BadSignature)  # the write key was rotated away
        with pytest.raises(EngineError, match="no longer valid"):
            await bob.accept(link)
    finally:
        await alice.close()
        await bob.close()
        await relay.stop()


async def test_link_holder_rotating_the_key_cannot_keep_an_invite_alive(
    people: dict[str, Engine],
) -> None:
    alice = people["alice"]
    record, link = await alice.create_invite()
    inbox = (await capture(link)).inboxes[0]
    attacker_seed = os.urandom(32)
    client = RelayClient(inbox.relay_url, _ignore)
    client.start()
    try:  # the censor takes the invite's write key for itself
        await client.rotate_write(inbox.mailbox_id, inbox.write_seed, attacker_seed)
        revoked = await alice.revoke_invite(record.invite_id.hex())
        assert revoked is not None and revoked.deleted  # the read key still deletes it
        with pytest.raises(UnknownMailbox):
            await client.prove_write(inbox.mailbox_id, attacker_seed)
    finally:
        await client.close()


async def test_finished_invites_are_forgotten_after_a_while(people: dict[str, Engine]) -> None:
    alice = people["alice"]
    old, _ = await alice.create_invite()
    fresh, _ = await alice.create_invite()
    await alice.revoke_invite(old.invite_id.hex())
    await alice.revoke_invite(fresh.invite_id.hex())
    [record] = [r for r in alice.invites() if r.invite_id == old.invite_id]
    record.created_ms -= 200 * 24 * 3600 * 1000  # ended long ago
    record.expires_at_ms = record.created_ms + 1000
    alice._save_invite(record)
    await alice._retire_finished_invites()
    assert [r.invite_id for r in alice.invites()] == [fresh.invite_id]


async def test_per_contact_inboxes_keep_a_profile_that_arrived_meanwhile(
    people: dict[str, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making a contact's own inbox waits on the relay; a Profile processed
    in that time (the contact's name) must survive.  Saving the record read
    before the wait undid it: Bob then never learned Alice's name (seen as a
    flaky "Bob to see Alice" when both introduced themselves at once)."""
    from tests.client_support import befriend

    alice, bob = people["alice"], people["bob"]
    await befriend(alice, bob)
    stale = alice.contact(bob.identity.signature_pub)
    assert stale is not None and stale.name == "Bob"
    stale.my_inboxes = []  # so a new per-contact inbox is made
    create = RelayClient.create_mailbox

    async def slow_create(self: RelayClient, *args: object, **kwargs: object) -> object:
        fresh = alice.contact(bob.identity.signature_pub)
        assert fresh is not None
        fresh.name = "Bob, renamed meanwhile"
        alice._save_contact(fresh)
        return await create(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(RelayClient, "create_mailbox", slow_create)
    await alice._contact_inboxes(stale)
    after = alice.contact(bob.identity.signature_pub)
    assert after is not None and after.name == "Bob, renamed meanwhile"
    assert after.my_inboxes
