"""PSKs, ReInit, GroupContextExtensions, external senders and new-member
proposals through the Group API (RFC 9420 §12.1)."""

from __future__ import annotations

import pytest

from protocol.mls.errors import InvalidCommit, InvalidMessage, StateError
from protocol.mls.events import (
    ExtensionsChanged,
    MemberAdded,
    MemberRemoved,
    ProposalReceived,
    ReInitRequested,
)
from protocol.mls.group import Group, external_proposal, new_member_proposal
from protocol.mls.messages import (
    PreSharedKeyID,
    Proposal,
    ReInit,
    Remove,
    ResumptionPSKUsage,
)
from protocol.mls.tree_structs import (
    Credential,
    Extension,
    ExtensionType,
    ExternalSender,
    encode_external_senders,
)
from tests.mls_harness import NOW, Harness, Party


def test_external_psk_commit_requires_the_psk_everywhere() -> None:
    h = Harness(["alice", "bob"])
    psk_id, psk = b"shared-secret-id", b"k" * 32
    for p in h.members():
        p.g.psks.external[psk_id] = psk
    nonce = h["alice"].rng(32)
    h.commit("alice", psks=[PreSharedKeyID.external(psk_id, nonce)])
    h.assert_converged()
    # a member without the PSK rejects the commit and stays where it was
    h["bob"].g.psks.external.clear()
    before = h["bob"].g.to_bytes()
    result = h["alice"].g.commit(h["alice"].rng, NOW, psks=[PreSharedKeyID.external(psk_id, nonce)])
    with pytest.raises(InvalidCommit):
        h["bob"].g.process(result.commit)
    assert h["bob"].g.to_bytes() == before


def test_resumption_psk_of_an_earlier_epoch() -> None:
    h = Harness(["alice", "bob", "carol"])
    h.commit("alice")  # every member has now seen the epoch before this one
    earlier = h["alice"].g.epoch - 1
    psk = PreSharedKeyID.resumption(
        ResumptionPSKUsage.APPLICATION, h["alice"].g.group_id, earlier, h["alice"].rng(32)
    )
    h.commit("bob", psks=[psk])
    h.assert_converged()


def test_reinit_closes_the_group() -> None:
    h = Harness(["alice", "bob"])
    reinit = ReInit(b"successor", 1, 1, ())
    proposal = h["bob"].g.propose(Proposal.of(reinit), h["bob"].rng)
    h["alice"].g.process(proposal)
    out = h["alice"].g.commit(h["alice"].rng, NOW, path=False)
    events = h["bob"].g.process(out.commit)
    h["alice"].g.merge_pending_commit()
    assert any(isinstance(e, ReInitRequested) and e.group_id == b"successor" for e in events)
    assert not h["alice"].g.active and not h["bob"].g.active
    with pytest.raises(StateError):
        h["alice"].g.encrypt(b"x", h["alice"].rng)


def test_group_context_extensions_and_external_sender() -> None:
    h = Harness(["alice", "bob", "carol"])
    bot = Party("bot")
    senders = encode_external_senders(
        [ExternalSender(bot.identity.signature_pub, Credential.basic(b"moderation bot"))]
    )
    ext = Extension(ExtensionType.EXTERNAL_SENDERS, senders)
    h.commit("alice", extensions=(ext,))
    assert any(isinstance(e, ExtensionsChanged) for e in h["bob"].received)
    h.assert_converged()

    alice = h["alice"].g
    removal = external_proposal(
        1,
        alice.group_id,
        alice.epoch,
        Proposal.of(Remove(h["carol"].g.own_leaf_index)),
        0,
        bot.identity.signature_priv,
    )
    for p in h.members():
        (event,) = p.g.process(removal)
        assert isinstance(event, ProposalReceived)
    h.commit("bob")
    assert any(isinstance(e, MemberRemoved) for e in h["alice"].received)
    assert not h["carol"].g.active

    # a forged external proposal (wrong key) is refused
    forged = external_proposal(
        1, alice.group_id, alice.epoch, Proposal.of(Remove(1)), 0, h["bob"].identity.signature_priv
    )
    with pytest.raises(Exception) as info:
        alice.process(forged)
    assert "signature" in str(info.value).lower() or isinstance(info.value, InvalidMessage)


def test_new_member_proposal_committed_by_member() -> None:
    h = Harness(["alice", "bob"])
    dave = Party("dave")
    bundle = dave.key_package()
    proposal = new_member_proposal(h["alice"].g.group_info(), bundle)
    for p in h.members():
        p.g.process(proposal)
    result = h.commit("bob")
    assert result.welcome is not None
    dave.group = Group.join(result.welcome, bundle)
    h.parties["dave"] = dave
    assert any(isinstance(e, MemberAdded) for e in h["alice"].received)
    h.assert_converged()


def test_commit_validation_rules() -> None:
    h = Harness(["alice", "bob", "carol"])
    alice = h["alice"].g
    with pytest.raises(InvalidCommit):  # removing oneself
        alice.commit(h["alice"].rng, NOW, remove=[alice.own_leaf_index])
    with pytest.raises(InvalidCommit):  # the same leaf twice
        alice.commit(h["alice"].rng, NOW, remove=[1, 1])
    with pytest.raises(StateError):  # a Remove needs a path
        alice.commit(h["alice"].rng, NOW, remove=[1], path=False)
    with pytest.raises(InvalidCommit):  # short psk_nonce
        alice.commit(h["alice"].rng, NOW, psks=[PreSharedKeyID.external(b"x", b"n")])
