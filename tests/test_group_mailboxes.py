"""Group mailboxes against hostile and removed members, on real relay
processes: an ack never deletes a group mailbox's messages for the other
members (SPEC.md §7.7 shared logs), and a removal moves the group to new
mailboxes the removed member never learns (SPEC.md §8.3)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.engine import Engine
from client.relay_client import RelayClient
from protocol.mls.framing import unprotect_private
from protocol.mls.group import Group
from protocol.mls.messages import MLSMessage
from tests.client_support import RelayProcess, befriend, eventually, make_engine

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def crew(
    tmp_path: Path, relays: list[RelayProcess]
) -> AsyncIterator[tuple[list[Engine], bytes]]:
    """Alice, Bob and Carol in a group "crew" on two relay processes."""
    urls = [r.url for r in relays]
    engines = [make_engine(tmp_path / n, n.capitalize(), urls) for n in ("alice", "bob", "carol")]
    for e in engines:
        await e.connect()
    alice, bob, carol = engines
    await befriend(alice, bob)
    await befriend(alice, carol)
    group = await alice.create_group("crew")
    await alice.add_members(
        group.group_id, [alice.find_contact("Bob"), alice.find_contact("Carol")]
    )
    for e in (bob, carol):
        await eventually(lambda e=e: any(c.name == "crew" for c in e.conversations()))
    yield engines, group.group_id
    for e in engines:
        await e.close()


def texts(engine: Engine, conv_id: bytes) -> list[str]:
    return [e.text for e in engine.history(conv_id)]


async def test_a_members_ack_does_not_delete_for_the_others(
    tmp_path: Path, crew: tuple[list[Engine], bytes]
) -> None:
    (alice, bob, carol), gid = crew
    bob_gid = bob.find_conversation("crew").group_id
    carol_gid = carol.find_conversation("crew").group_id
    await bob.close()  # Bob is offline while the others talk
    await alice.send_text(gid, "while bob sleeps 1")
    await alice.send_text(gid, "while bob sleeps 2")
    await eventually(lambda: len(texts(carol, carol_gid)) == 2, what="carol reads both")
    # Carol (hostile, or removed later) acks every group mailbox up to the top.
    for ref in carol._meta(carol_gid).mailboxes:
        await carol._relay(ref.relay_url).ack(ref.mailbox_id, 1 << 62)
    bob = Engine.open(tmp_path / "bob", b"test passphrase")
    try:
        await bob.connect()
        await eventually(
            lambda: texts(bob, bob_gid) == ["while bob sleeps 1", "while bob sleeps 2"],
            what="bob to fetch what carol acked",
        )
    finally:
        await bob.close()


async def test_removal_moves_the_group_to_mailboxes_the_removed_member_never_learns(
    crew: tuple[list[Engine], bytes],
) -> None:
    (alice, bob, carol), gid = crew
    bob_gid = bob.find_conversation("crew").group_id
    carol_gid = carol.find_conversation("crew").group_id
    old = carol._meta(carol_gid).mailboxes
    # Carol keeps her pre-removal state and every handshake she is served.
    before_removal = Group.from_bytes(carol.groups[carol_gid].to_bytes())
    served: list[bytes] = []
    process = carol._process

    async def spy_process(conv_id: bytes, payload: bytes) -> None:
        served.append(payload)
        await process(conv_id, payload)

    carol._process = spy_process  # type: ignore[method-assign]
    await alice.remove_member(gid, carol.identity.signature_pub)
    await eventually(lambda: not carol.groups[carol_gid].active, what="carol sees her removal")
    await eventually(lambda: len(bob.members(bob_gid)) == 2, what="bob sees the removal")
    new = alice._meta(gid).mailboxes
    assert [r.relay_url for r in new] == [r.relay_url for r in old]
    assert not {r.mailbox_id for r in new} & {r.mailbox_id for r in old}
    assert not {r.read_seed for r in new} & {r.read_seed for r in old}
    await eventually(
        lambda: [r.mailbox_id for r in bob._meta(bob_gid).mailboxes] == [r.mailbox_id for r in new],
        what="bob moves to the new mailboxes",
    )
    # Carol can decrypt every handshake of the epochs she was in, the removing
    # commit too: the new mailboxes must be in none of them.
    opened = 0
    for payload in served:
        pm = MLSMessage.from_bytes(payload).private_message
        if pm is None or pm.content_type == 1 or pm.epoch != before_removal.epoch:
            continue
        st = before_removal.state
        content = unprotect_private(
            st.suite, pm, st.context, st.secret_tree.copy(), st.sender_data_secret
        ).content.content
        assert content.commit is not None
        plain = content.commit.to_bytes()
        opened += 1
        for ref in new:
            assert ref.mailbox_id not in plain and ref.read_seed not in plain
    assert opened >= 1, "carol was served the removing commit"

    # Carol, with every key she ever held, watches the old mailboxes.
    seen: list[tuple[bytes, int]] = []

    async def on_deliver(url: str, mailbox_id: bytes, seq: int, env: bytes) -> None:
        seen.append((mailbox_id, seq))

    spies = [RelayClient(ref.relay_url, on_deliver) for ref in old]
    try:
        for spy, ref in zip(spies, old, strict=True):
            spy.start()
            await spy.subscribe(ref.mailbox_id, ref.read_seed, 0)
        await asyncio.sleep(1.0)
        before = len(seen)
        await bob.send_text(bob_gid, "after carol left")
        await eventually(lambda: "after carol left" in texts(alice, gid), what="alice reads it")
        await asyncio.sleep(1.5)
        assert len(seen) == before, "the removed member still receives the group's traffic"
        assert "after carol left" not in texts(carol, carol_gid)
        # a member who did not commit the move follows it to the new mailboxes
        await alice.send_text(gid, "alice, after the move")
        await eventually(lambda: "alice, after the move" in texts(bob, bob_gid), what="bob")
        assert len(seen) == before
        # the new mailboxes are shared logs too: none of this deletes anything
        for ref in new:
            await alice._relay(ref.relay_url).ack(ref.mailbox_id, 1 << 62)
    finally:
        for spy in spies:
            await spy.close()
