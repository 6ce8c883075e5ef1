"""RFC 9420 wire structs of the group: framing, proposals, commits, joining.

Provides ``GroupContext`` (§8.1), ``PreSharedKeyID`` / ``PSKLabel`` (§8.4), the
proposals ``Add`` ... ``GroupContextExtensions`` with ``Proposal`` (§12.1),
``ProposalOrRef`` and ``Commit`` (§12.4), the framing structs ``Sender``,
``FramedContent``, ``FramedContentAuthData``, ``AuthenticatedContent``,
``PublicMessage``, ``PrivateMessage``, ``PrivateMessageContent``,
``SenderData`` and the AAD structs (§6), the joining structs ``GroupInfo``,
``PathSecret``, ``GroupSecrets``, ``EncryptedGroupSecrets``, ``Welcome``,
``ExternalPub`` (§12.4.3) and ``MLSMessage`` (§6), plus encoding helpers for the
signed/MACed/hashed inputs (``framed_content_tbs``,
``authenticated_content_tbm``, ``confirmed_transcript_hash_input``,
``interim_transcript_hash_input``).

The conventions are those of :mod:`protocol.mls.tree_structs`.  Variants:

* a ``select`` whose arms are single values (``FramedContent``,
  ``PrivateMessageContent``, ``Proposal``, ``MLSMessage``) keeps its type field
  (``content_type``, ``proposal_type``, ``wire_format``) and carries the arm in
  one field (``content``, ``body``) typed as the union of the arms; the
  constructor checks that the two agree.  Properties (``FramedContent.commit``,
  ``MLSMessage.welcome``, ...) give the typed arm or ``None``;
* other selects (``Sender``, ``PreSharedKeyID``, ``ProposalOrRef``) have one
  optional attribute per arm, as in tree_structs.

``FramedContentAuthData`` and ``PrivateMessageContent`` cannot be decoded on
their own (their layout depends on a content type carried elsewhere), so their
``decode`` / ``from_bytes`` take ``content_type``.  An unknown proposal type is
a ``DecodeError``: its body has no format we could skip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Self

from protocol.codec import Reader, Writer, decode_exact
from protocol.errors import DecodeError, LocalError
from protocol.mls.tree_structs import (
    Extension,
    HPKECiphertext,
    KeyPackage,
    LeafNode,
    ProposalType,
    ProtocolVersion,
    Struct,
    UpdatePath,
    pull_enum,
    pull_extensions,
    pull_structs,
    push_structs,
)


class WireFormat(IntEnum):
    MLS_PUBLIC_MESSAGE = 1
    MLS_PRIVATE_MESSAGE = 2
    MLS_WELCOME = 3
    MLS_GROUP_INFO = 4
    MLS_KEY_PACKAGE = 5


class ContentType(IntEnum):
    APPLICATION = 1
    PROPOSAL = 2
    COMMIT = 3


class SenderType(IntEnum):
    MEMBER = 1
    EXTERNAL = 2
    NEW_MEMBER_PROPOSAL = 3
    NEW_MEMBER_COMMIT = 4


class PSKType(IntEnum):
    EXTERNAL = 1
    RESUMPTION = 2


class ResumptionPSKUsage(IntEnum):
    APPLICATION = 1
    REINIT = 2
    BRANCH = 3


class ProposalOrRefType(IntEnum):
    PROPOSAL = 1
    REFERENCE = 2


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise LocalError(what)


def _pull_version(r: Reader) -> ProtocolVersion:
    return pull_enum(r, ProtocolVersion, Reader.pull_uint16)


# --------------------------------------------------------------------------
# GroupContext and PSKs (RFC 9420 §8.1, §8.4)


@dataclass(frozen=True, slots=True)
class GroupContext(Struct):
    version: ProtocolVersion
    cipher_suite: int
    group_id: bytes
    epoch: int
    tree_hash: bytes
    confirmed_transcript_hash: bytes
    extensions: tuple[Extension, ...]

    def encode(self, w: Writer) -> None:
        w.push_uint16(self.version)
        w.push_uint16(self.cipher_suite)
        w.push_opaque(self.group_id)
        w.push_uint64(self.epoch)
        w.push_opaque(self.tree_hash)
        w.push_opaque(self.confirmed_transcript_hash)
        push_structs(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(
            _pull_version(r),
            r.pull_uint16(),
            r.pull_opaque(),
            r.pull_uint64(),
            r.pull_opaque(),
            r.pull_opaque(),
            pull_extensions(r),
        )


@dataclass(frozen=True, slots=True)
class PreSharedKeyID(Struct):
    """``psk_id`` is set iff psktype is external; ``usage``, ``psk_group_id``
    and ``psk_epoch`` iff it is resumption."""

    psktype: PSKType
    psk_id: bytes | None = None
    usage: ResumptionPSKUsage | None = None
    psk_group_id: bytes | None = None
    psk_epoch: int | None = None
    psk_nonce: bytes = b""

    def __post_init__(self) -> None:
        ext = self.psktype == PSKType.EXTERNAL
        res = (self.usage, self.psk_group_id, self.psk_epoch)
        _require(
            (self.psk_id is not None) == ext and all((x is not None) == (not ext) for x in res),
            f"PreSharedKeyID arms do not match psktype {self.psktype!r}",
        )

    @classmethod
    def external(cls, psk_id: bytes, psk_nonce: bytes) -> PreSharedKeyID:
        return cls(PSKType.EXTERNAL, psk_id=psk_id, psk_nonce=psk_nonce)

    @classmethod
    def resumption(
        cls, usage: ResumptionPSKUsage, psk_group_id: bytes, psk_epoch: int, psk_nonce: bytes
    ) -> PreSharedKeyID:
        return cls(
            PSKType.RESUMPTION,
            usage=usage,
            psk_group_id=psk_group_id,
            psk_epoch=psk_epoch,
            psk_nonce=psk_nonce,
        )

    def encode(self, w: Writer) -> None:
        w.push_uint8(self.psktype)
        if self.psk_id is not None:
            w.push_opaque(self.psk_id)
        if self.usage is not None and self.psk_group_id is not None and self.psk_epoch is not None:
            w.push_uint8(self.usage)
            w.push_opaque(self.psk_group_id)
            w.push_uint64(self.psk_epoch)
        w.push_opaque(self.psk_nonce)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        psktype = pull_enum(r, PSKType, Reader.pull_uint8)
        if psktype == PSKType.EXTERNAL:
            return cls(psktype, psk_id=r.pull_opaque(), psk_nonce=r.pull_opaque())
        return cls(
            psktype,
            usage=pull_enum(r, ResumptionPSKUsage, Reader.pull_uint8),
            psk_group_id=r.pull_opaque(),
            psk_epoch=r.pull_uint64(),
            psk_nonce=r.pull_opaque(),
        )


@dataclass(frozen=True, slots=True)
class PSKLabel(Struct):
    id: PreSharedKeyID
    index: int
    count: int

    def encode(self, w: Writer) -> None:
        self.id.encode(w)
        w.push_uint16(self.index)
        w.push_uint16(self.count)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(PreSharedKeyID.decode(r), r.pull_uint16(), r.pull_uint16())


# --------------------------------------------------------------------------
# Proposals (RFC 9420 §12.1)


@dataclass(frozen=True, slots=True)
class Add(Struct):
    PROPOSAL_TYPE: ClassVar[int] = ProposalType.ADD
    key_package: KeyPackage

    def encode(self, w: Writer) -> None:
        self.key_package.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(KeyPackage.decode(r))


@dataclass(frozen=True, slots=True)
class Update(Struct):
    PROPOSAL_TYPE: ClassVar[int] = ProposalType.UPDATE
    leaf_node: LeafNode

    def encode(self, w: Writer) -> None:
        self.leaf_node.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(LeafNode.decode(r))


@dataclass(frozen=True, slots=True)
class Remove(Struct):
    PROPOSAL_TYPE: ClassVar[int] = ProposalType.REMOVE
    removed: int

    def encode(self, w: Writer) -> None:
        w.push_uint32(self.removed)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_uint32())


@dataclass(frozen=True, slots=True)
class PreSharedKey(Struct):
    PROPOSAL_TYPE: ClassVar[int] = ProposalType.PSK
    psk: PreSharedKeyID

    def encode(self, w: Writer) -> None:
        self.psk.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(PreSharedKeyID.decode(r))


@dataclass(frozen=True, slots=True)
class ReInit(Struct):
    """``version`` is validated as mls10 like every other ProtocolVersion field."""

    PROPOSAL_TYPE: ClassVar[int] = ProposalType.REINIT
    group_id: bytes
    version: ProtocolVersion
    cipher_suite: int
    extensions: tuple[Extension, ...]

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.group_id)
        w.push_uint16(self.version)
        w.push_uint16(self.cipher_suite)
        push_structs(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_opaque(), _pull_version(r), r.pull_uint16(), pull_extensions(r))


@dataclass(frozen=True, slots=True)
class ExternalInit(Struct):
    PROPOSAL_TYPE: ClassVar[int] = ProposalType.EXTERNAL_INIT
    kem_output: bytes

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.kem_output)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_opaque())


@dataclass(frozen=True, slots=True)
class GroupContextExtensions(Struct):
    PROPOSAL_TYPE: ClassVar[int] = ProposalType.GROUP_CONTEXT_EXTENSIONS
    extensions: tuple[Extension, ...]

    def encode(self, w: Writer) -> None:
        push_structs(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(pull_extensions(r))


ProposalBody = Add | Update | Remove | PreSharedKey | ReInit | ExternalInit | GroupContextExtensions

PROPOSAL_BODIES: dict[int, type[ProposalBody]] = {
    cls.PROPOSAL_TYPE: cls
    for cls in (Add, Update, Remove, PreSharedKey, ReInit, ExternalInit, GroupContextExtensions)
}


@dataclass(frozen=True, slots=True)
class Proposal(Struct):
    """``Proposal``: ``body`` is the struct selected by ``proposal_type``."""

    proposal_type: int
    body: ProposalBody

    def __post_init__(self) -> None:
        _require(
            self.proposal_type == self.body.PROPOSAL_TYPE,
            f"{type(self.body).__name__} body under proposal_type {self.proposal_type}",
        )

    @classmethod
    def of(cls, body: ProposalBody) -> Proposal:
        return cls(body.PROPOSAL_TYPE, body)

    def encode(self, w: Writer) -> None:
        w.push_uint16(self.proposal_type)
        self.body.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        proposal_type = r.pull_uint16()
        body_cls = PROPOSAL_BODIES.get(proposal_type)
        if body_cls is None:
            raise DecodeError(f"unknown proposal type {proposal_type}")
        return cls(proposal_type, body_cls.decode(r))


@dataclass(frozen=True, slots=True)
class ProposalOrRef(Struct):
    """``proposal`` is set iff type is proposal, ``reference`` (a ProposalRef)
    iff it is reference."""

    type: ProposalOrRefType
    proposal: Proposal | None = None
    reference: bytes | None = None

    def __post_init__(self) -> None:
        _require(
            (self.proposal is not None) == (self.type == ProposalOrRefType.PROPOSAL)
            and (self.reference is not None) == (self.type == ProposalOrRefType.REFERENCE),
            f"ProposalOrRef arms do not match type {self.type!r}",
        )

    @classmethod
    def of_proposal(cls, proposal: Proposal) -> ProposalOrRef:
        return cls(ProposalOrRefType.PROPOSAL, proposal=proposal)

    @classmethod
    def of_reference(cls, reference: bytes) -> ProposalOrRef:
        return cls(ProposalOrRefType.REFERENCE, reference=reference)

    def encode(self, w: Writer) -> None:
        w.push_uint8(self.type)
        if self.proposal is not None:
            self.proposal.encode(w)
        elif self.reference is not None:
            w.push_opaque(self.reference)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        t = pull_enum(r, ProposalOrRefType, Reader.pull_uint8)
        if t == ProposalOrRefType.PROPOSAL:
            return cls(t, proposal=Proposal.decode(r))
        return cls(t, reference=r.pull_opaque())


@dataclass(frozen=True, slots=True)
class Commit(Struct):
    proposals: tuple[ProposalOrRef, ...]
    path: UpdatePath | None

    def encode(self, w: Writer) -> None:
        push_structs(w, self.proposals)
        w.push_optional(self.path, _push_struct)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(pull_structs(r, ProposalOrRef), r.pull_optional(UpdatePath.decode))


def _push_struct(w: Writer, item: Struct) -> None:
    item.encode(w)


# --------------------------------------------------------------------------
# Framing (RFC 9420 §6)


@dataclass(frozen=True, slots=True)
class Sender(Struct):
    """``leaf_index`` is set iff sender_type is member, ``sender_index`` iff it
    is external; the new_member types carry nothing."""

    sender_type: SenderType
    leaf_index: int | None = None
    sender_index: int | None = None

    def __post_init__(self) -> None:
        _require(
            (self.leaf_index is not None) == (self.sender_type == SenderType.MEMBER)
            and (self.sender_index is not None) == (self.sender_type == SenderType.EXTERNAL),
            f"Sender arms do not match sender_type {self.sender_type!r}",
        )

    @classmethod
    def member(cls, leaf_index: int) -> Sender:
        return cls(SenderType.MEMBER, leaf_index=leaf_index)

    @classmethod
    def external(cls, sender_index: int) -> Sender:
        return cls(SenderType.EXTERNAL, sender_index=sender_index)

    @classmethod
    def new_member_proposal(cls) -> Sender:
        return cls(SenderType.NEW_MEMBER_PROPOSAL)

    @classmethod
    def new_member_commit(cls) -> Sender:
        return cls(SenderType.NEW_MEMBER_COMMIT)

    def encode(self, w: Writer) -> None:
        w.push_uint8(self.sender_type)
        if self.leaf_index is not None:
            w.push_uint32(self.leaf_index)
        elif self.sender_index is not None:
            w.push_uint32(self.sender_index)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        st = pull_enum(r, SenderType, Reader.pull_uint8)
        if st == SenderType.MEMBER:
            return cls(st, leaf_index=r.pull_uint32())
        if st == SenderType.EXTERNAL:
            return cls(st, sender_index=r.pull_uint32())
        return cls(st)


Content = bytes | Proposal | Commit
_CONTENT_CLASS: dict[ContentType, type] = {
    ContentType.APPLICATION: bytes,
    ContentType.PROPOSAL: Proposal,
    ContentType.COMMIT: Commit,
}


def _check_content(content_type: ContentType, content: Content) -> None:
    _require(
        type(content) is _CONTENT_CLASS[content_type],
        f"{type(content).__name__} content under content_type {content_type!r}",
    )


def _push_content(w: Writer, content: Content) -> None:
    if isinstance(content, bytes):
        w.push_opaque(content)
    else:
        content.encode(w)


def _pull_content(r: Reader, content_type: ContentType) -> Content:
    if content_type == ContentType.APPLICATION:
        return r.pull_opaque()
    if content_type == ContentType.PROPOSAL:
        return Proposal.decode(r)
    return Commit.decode(r)


class _ContentArms:
    """Typed views of a ``content`` field selected by ``content_type``."""

    __slots__ = ()
    content: Content

    @property
    def application_data(self) -> bytes | None:
        return self.content if isinstance(self.content, bytes) else None

    @property
    def proposal(self) -> Proposal | None:
        return self.content if isinstance(self.content, Proposal) else None

    @property
    def commit(self) -> Commit | None:
        return self.content if isinstance(self.content, Commit) else None


@dataclass(frozen=True, slots=True)
class FramedContent(_ContentArms, Struct):
    """``FramedContent``: ``content`` is application_data (bytes), a Proposal or
    a Commit, as ``content_type`` says."""

    group_id: bytes
    epoch: int
    sender: Sender
    authenticated_data: bytes
    content_type: ContentType
    content: Content
    # The encoding, memoised: a commit's content is encoded for its signature
    # (FramedContentTBS), its transcript hash and its framing, and with a path
    # to a large group it holds thousands of ciphertexts.  Every field is
    # immutable, so the encoding cannot go stale.
    _encoded: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_content(self.content_type, self.content)

    def encode(self, w: Writer) -> None:
        encoded = self._encoded
        if encoded is None:
            sub = Writer()
            sub.push_opaque(self.group_id)
            sub.push_uint64(self.epoch)
            self.sender.encode(sub)
            sub.push_opaque(self.authenticated_data)
            sub.push_uint8(self.content_type)
            _push_content(sub, self.content)
            encoded = sub.getvalue()
            object.__setattr__(self, "_encoded", encoded)
        w.push_bytes(encoded)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        group_id = r.pull_opaque()
        epoch = r.pull_uint64()
        sender = Sender.decode(r)
        authenticated_data = r.pull_opaque()
        content_type = pull_enum(r, ContentType, Reader.pull_uint8)
        content = _pull_content(r, content_type)
        return cls(group_id, epoch, sender, authenticated_data, content_type, content)


def framed_content_tbs(
    wire_format: WireFormat, content: FramedContent, context: GroupContext | None
) -> bytes:
    """The encoded ``FramedContentTBS`` (RFC 9420 §6.1), signed under label
    "FramedContentTBS".  ``context`` is required exactly when the sender is a
    member or a new_member_commit."""
    needs_context = content.sender.sender_type in (
        SenderType.MEMBER,
        SenderType.NEW_MEMBER_COMMIT,
    )
    _require(
        (context is not None) == needs_context,
        f"FramedContentTBS for sender type {content.sender.sender_type!r} "
        + ("needs" if needs_context else "takes no")
        + " GroupContext",
    )
    w = Writer()
    w.push_uint16(ProtocolVersion.MLS10)
    w.push_uint16(wire_format)
    content.encode(w)
    if context is not None:
        context.encode(w)
    return w.getvalue()


@dataclass(frozen=True, slots=True)
class FramedContentAuthData:
    """``confirmation_tag`` is present iff the content type is commit.

    Not a :class:`Struct`: decoding needs the content type from outside.
    """

    signature: bytes
    confirmation_tag: bytes | None = None

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.signature)
        if self.confirmation_tag is not None:
            w.push_opaque(self.confirmation_tag)

    @classmethod
    def decode(cls, r: Reader, content_type: ContentType) -> Self:
        signature = r.pull_opaque()
        tag = r.pull_opaque() if content_type == ContentType.COMMIT else None
        return cls(signature, tag)

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, content_type: ContentType) -> Self:
        return decode_exact(data, lambda r: cls.decode(r, content_type))

    def check(self, content_type: ContentType) -> None:
        _require(
            (self.confirmation_tag is not None) == (content_type == ContentType.COMMIT),
            "confirmation_tag must be present exactly for commits",
        )


@dataclass(frozen=True, slots=True)
class AuthenticatedContent(Struct):
    wire_format: WireFormat
    content: FramedContent
    auth: FramedContentAuthData

    def __post_init__(self) -> None:
        self.auth.check(self.content.content_type)

    def encode(self, w: Writer) -> None:
        w.push_uint16(self.wire_format)
        self.content.encode(w)
        self.auth.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        wire_format = pull_enum(r, WireFormat, Reader.pull_uint16)
        content = FramedContent.decode(r)
        return cls(wire_format, content, FramedContentAuthData.decode(r, content.content_type))


def authenticated_content_tbm(content_tbs: bytes, auth: FramedContentAuthData) -> bytes:
    """``AuthenticatedContentTBM`` (RFC 9420 §6.2), the membership_tag input,
    from an encoded FramedContentTBS (see :func:`framed_content_tbs`)."""
    return content_tbs + auth.to_bytes()


def confirmed_transcript_hash_input(
    wire_format: WireFormat, content: FramedContent, signature: bytes
) -> bytes:
    """``ConfirmedTranscriptHashInput`` (RFC 9420 §8.2)."""
    _require(content.content_type == ContentType.COMMIT, "transcript input needs a commit")
    w = Writer()
    w.push_uint16(wire_format)
    content.encode(w)
    w.push_opaque(signature)
    return w.getvalue()


def interim_transcript_hash_input(confirmation_tag: bytes) -> bytes:
    """``InterimTranscriptHashInput`` (RFC 9420 §8.2)."""
    w = Writer()
    w.push_opaque(confirmation_tag)
    return w.getvalue()


@dataclass(frozen=True, slots=True)
class PublicMessage(Struct):
    """``membership_tag`` is present iff the sender is a member."""

    content: FramedContent
    auth: FramedContentAuthData
    membership_tag: bytes | None = None

    def __post_init__(self) -> None:
        self.auth.check(self.content.content_type)
        _require(
            (self.membership_tag is not None)
            == (self.content.sender.sender_type == SenderType.MEMBER),
            "membership_tag must be present exactly for member senders",
        )

    def encode(self, w: Writer) -> None:
        self.content.encode(w)
        self.auth.encode(w)
        if self.membership_tag is not None:
            w.push_opaque(self.membership_tag)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        content = FramedContent.decode(r)
        auth = FramedContentAuthData.decode(r, content.content_type)
        tag = r.pull_opaque() if content.sender.sender_type == SenderType.MEMBER else None
        return cls(content, auth, tag)


@dataclass(frozen=True, slots=True)
class PrivateMessage(Struct):
    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes
    encrypted_sender_data: bytes
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.group_id)
        w.push_uint64(self.epoch)
        w.push_uint8(self.content_type)
        w.push_opaque(self.authenticated_data)
        w.push_opaque(self.encrypted_sender_data)
        w.push_opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(
            r.pull_opaque(),
            r.pull_uint64(),
            pull_enum(r, ContentType, Reader.pull_uint8),
            r.pull_opaque(),
            r.pull_opaque(),
            r.pull_opaque(),
        )


@dataclass(frozen=True, slots=True)
class PrivateMessageContent(_ContentArms):
    """``PrivateMessageContent`` (RFC 9420 §6.3.1): ``content`` as in
    FramedContent; ``padding`` must be all zero bytes (checked on decode).

    Not a :class:`Struct`: decoding needs ``PrivateMessage.content_type``, and
    the padding runs to the end of the input, so decode whole plaintexts with
    ``from_bytes(plaintext, content_type)``.
    """

    content: Content
    auth: FramedContentAuthData
    padding: bytes = b""

    @property
    def content_type(self) -> ContentType:
        if isinstance(self.content, bytes):
            return ContentType.APPLICATION
        if isinstance(self.content, Proposal):
            return ContentType.PROPOSAL
        return ContentType.COMMIT

    def __post_init__(self) -> None:
        self.auth.check(self.content_type)
        _require(not any(self.padding), "padding must be zero bytes")

    def encode(self, w: Writer) -> None:
        _push_content(w, self.content)
        self.auth.encode(w)
        w.push_bytes(self.padding)

    @classmethod
    def decode(cls, r: Reader, content_type: ContentType) -> Self:
        content = _pull_content(r, content_type)
        auth = FramedContentAuthData.decode(r, content_type)
        padding = r.pull_bytes(r.remaining)
        if any(padding):
            raise DecodeError("non-zero padding in PrivateMessageContent")
        return cls(content, auth, padding)

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, content_type: ContentType) -> Self:
        return decode_exact(data, lambda r: cls.decode(r, content_type))


@dataclass(frozen=True, slots=True)
class SenderData(Struct):
    leaf_index: int
    generation: int
    reuse_guard: bytes

    def __post_init__(self) -> None:
        _require(len(self.reuse_guard) == 4, "reuse_guard is 4 bytes")

    def encode(self, w: Writer) -> None:
        w.push_uint32(self.leaf_index)
        w.push_uint32(self.generation)
        w.push_bytes(self.reuse_guard)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_uint32(), r.pull_uint32(), r.pull_bytes(4))


@dataclass(frozen=True, slots=True)
class SenderDataAAD(Struct):
    group_id: bytes
    epoch: int
    content_type: ContentType

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.group_id)
        w.push_uint64(self.epoch)
        w.push_uint8(self.content_type)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_opaque(), r.pull_uint64(), pull_enum(r, ContentType, Reader.pull_uint8))


@dataclass(frozen=True, slots=True)
class PrivateContentAAD(Struct):
    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.group_id)
        w.push_uint64(self.epoch)
        w.push_uint8(self.content_type)
        w.push_opaque(self.authenticated_data)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(
            r.pull_opaque(),
            r.pull_uint64(),
            pull_enum(r, ContentType, Reader.pull_uint8),
            r.pull_opaque(),
        )


# --------------------------------------------------------------------------
# Joining (RFC 9420 §12.4.3)


@dataclass(frozen=True, slots=True)
class GroupInfo(Struct):
    group_context: GroupContext
    extensions: tuple[Extension, ...]
    confirmation_tag: bytes
    signer: int
    signature: bytes

    def _encode_tbs(self, w: Writer) -> None:
        self.group_context.encode(w)
        push_structs(w, self.extensions)
        w.push_opaque(self.confirmation_tag)
        w.push_uint32(self.signer)

    def encode(self, w: Writer) -> None:
        self._encode_tbs(w)
        w.push_opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(
            GroupContext.decode(r),
            pull_extensions(r),
            r.pull_opaque(),
            r.pull_uint32(),
            r.pull_opaque(),
        )

    def tbs_bytes(self) -> bytes:
        """The encoded ``GroupInfoTBS`` (signed under label "GroupInfoTBS")."""
        w = Writer()
        self._encode_tbs(w)
        return w.getvalue()


@dataclass(frozen=True, slots=True)
class ExternalPub(Struct):
    external_pub: bytes

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.external_pub)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_opaque())


@dataclass(frozen=True, slots=True)
class PathSecret(Struct):
    path_secret: bytes

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.path_secret)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_opaque())


@dataclass(frozen=True, slots=True)
class GroupSecrets(Struct):
    joiner_secret: bytes
    path_secret: PathSecret | None
    psks: tuple[PreSharedKeyID, ...]

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.joiner_secret)
        w.push_optional(self.path_secret, _push_struct)
        push_structs(w, self.psks)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(
            r.pull_opaque(), r.pull_optional(PathSecret.decode), pull_structs(r, PreSharedKeyID)
        )


@dataclass(frozen=True, slots=True)
class EncryptedGroupSecrets(Struct):
    new_member: bytes
    encrypted_group_secrets: HPKECiphertext

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.new_member)
        self.encrypted_group_secrets.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_opaque(), HPKECiphertext.decode(r))


@dataclass(frozen=True, slots=True)
class Welcome(Struct):
    cipher_suite: int
    secrets: tuple[EncryptedGroupSecrets, ...]
    encrypted_group_info: bytes

    def encode(self, w: Writer) -> None:
        w.push_uint16(self.cipher_suite)
        push_structs(w, self.secrets)
        w.push_opaque(self.encrypted_group_info)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_uint16(), pull_structs(r, EncryptedGroupSecrets), r.pull_opaque())


# --------------------------------------------------------------------------
# MLSMessage (RFC 9420 §6)

MLSBody = PublicMessage | PrivateMessage | Welcome | GroupInfo | KeyPackage

_BODY_CLASS: dict[WireFormat, type[MLSBody]] = {
    WireFormat.MLS_PUBLIC_MESSAGE: PublicMessage,
    WireFormat.MLS_PRIVATE_MESSAGE: PrivateMessage,
    WireFormat.MLS_WELCOME: Welcome,
    WireFormat.MLS_GROUP_INFO: GroupInfo,
    WireFormat.MLS_KEY_PACKAGE: KeyPackage,
}
_WIRE_FORMAT = {cls: wf for wf, cls in _BODY_CLASS.items()}


@dataclass(frozen=True, slots=True)
class MLSMessage(Struct):
    """``MLSMessage``: ``body`` is the struct selected by ``wire_format``.

    Build one with :meth:`of`; decoding requires version mls10.
    """

    version: ProtocolVersion
    wire_format: WireFormat
    body: MLSBody

    def __post_init__(self) -> None:
        _require(
            type(self.body) is _BODY_CLASS[self.wire_format],
            f"{type(self.body).__name__} body under wire_format {self.wire_format!r}",
        )

    @classmethod
    def of(cls, body: MLSBody) -> MLSMessage:
        return cls(ProtocolVersion.MLS10, _WIRE_FORMAT[type(body)], body)

    def encode(self, w: Writer) -> None:
        w.push_uint16(self.version)
        w.push_uint16(self.wire_format)
        self.body.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        version = _pull_version(r)
        wire_format = pull_enum(r, WireFormat, Reader.pull_uint16)
        return cls(version, wire_format, _BODY_CLASS[wire_format].decode(r))

    @property
    def public_message(self) -> PublicMessage | None:
        return self.body if isinstance(self.body, PublicMessage) else None

    @property
    def private_message(self) -> PrivateMessage | None:
        return self.body if isinstance(self.body, PrivateMessage) else None

    @property
    def welcome(self) -> Welcome | None:
        return self.body if isinstance(self.body, Welcome) else None

    @property
    def group_info(self) -> GroupInfo | None:
        return self.body if isinstance(self.body, GroupInfo) else None

    @property
    def key_package(self) -> KeyPackage | None:
        return self.body if isinstance(self.body, KeyPackage) else None
