"""Client features beyond the basic flow: disappearing messages, removal
locking a member out of the mailboxes, leaving, key-change warnings,
KeyPackage replenishment, SOCKS5."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from client.engine import Engine
from tests.client_support import RelayProcess, befriend, eventually, make_engine

pytestmark = pytest.mark.timeout(180)


def texts(engine: Engine, conv_id: bytes) -> list[str]:
    return [e.text for e in engine.history(conv_id)]


async def test_disappearing_messages(trio: list[Engine]) -> None:
    alice, bob, _ = trio
    conv = await befriend(alice, bob)
    await bob.set_disappearing(conv, 1000)
    alice_conv = alice.find_conversation("Bob").group_id
    await eventually(lambda: alice.conversation(alice_conv).disappearing_ms == 1000)  # type: ignore[union-attr]
    await bob.send_text(conv, "this will vanish")
    await eventually(lambda: texts(alice, alice_conv) == ["this will vanish"])
    await asyncio.sleep(1.2)
    assert texts(alice, alice_conv) == [] and texts(bob, conv) == []


async def test_removed_member_is_locked_out(trio: list[Engine]) -> None:
    alice, bob, carol = trio
    await befriend(alice, bob)
    await befriend(alice, carol)
    group = await alice.create_group("crew")
    await alice.add_members(
        group.group_id, [alice.find_contact("Bob"), alice.find_contact("Carol")]
    )
    for e in (bob, carol):
        await eventually(lambda e=e: any(c.name == "crew" for c in e.conversations()))
    bob_gid = bob.find_conversation("crew").group_id
    carol_gid = carol.find_conversation("crew").group_id
    await alice.remove_member(group.group_id, carol.identity.signature_pub)
    await eventually(lambda: not carol.groups[carol_gid].active, what="carol sees her removal")
    await eventually(lambda: len(bob.members(bob_gid)) == 2, what="bob sees the removal")
    await bob.send_text(bob_gid, "after carol left")
    await eventually(lambda: "after carol left" in texts(alice, group.group_id))
    assert "after carol left" not in texts(carol, carol_gid)
    # the mailboxes' write keys were rotated: carol's old seed no longer posts
    old = carol._meta(carol_gid).mailboxes[0]
    from protocol.relay_frames import RelayError

    with pytest.raises(RelayError):
        await carol._relay(old.relay_url).post(
            old.mailbox_id, old.write_seed, b"\x01" * 16, b"\x00" * 256
        )


async def test_leave_is_committed_by_the_others(trio: list[Engine]) -> None:
    alice, bob, carol = trio
    await befriend(alice, bob)
    await befriend(alice, carol)
    group = await alice.create_group("book club")
    await alice.add_members(
        group.group_id, [alice.find_contact("Bob"), alice.find_contact("Carol")]
    )
    await eventually(lambda: any(c.name == "book club" for c in carol.conversations()))
    await carol.leave(carol.find_conversation("book club").group_id)
    await eventually(lambda: len(alice.members(group.group_id)) == 2, what="leave committed")


async def test_changed_key_is_a_loud_warning(trio: list[Engine]) -> None:
    alice, bob, _ = trio
    conv = await befriend(alice, bob)
    alice_conv = alice.find_conversation("Bob").group_id
    contact = alice.find_contact("Bob")
    alice.verify(contact)
    # The contact record says one key, Bob's leaf in the 1:1 group carries
    # another: what a hijacked or re-installed account looks like.
    record = alice.conversation(alice_conv)
    assert record is not None
    swapped = type(contact).from_json(contact.to_json())
    swapped.identity_key = b"\x42" * 32
    alice.store.delete("contacts", contact.identity_key)
    alice.store.put("contacts", swapped.identity_key, swapped.to_json())
    alice._check_direct_peer(record, alice.groups[alice_conv])
    warned = alice.contact(b"\x42" * 32)
    assert warned is not None and warned.key_changed and not warned.verified
    assert any(n.warning and "SAFETY NUMBER" in n.text for n in alice.notices)
    del conv


async def test_key_packages_let_contacts_add_us_offline(trio: list[Engine]) -> None:
    alice, bob, carol = trio
    await befriend(alice, bob)
    await befriend(alice, carol)
    before = len(alice.find_contact("Bob").key_packages)
    assert before >= 1
    await bob.close()  # bob is offline
    group = await alice.create_group("offline add")
    await alice.add_members(group.group_id, [alice.find_contact("Bob")])
    assert len(alice.find_contact("Bob").key_packages) == before - 1
    assert len(alice.members(group.group_id)) == 2


async def _socks5_server(seen: list[int]) -> tuple[asyncio.AbstractServer, int]:
    """A minimal SOCKS5 (no auth, CONNECT) proxy on 127.0.0.1, for the test."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, n = await reader.readexactly(2)
        await reader.readexactly(n)
        writer.write(b"\x05\x00")
        _, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = ".".join(str(b) for b in await reader.readexactly(4))
        elif atyp == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            writer.close()
            return
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if cmd != 1 or host not in ("127.0.0.1", "localhost"):
            writer.write(b"\x05\x02\x00\x01" + bytes(6))
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        seen.append(port)
        writer.write(b"\x05\x00\x00\x01" + bytes(4) + struct.pack("!H", port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_all_relay_traffic_through_socks5(tmp_path: Path, relays: list[RelayProcess]) -> None:
    seen: list[int] = []
    server, port = await _socks5_server(seen)
    proxy = f"socks5://127.0.0.1:{port}"
    urls = [relays[0].url]
    alice = make_engine(tmp_path / "alice", "Alice", urls)
    bob = make_engine(tmp_path / "bob", "Bob", urls)
    alice.proxy = bob.proxy = proxy
    try:
        await alice.connect()
        await bob.connect()
        conv = await befriend(alice, bob)
        await bob.send_text(conv, "via tor")
        await eventually(
            lambda: texts(alice, alice.find_conversation("Bob").group_id) == ["via tor"]
        )
        assert seen and set(seen) == {relays[0].port}
    finally:
        await alice.close()
        await bob.close()
        server.close()
        await server.wait_closed()


async def test_withholding_ordering_relay_is_bypassed(trio: list[Engine]) -> None:
    """A relay that stays connected but withholds commits must not stall the
    conversation: after the hold timeout ordering fails over, loudly."""
    alice, bob, carol = trio
    await befriend(alice, bob)
    await befriend(alice, carol)
    group = await alice.create_group("stubborn")
    await alice.add_members(
        group.group_id, [alice.find_contact("Bob"), alice.find_contact("Carol")]
    )
    await eventually(lambda: any(c.name == "stubborn" for c in bob.conversations()))
    # only admins remove others (SPEC §8.3): alice makes bob one
    await alice.set_admin(group.group_id, bob.identity.signature_pub)
    await eventually(lambda: bob.is_admin(group.group_id), what="bob sees he is an admin")
    orderer = alice._meta(group.group_id).mailboxes[0]
    alice.hold_timeout = 1.0
    original = alice._on_deliver

    async def withhold(url: str, mailbox_id: bytes, seq: int, sealed: bytes) -> None:
        if mailbox_id == orderer.mailbox_id:
            return  # the orderer "delivers" nothing of this conversation to alice
        await original(url, mailbox_id, seq, sealed)

    for client in alice.relays.values():
        client._on_deliver = withhold  # type: ignore[method-assign]
    bob_gid = bob.find_conversation("stubborn").group_id
    await bob.remove_member(bob_gid, carol.identity.signature_pub)
    await eventually(
        lambda: len(alice.members(group.group_id)) == 2,
        timeout=20,
        what="alice applies the commit via the second relay",
    )
    assert any(n.warning and "withheld" in n.text for n in alice.notices)


async def test_quota_refusal_is_queued_retried_and_reported_once(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "small", limits={"mailbox_max_messages": 12}).start()
    alice = make_engine(tmp_path / "alice", "Alice", [relay.url])
    bob = make_engine(tmp_path / "bob", "Bob", [relay.url])
    try:
        await alice.connect()
        await bob.connect()
        conv = await befriend(alice, bob)
        for i in range(10):
            await bob.send_text(conv, f"flood {i}")
        await eventually(lambda: len(bob.outbox()) > 0, what="refused messages stay queued")
        refusals = [n for n in bob.notices if "quota" in n.text]
        assert len(refusals) == 1  # one notice, not one per message
        assert relay.url in bob._retry_tasks or relay.url in bob._retry_delay
    finally:
        await alice.close()
        await bob.close()
        relay.stop()


async def test_replayed_held_handshake_is_held_once(trio: list[Engine]) -> None:
    """A relay replaying a handshake that waits for the ordering relay must
    not grow the hold list."""
    alice, bob, _ = trio
    conv = await befriend(alice, bob)
    alice_conv = alice.find_conversation("Bob").group_id
    commit = bob.groups[conv].commit(os.urandom, int(time.time()), public=True).commit
    bob.groups[conv].clear_pending_commit()
    meta = alice._meta(alice_conv)
    other = next(u for u in meta.relay_urls if u != alice._ordering_url(meta, alice_conv))
    for seq in range(50):
        await alice._on_mls(alice_conv, other, seq, commit, b"d" * 16)
    assert len(alice._held[alice_conv]) == 1


async def test_out_of_range_sequence_drops_the_connection_not_the_relay() -> None:
    """seq 2^64-1 has no successor a Subscribe could carry: the client drops
    that connection (and reconnects) instead of storing an unusable cursor."""
    from client.relay_client import RelayClient
    from protocol.relay_frames import MAX_SEQ, PROTOCOL_VERSION, Challenge, Deliver

    delivered: list[int] = []

    async def on_deliver(url: str, mailbox: bytes, seq: int, env: bytes) -> None:
        delivered.append(seq)

    client = RelayClient("http://127.0.0.1:1", on_deliver)
    mailbox = b"m" * 32
    await client.subscribe(mailbox, b"r" * 32, 0)
    frames = [
        Challenge(PROTOCOL_VERSION, b"n" * 32, 65536).encode(),
        Deliver(mailbox, 5, b"\x00" * 256).encode(),
        Deliver(mailbox, MAX_SEQ, b"\x00" * 256).encode(),
        Deliver(mailbox, 6, b"\x00" * 256).encode(),
    ]

    class FakeSocket:
        def __aiter__(self):  # type: ignore[no-untyped-def]
            return self

        async def __anext__(self):  # type: ignore[no-untyped-def]
            if not frames:
                raise StopAsyncIteration
            return SimpleNamespace(type=aiohttp.WSMsgType.BINARY, data=frames.pop(0))

    await client._read(FakeSocket())  # type: ignore[arg-type]
    assert client.next_seq(mailbox) == 6  # seq 5 taken, MAX_SEQ refused, reading stopped
    assert len(frames) == 1  # the frame after the hostile one was never read
