"""A hostile member or ex-member, acting through the Group API (GitHub issue 10).

Each test performs the attack with several ``Group`` instances exchanging
messages, checks that the honest members refuse it without changing state,
and that the group still works afterwards: the attacker can be removed and a
new member added.

Where the attack needs a client that skips our own committer-side checks (a
hostile or buggy implementation), the test switches those checks off for the
attacker's call only with ``monkeypatch``; the honest receivers run the real
code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

import protocol.mls.commit_process as commit_process
import protocol.mls.group as group_module
import protocol.mls.group_join as group_join
from protocol.mls.crypto import get_suite
from protocol.mls.errors import InvalidCommit, InvalidMessage, StateError
from protocol.mls.group import Group
from protocol.mls.key_package import create_key_package, sign_leaf_node
from protocol.mls.messages import (
    Add,
    GroupContextExtensions,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    Remove,
    Sender,
    Update,
)
from protocol.mls.policy import AllowAll
from protocol.mls.tree_structs import (
    Capabilities,
    Credential,
    Extension,
    ExtensionType,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    ProposalType,
    RequiredCapabilities,
)
from tests.mls_harness import NOW, Harness, Party

DAY = 24 * 3600


def states(h: Harness, *names: str) -> dict[str, bytes]:
    return {n: h[n].g.to_bytes() for n in names}


def assert_still_works(h: Harness, committer: str, attacker: str, newcomer: str) -> None:
    """The attacker can be removed and a new member added; everyone converges."""
    leaf = h[attacker].g.own_leaf_index
    h.commit(committer, remove=[leaf])
    assert not h[attacker].g.active
    h.parties[newcomer] = Party(newcomer, h[committer].suite_id)
    h.add(committer, newcomer)
    h.assert_converged()
    # and the newcomer can take part: its commit is accepted by everyone
    h.commit(newcomer)
    h.assert_converged()


def forged_update(p: Party, **changes: object) -> LeafNode:
    """``p``'s leaf as an Update leaf with ``changes``, signed with ``p``'s key."""
    g = p.g
    old = g.member_leaf(g.own_leaf_index)
    leaf = dataclasses.replace(
        old, leaf_node_source=LeafNodeSource.UPDATE, lifetime=None, parent_hash=None
    )
    leaf = dataclasses.replace(leaf, **changes)  # type: ignore[arg-type]
    return sign_leaf_node(g.suite, leaf, p.identity.signature_priv, g.group_id, g.own_leaf_index)


def forged_key_package(p: Party, encryption_key: bytes) -> KeyPackage:
    """A KeyPackage of ``p`` whose leaf carries ``encryption_key``, validly signed."""
    kp = p.key_package().key_package
    suite, priv = get_suite(p.suite_id), p.identity.signature_priv
    leaf = sign_leaf_node(
        suite, dataclasses.replace(kp.leaf_node, encryption_key=encryption_key), priv
    )
    unsigned = dataclasses.replace(kp, leaf_node=leaf, signature=b"")
    signature = suite.sign_with_label(priv, "KeyPackageTBS", unsigned.tbs_bytes())
    return dataclasses.replace(unsigned, signature=signature)


def keep_everything(monkeypatch: pytest.MonkeyPatch, omit: int = ProposalType.UPDATE) -> None:
    """Make this process's committer a hostile one: its commit references every
    cached proposal, unfiltered, and its own validation of the list is skipped
    (it computes its new tree without the Updates, which honest receivers never
    get to see, as they refuse the list first)."""
    real = group_module._apply_proposals

    def select_all(cached: Sequence[tuple[bytes, object]], **_: object) -> object:
        return group_module.ProposalSelection([ref for ref, _ in cached], [], set())

    def lenient(suite, context, tree, proposals, committer, now, *rest, **kw):  # type: ignore[no-untyped-def]
        try:
            return real(suite, context, tree, proposals, committer, now, *rest, **kw)
        except InvalidMessage:
            kept = [p for p in proposals if p.proposal.proposal_type != omit]
            return real(suite, context, tree, kept, committer, now, *rest, **kw)

    monkeypatch.setattr(group_module, "select_proposals", select_all, raising=False)
    # apply_proposals as every module of group.py's code imports it, as before the split
    for module in (group_module, commit_process, group_join):
        monkeypatch.setattr(module, "_apply_proposals", lenient)


# -- item 1: one proposal must not freeze the group ------------------------------------------


def test_unknown_psk_proposal_cannot_freeze_the_group() -> None:
    h = Harness(["alice", "bob", "carol"])
    bob = h["bob"]
    psk = PreSharedKeyID.external(b"a psk nobody has", bob.rng(32))
    h.broadcast("bob", bob.g.propose(Proposal.of(PreSharedKey(psk)), bob.rng))
    # before the fix every later commit failed here ("a required PSK is not available")
    result = h.commit("alice", remove=[bob.g.own_leaf_index])
    assert not bob.g.active
    (dropped,) = result.dropped
    assert dropped.proposal_type == ProposalType.PSK and dropped.sender_index == 1
    assert "psk" in dropped.reason.lower()
    assert h["alice"].g.last_dropped == [dropped]
    h.parties["dave"] = Party("dave")
    h.add("carol", "dave")
    h.assert_converged()


def test_stale_or_duplicate_adds_cannot_freeze_the_group() -> None:
    h = Harness(["alice", "bob", "carol"])
    bob = h["bob"]
    # a KeyPackage valid now but expired by the time someone commits
    short = create_key_package(bob.g.suite, Party("eve").identity, NOW, bob.rng, lifetime=60)
    h.broadcast("bob", bob.g.propose(Proposal.of(Add(short.key_package)), bob.rng))
    # the same Add twice (distinct references through authenticated_data)
    twice = Party("frank").key_package()
    for ad in (b"1", b"2"):
        msg = bob.g.propose(Proposal.of(Add(twice.key_package)), bob.rng, authenticated_data=ad)
        h.broadcast("bob", msg)
    # the attacker adding itself again (its signature key is already in the tree)
    again = bob.key_package()
    h.broadcast("bob", bob.g.propose(Proposal.of(Add(again.key_package)), bob.rng))
    alice = h["alice"]
    result = alice.g.commit(alice.rng, NOW + 2 * DAY)
    reasons = sorted(d.reason for d in result.dropped)
    assert len(reasons) == 3, reasons
    h.broadcast("alice", result.commit)
    alice.g.process(result.commit)
    h.assert_converged()
    # the valid Add went in once
    names = [identity for _, identity, _ in alice.g.members()]
    assert names.count(b"frank") == 1 and b"eve" not in names
    assert names.count(b"bob") == 1
    assert_still_works(h, "carol", "bob", "dave")


def test_cached_proposal_for_a_leaf_the_committer_removes_is_left_out() -> None:
    h = Harness(["alice", "bob", "carol"])
    h.broadcast("bob", h["bob"].g.propose_update(h["bob"].rng))
    h.broadcast("bob", h["bob"].g.propose(Proposal.of(Remove(0)), h["bob"].rng))  # the committer
    result = h.commit("alice", remove=[1])
    kinds = sorted(d.proposal_type for d in result.dropped)
    assert kinds == [ProposalType.UPDATE, ProposalType.REMOVE]
    assert not h["bob"].g.active
    h.assert_converged()


# -- item 2: key uniqueness of Update and path leaves ---------------------------------------------


def test_update_reusing_another_members_encryption_key_is_refused() -> None:
    h = Harness(["alice", "bob", "carol"])
    stolen = h["alice"].g.member_leaf(0).encryption_key
    attack = h["bob"].g.propose(
        Proposal.of(Update(forged_update(h["bob"], encryption_key=stolen))), h["bob"].rng
    )
    before = states(h, "alice", "carol")
    for name in ("alice", "carol"):
        with pytest.raises(InvalidMessage, match="encryption key"):
            h[name].g.process(attack)
    assert states(h, "alice", "carol") == before
    h["bob"].g.state.proposals.clear()  # the attacker's own cache is its business
    assert_still_works(h, "alice", "bob", "dave")


def test_update_reusing_a_sybils_signature_key_is_refused() -> None:
    # mallory and bob are one attacker: mallory's leaf takes bob's signature key
    h = Harness(["alice", "bob", "mallory"])
    mallory, bob = h["mallory"], h["bob"]
    fresh = mallory.g.suite.hpke_key_pair(mallory.rng)[1]
    leaf = forged_update(mallory, signature_key=bob.identity.signature_pub, encryption_key=fresh)
    leaf = sign_leaf_node(mallory.g.suite, leaf, bob.identity.signature_priv, mallory.g.group_id, 2)
    attack = mallory.g.propose(Proposal.of(Update(leaf)), mallory.rng)
    before = states(h, "alice")
    with pytest.raises(InvalidMessage, match="signature key"):
        h["alice"].g.process(attack)
    assert states(h, "alice") == before
    mallory.g.state.proposals.clear()
    assert_still_works(h, "alice", "mallory", "dave")


def test_a_member_cannot_take_another_members_name() -> None:
    h = Harness(["alice", "bob", "carol"])
    bob = h["bob"]
    fresh = bob.g.suite.hpke_key_pair(bob.rng)[1]
    as_alice = Credential.basic(b"alice")
    attack = bob.g.propose(
        Proposal.of(Update(forged_update(bob, credential=as_alice, encryption_key=fresh))),
        bob.rng,
    )
    before = states(h, "alice", "carol")
    for name in ("alice", "carol"):
        with pytest.raises(InvalidMessage, match="credential"):
            h[name].g.process(attack)
    assert states(h, "alice", "carol") == before
    bob.g.state.proposals.clear()
    # the same through bob's own commit: his path leaf claims to be alice
    own = bob.g.state.tree.member_leaf(1)
    bob.g.state.tree.set_leaf(1, dataclasses.replace(own, credential=as_alice))
    hostile = bob.g.commit(bob.rng, NOW)
    for name in ("alice", "carol"):
        with pytest.raises(InvalidCommit, match="credential"):
            h[name].g.process(hostile.commit)
    assert states(h, "alice", "carol") == before
    bob.g.clear_pending_commit()
    bob.g.state.tree.set_leaf(1, own)
    assert_still_works(h, "alice", "bob", "dave")


def test_two_updates_with_one_new_key_are_never_both_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(["alice", "bob", "carol", "mallory"])
    h.broadcast("bob", h["bob"].g.propose_update(h["bob"].rng))
    bobs_new_key = next(
        p.content.proposal.body.leaf_node.encryption_key  # type: ignore[union-attr]
        for p in h["alice"].g.state.proposals.values()
    )
    # mallory copies bob's proposed key: unique in the tree, so cached on receipt
    copy = forged_update(h["mallory"], encryption_key=bobs_new_key)
    h.broadcast("mallory", h["mallory"].g.propose(Proposal.of(Update(copy)), h["mallory"].rng))

    # an honest committer leaves the second one out
    alice = h["alice"]
    result = alice.g.commit(alice.rng, NOW)
    assert [d.sender_index for d in result.dropped] == [3]
    alice.g.clear_pending_commit()

    # a hostile committer includes both: every honest member refuses
    with monkeypatch.context() as m:
        keep_everything(m)
        hostile = h["carol"].g.commit(h["carol"].rng, NOW)
    before = states(h, "alice", "bob")
    for name in ("alice", "bob"):
        with pytest.raises(InvalidMessage, match="encryption key"):
            h[name].g.process(hostile.commit)
    assert states(h, "alice", "bob") == before
    h["carol"].g.clear_pending_commit()
    assert_still_works(h, "alice", "mallory", "dave")


def test_external_rejoin_keeping_the_old_leaf_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(["alice", "bob", "carol"])
    info = h["alice"].g.group_info()
    # bob joins a second time with the same signature key, without removing his leaf
    with monkeypatch.context() as m:
        for module in (group_join, commit_process):  # where group.py's code moved to
            m.setattr(module, "check_external_joiner", lambda *a: None)
        _, attack = Group.join_external(info, h["bob"].identity, h["bob"].rng, NOW)
    before = states(h, "alice", "carol")
    for name in ("alice", "carol"):
        with pytest.raises(InvalidCommit, match="signature key"):
            h[name].g.process(attack)
    assert states(h, "alice", "carol") == before
    # our own client refuses to build it
    with pytest.raises(StateError, match="signature key"):
        Group.join_external(info, h["bob"].identity, h["bob"].rng, NOW)
    assert_still_works(h, "alice", "bob", "dave")


def test_add_reusing_a_key_of_the_tree_is_never_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(["alice", "bob", "carol"])
    tree = h["alice"].g.state.tree
    parent_key = next(k for x in range(1, len(tree.nodes), 2) if (k := tree.public_key(x)))
    for stolen in (tree.member_leaf(0).encryption_key, parent_key):  # a leaf's, a parent's (§16.7)
        add = Proposal.of(Add(forged_key_package(Party("sybil"), stolen)))
        h.broadcast("bob", h["bob"].g.propose(add, h["bob"].rng))
    with pytest.raises(InvalidMessage, match="encryption key"):  # as the committer's own Add
        h["alice"].g.commit(
            h["alice"].rng,
            NOW,
            add=[MLSMessage.of(forged_key_package(Party("x"), parent_key)).to_bytes()],
        )
    # a hostile committer's commit is refused
    with monkeypatch.context() as m:
        keep_everything(m, omit=ProposalType.ADD)
        hostile = h["carol"].g.commit(h["carol"].rng, NOW)
    before = states(h, "alice", "bob")
    for name in ("alice", "bob"):
        with pytest.raises(InvalidMessage, match="encryption key"):
            h[name].g.process(hostile.commit)
    assert states(h, "alice", "bob") == before
    h["carol"].g.clear_pending_commit()
    # an honest committer leaves both out
    result = h["alice"].g.commit(h["alice"].rng, NOW)
    assert [d.proposal_type for d in result.dropped] == [ProposalType.ADD] * 2
    h["alice"].g.clear_pending_commit()
    assert_still_works(h, "alice", "bob", "dave")


# -- item 3: an external commit removes only the joiner's own old leaf ----------------------


def test_external_commit_cannot_remove_another_member(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(["alice", "bob", "carol", "mallory"])
    h.commit("alice", remove=[3])  # mallory is now an ex-member
    assert not h["mallory"].g.active
    info = h["bob"].g.group_info()
    mallory = h["mallory"]
    with monkeypatch.context() as m:
        for module in (group_join, commit_process):  # where group.py's code moved to
            m.setattr(module, "check_external_joiner", lambda *a: None)
        _, attack = Group.join_external(info, mallory.identity, mallory.rng, NOW, remove_prior=0)
    before = states(h, "alice", "bob", "carol")
    for name in ("alice", "bob", "carol"):
        with pytest.raises(InvalidCommit, match="own earlier leaf"):
            h[name].g.process(attack)
    assert states(h, "alice", "bob", "carol") == before
    # our own client refuses to build it
    with pytest.raises(StateError, match="own earlier leaf"):
        Group.join_external(info, mallory.identity, mallory.rng, NOW, remove_prior=0)

    # a genuine resync (bob replacing his own leaf) is still accepted
    bob = h["bob"]
    bob.group, resync = Group.join_external(
        info, bob.identity, bob.rng, NOW, remove_prior=bob.g.own_leaf_index
    )
    for name in ("alice", "carol"):
        h[name].g.process(resync)
    h.assert_converged()
    h.parties["dave"] = Party("dave")
    h.add("carol", "dave")
    h.assert_converged()


# -- item 4: commit policy of RFC 9420 §12.2 ------------------------------------------------------


def test_an_update_does_not_shield_a_member_from_removal() -> None:
    h = Harness(["alice", "bob", "carol"])
    h.broadcast("bob", h["bob"].g.propose_update(h["bob"].rng))  # the attacker, first
    h.broadcast("alice", h["alice"].g.propose(Proposal.of(Remove(1)), h["alice"].rng))
    result = h.commit("carol")
    assert not h["bob"].g.active, "the Remove must win over the Update (RFC 9420 §12.2)"
    assert [d.proposal_type for d in result.dropped] == [ProposalType.UPDATE]
    h.assert_converged()


def test_of_two_updates_the_latest_is_committed() -> None:
    h = Harness(["alice", "bob", "carol"])
    bob = h["bob"]
    h.broadcast("bob", bob.g.propose_update(bob.rng))
    h.broadcast("bob", bob.g.propose_update(bob.rng))
    latest = list(h["carol"].g.state.proposals.values())[-1]
    expected = latest.content.proposal.body.leaf_node.encryption_key  # type: ignore[union-attr]
    result = h.commit("carol")
    assert h["alice"].g.member_leaf(1).encryption_key == expected
    assert [d.proposal_type for d in result.dropped] == [ProposalType.UPDATE]
    h.assert_converged()


def test_received_commit_with_update_and_remove_of_one_leaf_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(["alice", "bob", "carol", "mallory"])
    h.broadcast("bob", h["bob"].g.propose_update(h["bob"].rng))
    h.broadcast("alice", h["alice"].g.propose(Proposal.of(Remove(1)), h["alice"].rng))
    with monkeypatch.context() as m:
        keep_everything(m)
        hostile = h["mallory"].g.commit(h["mallory"].rng, NOW)
    before = states(h, "alice", "bob", "carol")
    for name in ("alice", "bob", "carol"):
        with pytest.raises(InvalidCommit, match="updated or removed twice"):
            h[name].g.process(hostile.commit)
    assert states(h, "alice", "bob", "carol") == before
    h["mallory"].g.clear_pending_commit()
    assert_still_works(h, "carol", "mallory", "dave")


def test_received_commit_with_the_committers_own_update_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(["alice", "bob", "mallory"])
    h.broadcast("mallory", h["mallory"].g.propose_update(h["mallory"].rng))
    with monkeypatch.context() as m:
        keep_everything(m)
        hostile = h["mallory"].g.commit(h["mallory"].rng, NOW)
    before = states(h, "alice", "bob")
    for name in ("alice", "bob"):
        with pytest.raises(InvalidCommit, match="its own Update"):
            h[name].g.process(hostile.commit)
    assert states(h, "alice", "bob") == before
    h["mallory"].g.clear_pending_commit()
    assert_still_works(h, "alice", "mallory", "dave")


# -- item 5: leaves that do not list the group's cipher suite ------------------------------------


def _no_suite_caps() -> Capabilities:
    # lists suite 1 only: the group below runs suite 7
    return Capabilities(
        versions=(1,), cipher_suites=(1,), extensions=(), proposals=(), credentials=(1,)
    )


def test_leaves_not_listing_the_group_suite_are_accepted() -> None:
    alice, bob, carol = (Party(n, suite_id=7) for n in ("alice", "bob", "carol"))
    alice.group = Group.create(
        7, b"suite-7-group", alice.identity, alice.rng, NOW, capabilities=_no_suite_caps()
    )
    bundle = create_key_package(
        alice.g.suite, bob.identity, NOW, bob.rng, capabilities=_no_suite_caps()
    )
    result = alice.g.commit(alice.rng, NOW, add=[bundle])
    alice.g.merge_pending_commit()
    assert result.welcome is not None
    bob.group = Group.join(result.welcome, bundle)  # validates the tree
    h = Harness.__new__(Harness)
    h.parties = {"alice": alice, "bob": bob}
    h.broadcast("bob", bob.g.propose_update(bob.rng))
    h.commit("alice")
    carol.group, commit = Group.join_external(alice.g.group_info(), carol.identity, carol.rng, NOW)
    h.broadcast("carol", commit)
    h.parties["carol"] = carol
    h.assert_converged()

    # the checks RFC 9420 does require stay: the KeyPackage's own suite (§10.1) ...
    other = Party("dave", suite_id=1).key_package()
    with pytest.raises(InvalidMessage, match="suite"):
        alice.g.commit(alice.rng, NOW, add=[other])
    # ... and the credential type listed in the leaf's capabilities (§7.2)
    caps = dataclasses.replace(_no_suite_caps(), credentials=(2,))
    odd = create_key_package(
        alice.g.suite, Party("erin", 7).identity, NOW, bob.rng, capabilities=caps
    )
    with pytest.raises(InvalidMessage, match="credential"):
        alice.g.commit(alice.rng, NOW, add=[odd])


# -- the policy hook (POLICY.md) -------------------------------------------------------------


class OnlyLeafZeroRemoves:
    """Samizdat-like admin rule: only leaf 0 may remove others."""

    def check(self, state: object, proposer: Sender, proposal: Proposal) -> str | None:
        if isinstance(proposal.body, Remove) and proposer.leaf_index != 0:
            return "only admins may remove others"
        return None


def test_policy_refuses_proposals_and_commits_and_the_committer_leaves_them_out() -> None:
    h = Harness(["alice", "bob", "carol"])
    for p in h.members():
        p.g.policy = OnlyLeafZeroRemoves()
    bob, carol = h["bob"], h["carol"]

    # a refused standalone proposal is not cached
    kick = bob.g.propose(Proposal.of(Remove(2)), bob.rng)
    before = states(h, "alice")
    with pytest.raises(InvalidMessage, match="policy: only admins"):
        h["alice"].g.process(kick)
    assert states(h, "alice") == before

    # carol's client has no policy yet, so it cached the proposal; with the
    # policy set, her commit leaves it out and says so
    carol.g.policy = AllowAll()
    carol.g.process(kick)
    carol.g.policy = OnlyLeafZeroRemoves()
    result = carol.g.commit(carol.rng, NOW)
    (dropped,) = result.dropped
    assert dropped.reason == "policy: only admins may remove others"
    assert dropped.sender_index == 1 and dropped.proposal_type == ProposalType.REMOVE
    assert not carol.g.state.proposals  # refused proposals are forgotten
    carol.g.clear_pending_commit()

    # our own refused by-value proposal is a local error
    with pytest.raises(StateError, match="policy"):
        bob.g.commit(bob.rng, NOW, remove=[2])

    # a commit covering a refused proposal is refused, state unchanged
    bob.g.policy = AllowAll()
    hostile = bob.g.commit(bob.rng, NOW, remove=[2])
    before = states(h, "alice", "carol")
    for name in ("alice", "carol"):
        with pytest.raises(InvalidCommit, match="policy: only admins"):
            h[name].g.process(hostile.commit)
    assert states(h, "alice", "carol") == before
    bob.g.clear_pending_commit()
    bob.g.state.proposals.clear()

    # the admin can remove, and the policy survives nothing: it is not serialized
    h.commit("alice", remove=[1])
    assert not bob.g.active
    assert isinstance(Group.from_bytes(h["alice"].g.to_bytes()).policy, AllowAll)
    h.assert_converged()


def test_a_cached_extensions_change_cannot_block_the_committers_add() -> None:
    # alice and bob support extension 0xFF00; bob proposes to require it, which
    # is valid on its own but would make alice's Add of dave (who lacks it) fail
    caps = Capabilities(
        versions=(1,), cipher_suites=(1,), extensions=(0xFF00,), proposals=(), credentials=(1,)
    )
    alice, bob = Party("alice"), Party("bob")
    alice.group = Group.create(1, b"g", alice.identity, alice.rng, NOW, capabilities=caps)
    bundle = create_key_package(alice.g.suite, bob.identity, NOW, bob.rng, capabilities=caps)
    welcome = alice.g.commit(alice.rng, NOW, add=[bundle]).welcome
    alice.g.merge_pending_commit()
    assert welcome is not None
    bob.group = Group.join(welcome, bundle)
    required = Extension(
        ExtensionType.REQUIRED_CAPABILITIES, RequiredCapabilities((0xFF00,), (), ()).to_bytes()
    )
    alice.g.process(bob.g.propose(Proposal.of(GroupContextExtensions((required,))), bob.rng))
    dave = Party("dave")
    dave_kp = dave.key_package()
    result = alice.g.commit(alice.rng, NOW, add=[dave_kp])
    (dropped,) = result.dropped
    assert dropped.proposal_type == ProposalType.GROUP_CONTEXT_EXTENSIONS
    bob.g.process(result.commit)
    alice.g.merge_pending_commit()
    assert result.welcome is not None
    dave.group = Group.join(result.welcome, dave_kp)
    assert alice.g.epoch_authenticator == bob.g.epoch_authenticator == dave.g.epoch_authenticator
