"""A hostile member, or ex-member, against real Engines over real relays.

Each test performs one insider attack (GitHub issue 10) and checks that the
victims' state did not change: RFC 9420 §12.4.3.1 (a Welcome must create a
new group), SPEC §8.3 (who may change the group's extensions or remove
others, enforced on receipt), §8.11 (what is auto-committed, and how a
removal that cannot be fully verified is shown).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import pytest

import protocol.mls.group as mls_group
from client.core import CAPABILITIES, REQUIRED, SUITE, SUITE_ID, rng
from client.engine import Engine, EngineError
from client.model import NS_GROUP_IDS, NS_KEY_PACKAGES
from protocol.app.group_meta import (
    ConversationKind,
    GroupMeta,
    find_group_meta,
    meta_extension,
    new_mailbox_ref,
)
from protocol.errors import SamizdatError
from protocol.mls.group import Group
from protocol.mls.messages import GroupContextExtensions, MLSMessage, Proposal, Remove
from protocol.mls.policy import AllowAll
from protocol.mls.welcome import key_package_ref
from tests.client_support import befriend, eventually

pytestmark = pytest.mark.timeout(180)


async def until(check: Callable[[], bool], what: str = "condition") -> None:
    """``eventually`` with room for a loaded 2-core machine."""
    await eventually(check, timeout=40.0, what=what)


async def crew(creator: Engine, a: Engine, b: Engine, name: str = "crew") -> bytes:
    """``creator`` makes a group with ``a`` and ``b``; all three hold it."""
    await befriend(creator, a)
    await befriend(creator, b)
    group = await creator.create_group(name)
    await creator.add_members(
        group.group_id,
        [creator.find_contact(a.identity.name), creator.find_contact(b.identity.name)],
    )
    for e in (a, b):
        await until(lambda e=e: group.group_id in e.groups, what=f"{e.identity.name} joined")
    trio = (creator, a, b)
    for e in trio:  # names travel in Profile messages: wait until all are known
        await until(
            lambda e=e: all(
                e.display_name(o.identity.signature_pub) == o.identity.name for o in trio
            ),
            what=f"{e.identity.name} knows every member's name",
        )
    return group.group_id


def leaf_of(engine: Engine, gid: bytes, who: Engine) -> int:
    return next(i for i, _, k in engine.groups[gid].members() if k == who.identity.signature_pub)


def snapshot(engine: Engine, gid: bytes) -> tuple[int, bytes, list[bytes], list[str], bool]:
    group = engine.groups[gid]
    return (
        group.epoch,
        group.state.tree.tree_hash(),
        engine.members(gid),
        [e.text for e in engine.history(gid)],
        group.active,
    )


def said(engine: Engine, gid: bytes | None, *words: str) -> bool:
    return any(
        (gid is None or n.conversation == gid) and all(w in n.text for w in words)
        for n in engine.notices
    )


async def test_welcome_reusing_a_known_group_id_is_refused(trio: list[Engine]) -> None:
    """Item 1: an ex-member re-creates the group under its old id and sends a
    Welcome; adopting it would roll the victim's epoch back and hand the
    attacker the victim's next message (RFC 9420 §12.4.3.1)."""
    alice, bob, carol = trio
    gid = await crew(alice, bob, carol)
    await befriend(bob, carol)  # carol holds KeyPackages and an inbox of bob's
    await bob.send_text(gid, "before")
    await until(lambda: "before" in [e.text for e in alice.history(gid)])
    await alice.remove_member(gid, carol.identity.signature_pub)
    await until(lambda: len(bob.members(gid)) == 2, what="bob applies the removal")
    before = snapshot(bob, gid)
    # the genuine way back is a new conversation: the inviter says so at once
    with pytest.raises(EngineError, match="new one"):
        await alice.add_members(gid, [alice.find_contact("Carol")])

    # carol forges a group with the same id, on a mailbox of her own
    contact = carol.contact(bob.identity.signature_pub)
    assert contact is not None and contact.key_packages
    kp = contact.key_packages.pop(0)
    meta = GroupMeta("crew", (new_mailbox_ref(carol.identity.relays[0], rng),), 0)
    await carol._create_mailboxes(meta.mailboxes)
    evil = Group.create(
        SUITE_ID,
        gid,
        carol.signer,
        rng,
        int(time.time()),
        extensions=(meta_extension(meta), REQUIRED),
        capabilities=CAPABILITIES,
    )
    result = evil.commit(rng, int(time.time()), add=[kp])
    evil.merge_pending_commit()
    assert result.welcome is not None
    await carol._post_to_inboxes(result.welcome, contact.inboxes, b"")
    kp_msg = MLSMessage.from_bytes(kp).key_package
    assert kp_msg is not None
    ref = key_package_ref(SUITE, kp_msg)
    await until(lambda: bob.store.get(NS_KEY_PACKAGES, ref) is None, what="bob handles the Welcome")
    assert snapshot(bob, gid) == before, "the Welcome changed the existing conversation"
    assert said(bob, None, "refused", "invitation")
    assert bob.store.get(NS_GROUP_IDS, gid) is not None  # remembered for good

    sent: list[bytes] = []
    original_sealed = bob._sealed_items

    def spy_sealed(conv_id: bytes, mls_message: bytes, message_id: bytes):  # type: ignore[no-untyped-def]
        sent.append(mls_message)
        return original_sealed(conv_id, mls_message, message_id)

    bob._sealed_items = spy_sealed  # type: ignore[method-assign]
    await bob.send_text(gid, "after")
    assert sent
    for message in sent:
        with pytest.raises(SamizdatError):
            evil.process(message)  # the attacker's group cannot open it
    await until(lambda: "after" in [e.text for e in alice.history(gid)])


