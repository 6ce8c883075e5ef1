"""Samizdat's proposal policy (SPEC §8.3 "Admins") through the Group API,
and GroupMeta's admin list on the wire."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.app.group_meta import (
    GROUP_META_EXTENSION,
    ConversationKind,
    GroupMeta,
    MailboxRef,
    decode_group_meta,
    find_group_meta,
    meta_extension,
)
from protocol.app.policy import SamizdatPolicy, admin_keys
from protocol.errors import DecodeError, LocalError
from protocol.mls.crypto import get_suite
from protocol.mls.errors import InvalidCommit, InvalidMessage
from protocol.mls.events import ProposalReceived, RemovedFromGroup
from protocol.mls.group import Group
from protocol.mls.key_package import create_key_package
from protocol.mls.messages import GroupContextExtensions, Proposal, Remove, Sender
from protocol.mls.policy import AllowAll
from protocol.mls.tree_structs import Capabilities
from tests.mls_harness import NOW, Party

CAPS = Capabilities((1,), (1,), (GROUP_META_EXTENSION,), (), (1,))
MAILBOX = MailboxRef("https://relay.example", b"m" * 32, b"r" * 32, b"w" * 32)


def make_group(
    names: tuple[str, ...] = ("alice", "bob", "carol"),
    kind: ConversationKind = ConversationKind.GROUP,
    admins: tuple[str, ...] | None = None,
) -> dict[str, Party]:
    """``names[0]`` creates a Samizdat group (admins: the creator unless
    given) and adds the others; every member runs SamizdatPolicy."""
    parties = {n: Party(n) for n in names}
    creator = parties[names[0]]
    listed = (names[0],) if admins is None else admins
    keys = tuple(parties[n].identity.signature_pub for n in listed)
    meta = GroupMeta("crew", (MAILBOX,), 0, kind, keys)
    creator.group = Group.create(
        1,
        b"crew",
        creator.identity,
        creator.rng,
        NOW,
        extensions=(meta_extension(meta),),
        capabilities=CAPS,
    )
    creator.g.policy = SamizdatPolicy()
    joined = [creator]
    for name in names[1:]:
        p = parties[name]
        bundle = create_key_package(get_suite(1), p.identity, NOW, p.rng, capabilities=CAPS)
        result = creator.g.commit(creator.rng, NOW, add=[bundle])
        for other in joined[1:]:
            other.g.process(result.commit)
        creator.g.merge_pending_commit()
        assert result.welcome is not None
        p.group = Group.join(result.welcome, bundle)
        p.g.policy = SamizdatPolicy()
        joined.append(p)
    return parties


def leaf(parties: dict[str, Party], name: str) -> int:
    key = parties[name].identity.signature_pub
    return next(i for i, _, k in parties["alice"].g.members() if k == key)


def meta_of(p: Party) -> GroupMeta:
    meta = find_group_meta(p.g.extensions)
    assert meta is not None
    return meta


def gce(p: Party, meta: GroupMeta) -> Proposal:
    return Proposal.of(GroupContextExtensions((meta_extension(meta),)))


# -- GroupMeta on the wire ------------------------------------------------------------------


def test_group_meta_without_admins_keeps_its_old_encoding() -> None:
    old = GroupMeta("crew", (MAILBOX,), 5, ConversationKind.GROUP)
    legacy = old.to_bytes()
    assert decode_group_meta(legacy).admins == ()
    with_admins = replace(old, admins=(b"k" * 32, b"j" * 32))
    data = with_admins.to_bytes()
    assert data.startswith(legacy) and decode_group_meta(data) == with_admins
    with pytest.raises(DecodeError):
        decode_group_meta(legacy + b"\x00")  # an explicitly empty list: not canonical
    with pytest.raises(DecodeError):
        decode_group_meta(legacy + b"\x40" + b"k" * 64)  # one admin twice
    with pytest.raises(LocalError):
        replace(old, admins=(b"short",))


# -- the policy on receipt ------------------------------------------------------------------------


def test_non_admin_remove_proposal_is_refused_and_not_cached() -> None:
    h = make_group()
    carol = h["carol"]
    message = carol.g.propose(Proposal.of(Remove(leaf(h, "bob"))), carol.rng)
    for name in ("alice", "bob"):
        before = h[name].g.to_bytes()
        with pytest.raises(InvalidMessage, match="policy: only admins may remove"):
            h[name].g.process(message)
        assert h[name].g.to_bytes() == before


def test_leaving_is_allowed_to_anyone_and_committed_by_a_non_admin() -> None:
    h = make_group()
    carol, bob = h["carol"], h["bob"]
    message = carol.g.propose(Proposal.of(Remove(leaf(h, "carol"))), carol.rng)
    for name in ("alice", "bob"):
        events = h[name].g.process(message)
        assert isinstance(events[0], ProposalReceived)
    result = bob.g.commit(bob.rng, NOW)  # bob is no admin: the leave is carol's
    h["alice"].g.process(result.commit)
    events = carol.g.process(result.commit)
    bob.g.merge_pending_commit()
    [removed] = [e for e in events if isinstance(e, RemovedFromGroup)]
    assert removed.committer == leaf(h, "bob")
    assert len(h["alice"].g.members()) == 2 and h["alice"].g.epoch == bob.g.epoch


def test_non_admin_commit_removing_another_is_refused_whole() -> None:
    h = make_group()
    carol = h["carol"]
    carol.g.policy = AllowAll()  # a hostile client skips its own checks
    result = carol.g.commit(carol.rng, NOW, remove=[leaf(h, "bob")])
    for name in ("alice", "bob"):
        before = h[name].g.to_bytes()
        with pytest.raises(InvalidCommit, match="policy"):
            h[name].g.process(result.commit)
        assert h[name].g.to_bytes() == before and h[name].g.active


def test_extensions_admins_change_everything_members_only_the_timer() -> None:
    h = make_group()
    carol, alice = h["carol"], h["alice"]
    meta = meta_of(carol)
    for hijack in (
        replace(meta, name="pwned"),
        replace(meta, admins=(carol.identity.signature_pub,)),
        replace(meta, mailboxes=(replace(MAILBOX, relay_url="https://evil.example"),)),
    ):
        message = carol.g.propose(gce(carol, hijack), carol.rng)
        with pytest.raises(InvalidMessage, match="only admins may change"):
            alice.g.process(message)
    timer = carol.g.propose(gce(carol, replace(meta, disappearing_ms=60_000)), carol.rng)
    assert isinstance(alice.g.process(timer)[0], ProposalReceived)
    # an admin may rename, but not drop the metadata, change the kind or the last admin
    policy = SamizdatPolicy()
    me = alice.g.state
    assert policy.check(me, _member(alice), gce(alice, replace(meta, name="x"))) is None
    assert policy.check(me, _member(alice), gce(alice, replace(meta, admins=()))) is not None
    direct = replace(meta, kind=ConversationKind.DIRECT)
    assert policy.check(me, _member(alice), gce(alice, direct)) is not None
    bare = Proposal.of(GroupContextExtensions(()))
    assert policy.check(me, _member(alice), bare) is not None


def _member(p: Party) -> Sender:
    return Sender.member(p.g.own_leaf_index)


def test_non_admin_add_is_refused_admin_add_allowed() -> None:
    h = make_group()
    dave = Party("dave")
    bundle = create_key_package(get_suite(1), dave.identity, NOW, dave.rng, capabilities=CAPS)
    h["carol"].g.policy = AllowAll()  # a hostile client skips its own checks
    result = h["carol"].g.commit(h["carol"].rng, NOW, add=[bundle])
    with pytest.raises(InvalidCommit, match="only admins may add"):
        h["alice"].g.process(result.commit)


def test_without_listed_admins_every_member_is_one() -> None:
    h = make_group(admins=())
    members = [k for _, _, k in h["alice"].g.members()]
    assert admin_keys(meta_of(h["alice"]), members) == set(members)
    carol = h["carol"]
    result = carol.g.commit(carol.rng, NOW, remove=[leaf(h, "bob")])
    h["alice"].g.process(result.commit)  # allowed: carol counts as an admin
    assert len(h["alice"].g.members()) == 2


def test_direct_conversation_both_admins_no_third_member() -> None:
    h = make_group(("alice", "bob"), kind=ConversationKind.DIRECT, admins=())
    bob, alice = h["bob"], h["alice"]
    renamed = bob.g.propose(gce(bob, replace(meta_of(bob), name="ours")), bob.rng)
    assert isinstance(alice.g.process(renamed)[0], ProposalReceived)
    carol = Party("carol")
    bundle = create_key_package(get_suite(1), carol.identity, NOW, carol.rng, capabilities=CAPS)
    alice.g.policy = AllowAll()  # a hostile client skips its own checks
    result = alice.g.commit(alice.rng, NOW, add=[bundle])
    with pytest.raises(InvalidCommit, match="two members"):
        bob.g.process(result.commit)


# -- the committer side ---------------------------------------------------------------------------


def test_own_commit_leaves_out_a_conflicting_cached_proposal_but_keeps_it() -> None:
    h = make_group(admins=("alice", "bob"))
    alice, bob, carol = h["alice"], h["bob"], h["carol"]
    renamed = bob.g.propose(gce(bob, replace(meta_of(bob), name="bob's")), bob.rng)
    alice.g.process(renamed)
    carol.g.process(renamed)
    ref = next(iter(alice.g.state.proposals))
    result = alice.g.commit(
        alice.rng, NOW, extensions=(meta_extension(replace(meta_of(alice), disappearing_ms=9)),)
    )
    [dropped] = alice.g.last_dropped
    assert dropped.reference == ref and dropped.sender_index == leaf(h, "bob")
    assert "GroupContextExtensions" in dropped.reason
    assert ref in alice.g.state.proposals  # another member's commit may still use it
    for p in (bob, carol):
        p.g.process(result.commit)
    alice.g.merge_pending_commit()
    assert meta_of(carol).disappearing_ms == 9 and meta_of(carol).name == "crew"


def test_own_commit_forgets_a_cached_proposal_the_policy_now_refuses() -> None:
    h = make_group(admins=("alice", "bob"))
    alice, bob = h["alice"], h["bob"]
    remove = bob.g.propose(Proposal.of(Remove(leaf(h, "carol"))), bob.rng)
    alice.g.process(remove)
    ref = next(iter(alice.g.state.proposals))
    # bob is no longer an admin in alice's view (e.g. a policy change): forgotten
    meta = meta_of(alice)
    alice.g.state.context = replace(
        alice.g.state.context,
        extensions=(meta_extension(replace(meta, admins=(alice.identity.signature_pub,))),),
    )
    alice.g.commit(alice.rng, NOW)
    [dropped] = alice.g.last_dropped
    assert dropped.reference == ref and "only admins" in dropped.reason
    assert ref not in alice.g.state.proposals


# -- attributing what cannot be fully verified ---------------------------------------------------


def test_forged_removal_is_a_claim_attributed_to_its_signer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An admin's commit removing bob with a forged confirmation tag: alice
    rejects it (and can name the signer); bob cannot check the tag, only the
    signature, so he gets RemovedFromGroup naming the committer."""
    import protocol.mls.group as mls_group

    h = make_group(admins=("alice", "carol"))
    alice, bob, carol = h["alice"], h["bob"], h["carol"]
    real = mls_group.confirmation_tag
    with monkeypatch.context() as m:
        m.setattr(mls_group, "confirmation_tag", lambda s, k, c: bytes(len(real(s, k, c))))
        result = carol.g.commit(carol.rng, NOW, remove=[leaf(h, "bob")])
    before = alice.g.to_bytes()
    with pytest.raises(InvalidCommit, match="confirmation tag"):
        alice.g.process(result.commit)
    assert alice.g.to_bytes() == before
    assert alice.g.authenticated_sender(result.commit) == leaf(h, "carol")
    events = bob.g.process(result.commit)
    [claim] = [e for e in events if isinstance(e, RemovedFromGroup)]
    assert claim.committer == leaf(h, "carol") and not bob.g.active


def test_authenticated_sender_changes_nothing_and_rejects_garbage() -> None:
    h = make_group()
    carol, alice = h["carol"], h["alice"]
    message = carol.g.propose(Proposal.of(Remove(leaf(h, "bob"))), carol.rng)
    before = alice.g.to_bytes()
    assert alice.g.authenticated_sender(message) == leaf(h, "carol")
    assert alice.g.to_bytes() == before
    assert alice.g.authenticated_sender(b"\x00\x01garbage") is None
    assert alice.g.authenticated_sender(message[:-3] + b"xyz") is None
