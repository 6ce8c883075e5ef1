"""Late application messages: who sent them, and what keeps them verifiable.

A message sent in epoch N may be processed after commits that removed its
sender and put somebody else into the same leaf.  It must be credited to
the credential that held the leaf in epoch N (RFC 9420 §6.1, §6.3.2: the
sender data names a leaf of *that* epoch's tree), never to the leaf's
current occupant.
"""

from __future__ import annotations

import pytest

from protocol.codec import Writer
from protocol.errors import CryptoError
from protocol.mls import group_state
from protocol.mls.errors import ReplayedMessage
from protocol.mls.events import ApplicationMessageReceived, GroupEvent
from protocol.mls.group import Group
from protocol.mls.group_state import EpochMember
from tests.mls_harness import Harness, Party


def _join(h: Harness, committer: str, joiner: str, **kwargs: object) -> None:
    party = h.parties.setdefault(joiner, Party(joiner))
    bundle = party.key_package()
    result = h.commit(committer, add=[bundle], **kwargs)
    assert result.welcome is not None
    party.group = Group.join(result.welcome, bundle)


def _app(events: list[GroupEvent]) -> ApplicationMessageReceived:
    (event,) = events
    assert isinstance(event, ApplicationMessageReceived)
    return event


def test_late_message_names_its_sender_after_the_leaf_was_reused() -> None:
    h = Harness(["alice", "bob", "dave"])
    bob = h["bob"]
    bob_leaf = bob.g.own_leaf_index
    late = bob.g.encrypt(b"sent before removal", bob.rng)
    # one commit removes bob and adds carol, who takes bob's leaf
    _join(h, "alice", "carol", remove=[bob_leaf])
    assert h["carol"].g.own_leaf_index == bob_leaf
    event = _app(h["dave"].g.process(late))
    assert event.data == b"sent before removal"
    assert event.sender == bob_leaf
    assert event.sender_identity == b"bob"
    assert event.sender_signature_key == bob.identity.signature_pub
    current = h["dave"].g.member_leaf(bob_leaf)
    assert current.signature_key == h["carol"].identity.signature_pub  # the leaf moved on


def test_late_message_two_epochs_old_after_remove_then_add() -> None:
    h = Harness(["alice", "bob", "dave"])
    bob = h["bob"]
    bob_leaf = bob.g.own_leaf_index
    late = bob.g.encrypt(b"two epochs late", bob.rng)
    h.commit("alice", remove=[bob_leaf])
    _join(h, "dave", "carol")
    assert h["carol"].g.own_leaf_index == bob_leaf
    event = _app(h["alice"].g.process(late))
    assert (event.sender_identity, event.sender_signature_key) == (
        b"bob",
        bob.identity.signature_pub,
    )


def test_late_message_from_a_now_blank_leaf_names_its_sender() -> None:
    h = Harness(["alice", "bob", "dave"])
    bob = h["bob"]
    late = bob.g.encrypt(b"from a leaf that is blank now", bob.rng)
    h.commit("alice", remove=[bob.g.own_leaf_index])
    assert bob.g.own_leaf_index not in [i for i, _, _ in h["dave"].g.members()]
    event = _app(h["dave"].g.process(late))
    assert event.sender_identity == b"bob"
    assert event.sender_signature_key == bob.identity.signature_pub


def test_current_epoch_message_carries_the_sender_credential() -> None:
    h = Harness(["alice", "bob"])
    bob = h["bob"]
    event = _app(h["alice"].g.process(bob.g.encrypt(b"now", bob.rng)))
    assert event.sender_identity == b"bob"
    assert event.sender_signature_key == bob.identity.signature_pub


def test_late_message_is_accepted_once_and_rejections_change_nothing() -> None:
    h = Harness(["alice", "bob", "dave"])
    bob = h["bob"]
    late = bob.g.encrypt(b"once", bob.rng)
    _join(h, "alice", "carol", remove=[bob.g.own_leaf_index])
    dave = h["dave"].g
    tampered = bytearray(late)
    tampered[-1] ^= 1
    before = dave.to_bytes()
    with pytest.raises(CryptoError):
        dave.process(bytes(tampered))  # the AEAD tag of the content fails
    assert dave.to_bytes() == before
    assert _app(dave.process(late)).sender_identity == b"bob"
    after = dave.to_bytes()
    with pytest.raises(ReplayedMessage):
        dave.process(late)
    assert dave.to_bytes() == after


def test_past_epoch_credentials_survive_serialization() -> None:
    h = Harness(["alice", "bob", "dave"])
    bob = h["bob"]
    late = bob.g.encrypt(b"stored then opened", bob.rng)
    _join(h, "alice", "carol", remove=[bob.g.own_leaf_index])
    restored = Group.from_bytes(h["dave"].g.to_bytes())
    event = _app(restored.process(late))
    assert event.sender_identity == b"bob"
    assert event.sender_signature_key == bob.identity.signature_pub


def test_format_1_state_still_opens_late_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """A state stored before identities were kept (format 1: leaf -> key)
    still loads; a member still in the tree gets its identity back, a
    departed one is named by the key its message verified with."""
    h = Harness(["alice", "bob", "dave"])
    from_alice = h["alice"].g.encrypt(b"alice, late", h["alice"].rng)
    from_bob = h["bob"].g.encrypt(b"bob, late", h["bob"].rng)
    h.commit("alice", remove=[h["bob"].g.own_leaf_index])

    def push_format_1(w: Writer, item: tuple[int, EpochMember]) -> None:
        w.push_uint64(item[0])
        w.push_opaque(item[1].signature_key)

    with monkeypatch.context() as m:
        m.setattr(group_state, "STATE_FORMAT", 1)
        m.setattr(group_state, "_push_member", push_format_1)
        old = h["dave"].g.to_bytes()
    assert old[:2] == b"\x00\x01"
    dave = Group.from_bytes(old)
    alice_event = _app(dave.process(from_alice))
    assert (alice_event.sender_identity, alice_event.sender_signature_key) == (
        b"alice",
        h["alice"].identity.signature_pub,
    )
    bob_event = _app(dave.process(from_bob))
    assert bob_event.sender_signature_key == h["bob"].identity.signature_pub
    assert bob_event.sender_identity == b""  # unknown: format 1 did not keep it
    assert dave.to_bytes()[:2] == b"\x00\x02"


def test_restore_after_a_late_message_gives_its_key_back() -> None:
    """The client snapshots a group before processing and restores it when
    the store fails; the restored group must open the same late message
    again (the past epoch's ratchet must not be shared with the snapshot)."""
    h = Harness(["alice", "bob", "dave"])
    bob = h["bob"]
    late = bob.g.encrypt(b"stored or not at all", bob.rng)
    _join(h, "alice", "carol", remove=[bob.g.own_leaf_index])
    dave = h["dave"].g
    before = dave.to_bytes()
    snapshot = dave.snapshot()
    dave.process(late)
    dave.restore(snapshot)
    assert dave.to_bytes() == before
    assert _app(dave.process(late)).sender_identity == b"bob"
    snapshot = dave.snapshot()
    mine = h["alice"].g.encrypt(b"current epoch", h["alice"].rng)
    dave.process(mine)
    dave.restore(snapshot)
    assert _app(dave.process(mine)).data == b"current epoch"