async def test_remove_of_another_member_is_not_auto_committed(trio: list[Engine]) -> None:
    """Item 8: a member's Remove proposal of *another* member is not a leave;
    nobody commits it on the proposer's behalf (only admins remove others)."""
    alice, bob, carol = trio
    gid = await crew(alice, bob, carol)
    before = snapshot(bob, gid)
    group = carol.groups[gid]
    message = group.propose(Proposal.of(Remove(leaf_of(carol, gid, bob))), rng)
    await carol._post_mls(gid, message, b"")
    await until(
        lambda: said(alice, gid, "Carol") or len(alice.members(gid)) < 3,
        what="alice handles the proposal",
    )
    await until(lambda: said(bob, gid, "Carol") or not bob.groups[gid].active)
    assert len(alice.members(gid)) == 3 and snapshot(bob, gid) == before
    # the group still works for bob
    await bob.send_text(gid, "still here")
    await until(lambda: "still here" in [e.text for e in alice.history(gid)])


async def test_an_admins_remove_proposal_is_committed_as_a_removal(trio: list[Engine]) -> None:
    """Item 8, the allowed case: an admin's proposal to remove another member
    is committed by the lowest other admin, and the group then moves to fresh
    mailboxes (new seeds)."""
    alice, bob, carol = trio
    gid = await crew(alice, bob, carol)
    await alice.set_admin(gid, bob.identity.signature_pub)
    await until(lambda: bob.is_admin(gid), what="bob sees he is an admin")
    seeds = {m.write_seed for m in alice._meta(gid).mailboxes}
    message = bob.groups[gid].propose(Proposal.of(Remove(leaf_of(bob, gid, carol))), rng)
    await bob._post_mls(gid, message, b"")
    await until(lambda: len(bob.members(gid)) == 2, what="the removal is committed")
    await until(lambda: not carol.groups[gid].active, what="carol sees her removal")
    # the mailboxes move in a second commit, once the removal merged (§8.11)
    await until(
        lambda: not seeds & {m.write_seed for m in bob._meta(gid).mailboxes},
        what="the group moves to fresh mailboxes",
    )


async def test_non_admin_removal_commit_is_refused(trio: list[Engine]) -> None:
    """Item 2: a (well-formed) commit by a non-admin removing another member
    is refused on receipt by everyone (SPEC §8.3, RFC 9420 §12.4.2)."""
    alice, bob, carol = trio
    gid = await crew(alice, bob, carol)
    before = snapshot(bob, gid)
    carol.groups[gid].policy = AllowAll()  # a hostile client skips its own checks
    result = carol.groups[gid].commit(rng, int(time.time()), remove=[leaf_of(carol, gid, bob)])
    carol.groups[gid].clear_pending_commit()
    await carol._post_mls(gid, result.commit, b"")
    await until(
        lambda: said(alice, gid, "admin") or len(alice.members(gid)) < 3,
        what="alice handles the commit",
    )
    await until(lambda: said(bob, gid, "admin") or not bob.groups[gid].active)
    assert len(alice.members(gid)) == 3 and snapshot(bob, gid) == before


async def test_non_admin_extension_change_is_refused_and_removal_works(
    trio: list[Engine],
) -> None:
    """Item 2: a non-admin proposes new GroupMeta (its own relay, a new name).
    It must not be cached (it would be applied by the next commit, or break
    the admin's remove flow, which carries its own GroupContextExtensions)."""
    alice, bob, carol = trio
    gid = await crew(alice, bob, carol)
    meta = find_group_meta(carol.groups[gid].extensions)
    assert meta is not None
    hijack = replace(
        meta, name="pwned", mailboxes=(new_mailbox_ref(carol.identity.relays[1], rng),)
    )
    message = carol.groups[gid].propose(
        Proposal.of(GroupContextExtensions((meta_extension(hijack), REQUIRED))), rng
    )
    await carol._post_mls(gid, message, b"")
    await until(
        lambda: said(alice, gid, "Carol") or bool(alice.groups[gid].state.proposals),
        what="alice handles the proposal",
    )
    assert not alice.groups[gid].state.proposals
    await alice.remove_member(gid, carol.identity.signature_pub)
    await until(lambda: len(bob.members(gid)) == 2, what="bob applies the removal")
    for e in (alice, bob):
        kept = find_group_meta(e.groups[gid].extensions)
        assert kept is not None and kept.name == "crew"
        assert kept.relay_urls == meta.relay_urls


