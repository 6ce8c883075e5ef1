"""The Group API: lifecycle, convergence, atomic rejection of bad messages,
serialization, external joins."""

from __future__ import annotations

import dataclasses

import pytest

from protocol.errors import CryptoError, DecodeError, RemoteError
from protocol.mls.errors import (
    InvalidCommit,
    InvalidMessage,
    ReplayedMessage,
    StateError,
    UnknownMember,
    WrongEpoch,
)
from protocol.mls.events import (
    ApplicationMessageReceived,
    EpochAdvanced,
    MemberAdded,
    MemberRemoved,
    PendingCommitDiscarded,
    RemovedFromGroup,
)
from protocol.mls.group import Group
from protocol.mls.messages import MLSMessage, PrivateMessage
from tests.mls_harness import NOW, Harness, Party


@pytest.mark.parametrize("suite_id", [1, 2, 3, 5, 7])
def test_group_lifecycle_converges(suite_id: int) -> None:
    h = Harness(["alice", "bob", "carol"], suite_id)
    h.assert_converged()
    msg = h["bob"].g.encrypt(b"hello all", h["bob"].rng)
    h.broadcast("bob", msg)
    got = [e for e in h["alice"].received if isinstance(e, ApplicationMessageReceived)]
    assert got[-1].data == b"hello all" and got[-1].sender == h["bob"].g.own_leaf_index
    h.commit("carol")  # empty commit: a path update
    h.assert_converged()
    h.commit("alice", remove=[h["bob"].g.own_leaf_index])
    assert not h["bob"].g.active
    assert any(isinstance(e, RemovedFromGroup) for e in h["bob"].received)
    h.assert_converged()
    assert sorted(name for _, name, _ in h["alice"].g.members()) == [b"alice", b"carol"]


def test_many_epochs_with_updates_and_proposals() -> None:
    h = Harness(["a", "b", "c", "d"])
    for i in range(12):
        committer = "abcd"[i % 4]
        if i % 3 == 1:
            proposer = "abcd"[(i + 1) % 4]
            h.broadcast(proposer, h[proposer].g.propose_update(h[proposer].rng))
        h.commit(committer)
        h.assert_converged()
        for p in h.members():
            h.broadcast(p.name, p.g.encrypt(f"{p.name}{i}".encode(), p.rng))
    assert h["a"].g.epoch == 3 + 12


def test_rejected_messages_leave_state_unchanged() -> None:
    h = Harness(["alice", "bob"])
    alice, bob = h["alice"], h["bob"]
    before = bob.g.to_bytes()
    msg = alice.g.encrypt(b"x", alice.rng)
    pm = MLSMessage.from_bytes(msg).private_message
    assert pm is not None

    def variant(**changes: object) -> bytes:
        return MLSMessage.of(dataclasses.replace(pm, **changes)).to_bytes()  # type: ignore[arg-type]

    flipped = pm.ciphertext[:-1] + bytes([pm.ciphertext[-1] ^ 1])
    cases: list[tuple[bytes, type[Exception]]] = [
        (variant(ciphertext=flipped), CryptoError),
        (variant(epoch=pm.epoch + 1), WrongEpoch),
        (variant(epoch=2**63), WrongEpoch),
        (variant(group_id=b"other"), InvalidMessage),
        (msg[:-3], DecodeError),
        (msg + b"\0", DecodeError),
        (b"\xff" * 40, DecodeError),
    ]
    for bad, error in cases:
        with pytest.raises(error):
            bob.g.process(bad)
        assert bob.g.to_bytes() == before
    bob.g.process(msg)
    with pytest.raises(ReplayedMessage):
        bob.g.process(msg)


def test_wrongly_signed_commit_rejected_atomically() -> None:
    h = Harness(["alice", "bob", "carol"])
    alice, bob = h["alice"], h["bob"]
    result = alice.g.commit(alice.rng, NOW)
    before = bob.g.to_bytes()
    epoch = bob.g.epoch
    # A PrivateMessage cannot be re-signed without breaking its AEAD, so forge
    # the signature of the PublicMessage form of a commit.
    pub = alice.g.commit(alice.rng, NOW, public=True).commit
    msg = MLSMessage.from_bytes(pub).public_message
    assert msg is not None
    sig = msg.auth.signature
    bad_auth = dataclasses.replace(msg.auth, signature=sig[:-1] + bytes([sig[-1] ^ 1]))
    forged = MLSMessage.of(dataclasses.replace(msg, auth=bad_auth)).to_bytes()
    with pytest.raises(CryptoError):
        bob.g.process(forged)
    assert bob.g.to_bytes() == before
    bob.g.process(result.commit)  # the genuine one still applies
    assert bob.g.epoch == epoch + 1


