"""Events the group layer emits while processing messages.

Frozen dataclasses, named in the past tense; the client turns them into
history entries and notifications.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ApplicationMessageReceived:
    """An application message, credited to who sent it *in its epoch*.

    ``sender_identity`` and ``sender_signature_key`` are the credential of
    the member that held leaf ``sender`` in epoch ``epoch`` (the key that
    verified the message).  A late message's leaf may be blank or another
    member's by now: use these fields, not the current tree, to name the
    sender."""

    sender: int  # leaf index in epoch ``epoch``
    data: bytes
    authenticated_data: bytes
    epoch: int
    generation: int
    sender_identity: bytes  # the sender's credential identity in that epoch
    sender_signature_key: bytes  # the key the message's signature verified with


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    reference: bytes
    proposal_type: int
    sender_type: int
    sender_index: int | None


@dataclass(frozen=True, slots=True)
class ProposalDropped:
    """A cached proposal our commit left out (SPEC §4.4): invalid against the
    state at commit time, refused by the policy, or superseded (RFC 9420 §12.2)."""

    reference: bytes
    proposal_type: int
    sender_index: int | None  # leaf index, or external sender index, or None
    reason: str


@dataclass(frozen=True, slots=True)
class MemberAdded:
    leaf_index: int
    identity: bytes
    signature_key: bytes


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    leaf_index: int
    identity: bytes


@dataclass(frozen=True, slots=True)
class MemberUpdated:
    leaf_index: int


@dataclass(frozen=True, slots=True)
class ExtensionsChanged:
    extension_types: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EpochAdvanced:
    epoch: int
    epoch_authenticator: bytes
    committer: int | None  # leaf index; None for an external commit's joiner


@dataclass(frozen=True, slots=True)
class RemovedFromGroup:
    """This member was removed; the group can no longer be used to send.

    A removed member cannot derive the new epoch, so the Commit's
    confirmation tag is NOT verified (RFC 9420 §12.4.2 needs the new
    epoch's confirmation_key); only its framing (membership tag or sender
    data) and the ``committer``'s signature in the current epoch are.  The
    removal is therefore a claim by ``committer`` that the others may not
    share."""

    epoch: int
    committer: int | None = None  # leaf index of the signer; None: external commit


@dataclass(frozen=True, slots=True)
class ReInitRequested:
    """A committed ReInit: the group is closed, a successor will follow (§11.2)."""

    group_id: bytes
    version: int
    cipher_suite: int


@dataclass(frozen=True, slots=True)
class PendingCommitDiscarded:
    """Another member's commit for the same epoch won; ours is void."""

    epoch: int


GroupEvent = (
    ApplicationMessageReceived
    | ProposalReceived
    | ProposalDropped
    | MemberAdded
    | MemberRemoved
    | MemberUpdated
    | ExtensionsChanged
    | EpochAdvanced
    | RemovedFromGroup
    | ReInitRequested
    | PendingCommitDiscarded
)