async def test_own_commit_drops_a_conflicting_cached_proposal(trio: list[Engine]) -> None:
    """Item 2, committer side: in a 1:1 chat both are admins, so bob's
    GroupContextExtensions proposal is cached by alice; alice's own timer
    change must still commit (bob's proposal is left out and shown)."""
    alice, bob, _ = trio
    conv = await befriend(alice, bob)
    meta = find_group_meta(bob.groups[conv].extensions)
    assert meta is not None and meta.kind == ConversationKind.DIRECT
    renamed = replace(meta, name="renamed by bob")
    message = bob.groups[conv].propose(
        Proposal.of(GroupContextExtensions((meta_extension(renamed), REQUIRED))), rng
    )
    await bob._post_mls(conv, message, b"")
    await until(lambda: bool(alice.groups[conv].state.proposals), what="alice caches it")
    await alice.set_disappearing(conv, 5000)
    await until(lambda: bob.conversation(conv).disappearing_ms == 5000)  # type: ignore[union-attr]
    for e in (alice, bob):
        kept = find_group_meta(e.groups[conv].extensions)
        assert kept is not None and kept.disappearing_ms == 5000 and kept.name == meta.name
    assert said(alice, conv, "left out")


async def test_forged_removal_is_attributed_and_nothing_is_deleted(
    trio: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 10: carol (the group's admin) sends a commit removing bob whose
    confirmation tag is forged.  Alice rejects it; bob cannot check the tag
    (no path secret reaches a removed member) but can check carol's
    signature: he shows "Carol says you were removed" and keeps everything."""
    carol, alice, bob = trio[2], trio[0], trio[1]
    gid = await crew(carol, alice, bob)
    await alice.send_text(gid, "hello bob")
    await until(lambda: "hello bob" in [e.text for e in bob.history(gid)])
    alice_before = snapshot(alice, gid)
    bob_before = snapshot(bob, gid)

    real_tag = mls_group.confirmation_tag
    with monkeypatch.context() as m:
        m.setattr(mls_group, "confirmation_tag", lambda s, k, c: bytes(len(real_tag(s, k, c))))
        result = carol.groups[gid].commit(rng, int(time.time()), remove=[leaf_of(carol, gid, bob)])
    carol.groups[gid].clear_pending_commit()
    await carol._post_mls(gid, result.commit, b"")

    await until(lambda: not bob.groups[gid].active, what="bob processes the removal")
    await until(lambda: said(alice, gid, "Carol"), what="alice rejects the forged commit")
    assert snapshot(alice, gid) == alice_before
    conv = bob.conversation(gid)
    assert conv is not None and conv.left
    assert conv.removed_by == carol.identity.signature_pub
    assert said(bob, gid, "Carol says you were removed")
    assert [e.text for e in bob.history(gid)] == bob_before[3]  # history kept
    assert gid in {c.group_id for c in bob.conversations()}
    # a genuine re-invite is a new conversation; the old one stays as it was
    await befriend(alice, bob)
    again = await alice.create_group("crew")
    await alice.add_members(again.group_id, [alice.find_contact("Bob")])
    await until(lambda: again.group_id in bob.groups, what="bob joins the new group")
    assert said(bob, again.group_id, "new conversation")
    assert [e.text for e in bob.history(gid)] == bob_before[3]
    assert bob.conversation(gid).removed_by == carol.identity.signature_pub  # type: ignore[union-attr]


async def test_unreadable_invitation_is_reported_and_changes_nothing(trio: list[Engine]) -> None:
    """A contact posts bytes that are no Welcome to our inbox: a clear
    notice, no exception out of the delivery path, nothing changes."""
    alice, bob, _ = trio
    conv = await befriend(alice, bob)
    before = snapshot(bob, conv)
    contact = alice.contact(bob.identity.signature_pub)
    assert contact is not None
    await alice._post_to_inboxes(b"\x00\x01 not a welcome", contact.inboxes, b"")
    await until(lambda: said(bob, None, "invitation could not be opened"))
    assert snapshot(bob, conv) == before
    await alice.send_text(alice.find_conversation("Bob").group_id, "still fine")
    await until(lambda: "still fine" in [e.text for e in bob.history(conv)])