def test_commit_with_tampered_confirmation_tag_rejected() -> None:
    h = Harness(["alice", "bob"])
    alice, bob = h["alice"], h["bob"]
    pub = alice.g.commit(alice.rng, NOW, public=True).commit
    msg = MLSMessage.from_bytes(pub).public_message
    assert msg is not None and msg.auth.confirmation_tag is not None
    tag = msg.auth.confirmation_tag
    bad = dataclasses.replace(msg.auth, confirmation_tag=bytes(len(tag)))
    before = bob.g.to_bytes()
    with pytest.raises(RemoteError):
        bob.g.process(MLSMessage.of(dataclasses.replace(msg, auth=bad)).to_bytes())
    assert bob.g.to_bytes() == before
    bob.g.process(pub)
    alice.g.merge_pending_commit()
    h.assert_converged()


def test_competing_commits_first_wins() -> None:
    h = Harness(["alice", "bob", "carol"])
    alice, bob, carol = h["alice"], h["bob"], h["carol"]
    a = alice.g.commit(alice.rng, NOW)
    b = bob.g.commit(bob.rng, NOW)
    # the ordering relay puts bob's commit first
    for p in (alice, carol):
        events = p.g.process(b.commit)
        if p is alice:
            assert isinstance(events[0], PendingCommitDiscarded)
    bob.g.process(b.commit)
    with pytest.raises(WrongEpoch):
        carol.g.process(a.commit)
    h.assert_converged()


def test_old_epoch_application_message_still_opens() -> None:
    h = Harness(["alice", "bob", "carol"])
    late = h["carol"].g.encrypt(b"sent before the commit", h["carol"].rng)
    h.commit("alice")
    events = h["bob"].g.process(late)
    assert isinstance(events[0], ApplicationMessageReceived)
    assert events[0].data == b"sent before the commit"


def test_serialization_round_trip_continues() -> None:
    h = Harness(["alice", "bob", "carol"])
    bob = h["bob"]
    bob.group = Group.from_bytes(bob.g.to_bytes())
    h.commit("carol")
    h.broadcast("bob", bob.g.encrypt(b"after restore", bob.rng))
    h.assert_converged()
    with pytest.raises(DecodeError):
        Group.from_bytes(bob.g.to_bytes()[:-1])


def test_external_join_and_resync() -> None:
    h = Harness(["alice", "bob"])
    dave = Party("dave")
    info = h["alice"].g.group_info()
    dave.group, commit = Group.join_external(info, dave.identity, dave.rng, NOW)
    h.broadcast("dave", commit)
    h.parties["dave"] = dave
    h.assert_converged()
    h.broadcast("dave", dave.g.encrypt(b"hi from dave", dave.rng))
    assert any(
        isinstance(e, ApplicationMessageReceived) and e.data == b"hi from dave"
        for e in h["bob"].received
    )


def test_events_and_unknown_member_and_add_duplicate() -> None:
    h = Harness(["alice", "bob"])
    carol = Party("carol")
    bundle = carol.key_package()
    result = h["alice"].g.commit(h["alice"].rng, NOW, add=[bundle])
    events = h["bob"].g.process(result.commit)
    assert any(isinstance(e, MemberAdded) and e.identity == b"carol" for e in events)
    assert isinstance(events[-1], EpochAdvanced)
    h["alice"].g.merge_pending_commit()
    with pytest.raises(InvalidCommit):
        h["alice"].g.commit(h["alice"].rng, NOW, add=[bundle])  # already a member
    with pytest.raises((InvalidCommit, UnknownMember)):
        h["alice"].g.commit(h["alice"].rng, NOW, remove=[7])
    removal = h["alice"].g.commit(h["alice"].rng, NOW, remove=[1])
    assert any(isinstance(e, MemberRemoved) for e in h["bob"].g.process(removal.commit))
    with pytest.raises(StateError):
        h["bob"].g.encrypt(b"x", h["bob"].rng)


def test_removed_member_cannot_read_new_epoch() -> None:
    h = Harness(["alice", "bob", "carol"])
    h.commit("alice", remove=[h["bob"].g.own_leaf_index])
    secret = h["alice"].g.encrypt(b"after removal", h["alice"].rng)
    with pytest.raises((WrongEpoch, StateError)):
        h["bob"].g.process(secret)


def test_private_handshake_hides_membership_from_relay() -> None:
    h = Harness(["alice", "bob"])
    carol = Party("carol")
    result = h["alice"].g.commit(h["alice"].rng, NOW, add=[carol.key_package()])
    msg = MLSMessage.from_bytes(result.commit)
    assert isinstance(msg.body, PrivateMessage)
    assert b"carol" not in result.commit
