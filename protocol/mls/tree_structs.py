"""RFC 9420 wire structs of credentials, key packages and the ratchet tree.

Provides ``Credential``/``Certificate`` (§5.3), ``Capabilities``, ``Lifetime``,
``Extension``, ``LeafNode`` (§7.2), ``ParentNode`` (§7.1), ``Node`` and the
``ratchet_tree`` extension vector (§12.4.3.3), ``HPKECiphertext``,
``UpdatePathNode``, ``UpdatePath`` (§7.6), ``KeyPackage`` (§10),
``RequiredCapabilities`` (§11.1) and ``ExternalSender`` (§12.1.8.1), plus the
shared registries and the :class:`Struct` base used by ``messages.py`` too.

Conventions (shared with :mod:`protocol.mls.messages`):

* every struct is a frozen, slotted dataclass with ``encode(w)`` /
  ``decode(r)`` over :mod:`protocol.codec` and ``to_bytes()`` /
  ``from_bytes(data)`` (the latter rejects trailing bytes);
* field names are the RFC's; ``opaque`` fields are ``bytes``, vectors of
  structs or integers are tuples (one exception: a decoded UpdatePathNode's
  ciphertexts are an :class:`EncryptedPathSecrets`, equal to their tuple);
* a ``select`` on a type field is modelled as the type field plus one optional
  attribute per arm (``None`` when that arm is not selected), e.g.
  ``LeafNode.leaf_node_source`` with ``lifetime`` / ``parent_hash``.  The
  constructor checks that exactly the selected arm is present (``LocalError``
  otherwise), so ``encode`` always produces what ``decode`` reads back;
* registries that may grow (``CipherSuite``, ``ExtensionType``,
  ``ProposalType``, ``CredentialType``) are plain ``int`` fields, with IntEnum
  constants for the known values, so unknown and GREASE values round-trip;
  closed enums (``ProtocolVersion``, ``WireFormat``, ``ContentType``,
  ``SenderType``, ``LeafNodeSource``, ``NodeType``, ``PSKType``,
  ``ResumptionPSKUsage``, ``ProposalOrRefType``) are IntEnum fields and an
  unknown value (including ``reserved(0)``) is a ``DecodeError``.  Exception:
  version *lists* (``Capabilities.versions``) are plain ints, since a client may
  advertise versions this one does not know.

Credentials of a type other than basic and x509 have no body format in RFC 9420
(the select has no default arm), yet they must round-trip inside leaf nodes we
do not understand.  Like OpenMLS and mls-rs, we carry such a body as
``opaque content<V>`` (``Credential.content``); it is the only way the
enclosing LeafNode stays parseable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Self, TypeVar, overload

from protocol.codec import Reader, Writer, decode_exact
from protocol.errors import DecodeError, LocalError

E = TypeVar("E", bound=IntEnum)
S = TypeVar("S", bound="Struct")


# --------------------------------------------------------------------------
# Registries and closed enums


class ProtocolVersion(IntEnum):
    MLS10 = 1


class CipherSuite(IntEnum):
    """Known values of the open ``CipherSuite`` registry (RFC 9420 §17.1)."""

    MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 = 1
    MLS_128_DHKEMP256_AES128GCM_SHA256_P256 = 2
    MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519 = 3
    MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448 = 4
    MLS_256_DHKEMP521_AES256GCM_SHA512_P521 = 5
    MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448 = 6
    MLS_256_DHKEMP384_AES256GCM_SHA384_P384 = 7


class ExtensionType(IntEnum):
    """Known values of the open ``ExtensionType`` registry (RFC 9420 §17.3)."""

    APPLICATION_ID = 1
    RATCHET_TREE = 2
    REQUIRED_CAPABILITIES = 3
    EXTERNAL_PUB = 4
    EXTERNAL_SENDERS = 5


class ProposalType(IntEnum):
    """Known values of the open ``ProposalType`` registry (RFC 9420 §17.4)."""

    ADD = 1
    UPDATE = 2
    REMOVE = 3
    PSK = 4
    REINIT = 5
    EXTERNAL_INIT = 6
    GROUP_CONTEXT_EXTENSIONS = 7


class CredentialType(IntEnum):
    """Known values of the open ``CredentialType`` registry (RFC 9420 §17.5)."""

    BASIC = 1
    X509 = 2


class LeafNodeSource(IntEnum):
    KEY_PACKAGE = 1
    UPDATE = 2
    COMMIT = 3


class NodeType(IntEnum):
    LEAF = 1
    PARENT = 2


# --------------------------------------------------------------------------
# Codec helpers


def pull_enum(r: Reader, enum: type[E], pull: Callable[[Reader], int]) -> E:
    """A closed-enum value; unknown (and reserved) values are a DecodeError."""
    value = pull(r)
    try:
        return enum(value)
    except ValueError:
        raise DecodeError(f"unknown {enum.__name__} {value}") from None


def pull_structs(r: Reader, cls: type[S]) -> tuple[S, ...]:
    """``cls items<V>`` as a tuple."""
    return tuple(r.pull_vector(cls.decode))


def push_structs(w: Writer, items: Iterable[Struct]) -> None:
    w.push_vector(items, _push_struct)


def _push_struct(w: Writer, item: Struct) -> None:
    item.encode(w)


def pull_uint16s(r: Reader) -> tuple[int, ...]:
    return tuple(r.pull_vector(Reader.pull_uint16))


def push_uint16s(w: Writer, items: Iterable[int]) -> None:
    w.push_vector(items, Writer.push_uint16)


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise LocalError(what)


class Struct(ABC):
    """Base of every wire struct: ``to_bytes`` / ``from_bytes`` over encode/decode."""

    __slots__ = ()

    @abstractmethod
    def encode(self, w: Writer) -> None:
        """Append this struct's TLS-PL encoding to ``w``."""

    @classmethod
    @abstractmethod
    def decode(cls, r: Reader) -> Self:
        """Read one struct from ``r`` (``DecodeError`` if malformed)."""

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        return decode_exact(data, cls.decode)


# --------------------------------------------------------------------------
# Extensions (RFC 9420 §7.2, §13)


@dataclass(frozen=True, slots=True)
class Extension(Struct):
    extension_type: int
    extension_data: bytes

    def encode(self, w: Writer) -> None:
        w.push_uint16(self.extension_type)
        w.push_opaque(self.extension_data)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_uint16(), r.pull_opaque())


def pull_extensions(r: Reader) -> tuple[Extension, ...]:
    return pull_structs(r, Extension)


def find_extension(extensions: Sequence[Extension], extension_type: int) -> Extension | None:
    """The first extension of ``extension_type``, or None."""
    for ext in extensions:
        if ext.extension_type == extension_type:
            return ext
    return None


# --------------------------------------------------------------------------
# Credentials (RFC 9420 §5.3)


@dataclass(frozen=True, slots=True)
class Certificate(Struct):
    cert_data: bytes

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.cert_data)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_opaque())


@dataclass(frozen=True, slots=True)
class Credential(Struct):
    """``Credential``: exactly one of the arms is set, as ``credential_type`` says.

    ``identity`` for basic, ``certificates`` for x509, ``content`` (an opaque
    body, see the module docstring) for every other type.
    """

    credential_type: int
    identity: bytes | None = None
    certificates: tuple[Certificate, ...] | None = None
    content: bytes | None = None

    def __post_init__(self) -> None:
        ct = self.credential_type
        _require(
            (self.identity is not None) == (ct == CredentialType.BASIC)
            and (self.certificates is not None) == (ct == CredentialType.X509)
            and (self.content is not None) == (ct not in _KNOWN_CREDENTIALS),
            f"Credential arms do not match credential_type {ct}",
        )

    @classmethod
    def basic(cls, identity: bytes) -> Credential:
        return cls(CredentialType.BASIC, identity=identity)

    @classmethod
    def x509(cls, certificates: Iterable[bytes]) -> Credential:
        return cls(CredentialType.X509, certificates=tuple(Certificate(c) for c in certificates))

    def encode(self, w: Writer) -> None:
        w.push_uint16(self.credential_type)
        if self.identity is not None:
            w.push_opaque(self.identity)
        elif self.certificates is not None:
            push_structs(w, self.certificates)
        elif self.content is not None:
            w.push_opaque(self.content)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        ct = r.pull_uint16()
        if ct == CredentialType.BASIC:
            return cls(ct, identity=r.pull_opaque())
        if ct == CredentialType.X509:
            return cls(ct, certificates=pull_structs(r, Certificate))
        return cls(ct, content=r.pull_opaque())


_KNOWN_CREDENTIALS = frozenset({CredentialType.BASIC, CredentialType.X509})


# --------------------------------------------------------------------------
# Leaf and parent nodes (RFC 9420 §7.1, §7.2)


@dataclass(frozen=True, slots=True)
class Capabilities(Struct):
    versions: tuple[int, ...]
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]
    proposals: tuple[int, ...]
    credentials: tuple[int, ...]

    def encode(self, w: Writer) -> None:
        push_uint16s(w, self.versions)
        push_uint16s(w, self.cipher_suites)
        push_uint16s(w, self.extensions)
        push_uint16s(w, self.proposals)
        push_uint16s(w, self.credentials)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(
            pull_uint16s(r), pull_uint16s(r), pull_uint16s(r), pull_uint16s(r), pull_uint16s(r)
        )


@dataclass(frozen=True, slots=True)
class Lifetime(Struct):
    not_before: int
    not_after: int

    def encode(self, w: Writer) -> None:
        w.push_uint64(self.not_before)
        w.push_uint64(self.not_after)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_uint64(), r.pull_uint64())


@dataclass(frozen=True, slots=True)
class LeafNode(Struct):
    """``LeafNode``: ``lifetime`` is set iff the source is key_package,
    ``parent_hash`` iff it is commit (RFC 9420 §7.2)."""

    encryption_key: bytes
    signature_key: bytes
    credential: Credential
    capabilities: Capabilities
    leaf_node_source: LeafNodeSource
    lifetime: Lifetime | None
    parent_hash: bytes | None
    extensions: tuple[Extension, ...]
    signature: bytes
    # The encoding of every field but the signature, memoised: a leaf is
    # encoded for its signature, the tree hash, the KeyPackage and its
    # reference, and every ratchet tree sent, once per member of a large group.
    # Every field is immutable, so it cannot go stale (dataclasses.replace
    # makes a new leaf without it).
    _body: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        src = self.leaf_node_source
        _require(
            (self.lifetime is not None) == (src == LeafNodeSource.KEY_PACKAGE)
            and (self.parent_hash is not None) == (src == LeafNodeSource.COMMIT),
            f"LeafNode arms do not match leaf_node_source {src!r}",
        )

    def _encode_body(self, w: Writer) -> None:
        """Every field up to (not including) the signature."""
        body = self._body
        if body is None:
            sub = Writer()
            sub.push_opaque(self.encryption_key)
            sub.push_opaque(self.signature_key)
            self.credential.encode(sub)
            self.capabilities.encode(sub)
            sub.push_uint8(self.leaf_node_source)
            if self.lifetime is not None:
                self.lifetime.encode(sub)
            if self.parent_hash is not None:
                sub.push_opaque(self.parent_hash)
            push_structs(sub, self.extensions)
            body = sub.getvalue()
            object.__setattr__(self, "_body", body)
        w.push_bytes(body)

    def encode(self, w: Writer) -> None:
        self._encode_body(w)
        w.push_opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        start = r.position
        encryption_key = r.pull_opaque()
        signature_key = r.pull_opaque()
        credential = Credential.decode(r)
        capabilities = Capabilities.decode(r)
        src = pull_enum(r, LeafNodeSource, Reader.pull_uint8)
        lifetime = Lifetime.decode(r) if src == LeafNodeSource.KEY_PACKAGE else None
        parent_hash = r.pull_opaque() if src == LeafNodeSource.COMMIT else None
        extensions = pull_extensions(r)
        # The codec is canonical (minimal varints, closed enums, exact vectors),
        # so the received body is exactly its fresh encoding (tests/test_structs.py
        # checks this on mutated input): keep it as the memo.
        body = r.bytes_since(start)
        leaf = cls(
            encryption_key,
            signature_key,
            credential,
            capabilities,
            src,
            lifetime,
            parent_hash,
            extensions,
            r.pull_opaque(),
        )
        object.__setattr__(leaf, "_body", body)
        return leaf

    def tbs_bytes(self, group_id: bytes | None = None, leaf_index: int | None = None) -> bytes:
        """The encoded ``LeafNodeTBS`` (RFC 9420 §7.2), the content the
        signature covers under label "LeafNodeTBS".

        ``group_id`` and ``leaf_index`` are required for the update and commit
        sources and must be omitted for key_package.
        """
        w = Writer()
        self._encode_body(w)
        if self.leaf_node_source == LeafNodeSource.KEY_PACKAGE:
            _require(
                group_id is None and leaf_index is None,
                "a key_package LeafNodeTBS has no group_id/leaf_index",
            )
        else:
            if group_id is None or leaf_index is None:
                raise LocalError("update/commit LeafNodeTBS needs group_id and leaf_index")
            w.push_opaque(group_id)
            w.push_uint32(leaf_index)
        return w.getvalue()


@dataclass(frozen=True, slots=True)
class ParentNode(Struct):
    encryption_key: bytes
    parent_hash: bytes
    unmerged_leaves: tuple[int, ...]

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.encryption_key)
        w.push_opaque(self.parent_hash)
        w.push_vector(self.unmerged_leaves, Writer.push_uint32)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_opaque(), r.pull_opaque(), tuple(r.pull_vector(Reader.pull_uint32)))


@dataclass(frozen=True, slots=True)
class Node(Struct):
    """``Node`` (RFC 9420 §12.4.3.3): ``leaf_node`` set iff node_type is leaf,
    ``parent_node`` iff it is parent."""

    node_type: NodeType
    leaf_node: LeafNode | None = None
    parent_node: ParentNode | None = None

    def __post_init__(self) -> None:
        _require(
            (self.leaf_node is not None) == (self.node_type == NodeType.LEAF)
            and (self.parent_node is not None) == (self.node_type == NodeType.PARENT),
            f"Node arms do not match node_type {self.node_type!r}",
        )

    @classmethod
    def leaf(cls, leaf_node: LeafNode) -> Node:
        return cls(NodeType.LEAF, leaf_node=leaf_node)

    @classmethod
    def parent(cls, parent_node: ParentNode) -> Node:
        return cls(NodeType.PARENT, parent_node=parent_node)

    def encode(self, w: Writer) -> None:
        w.push_uint8(self.node_type)
        if self.leaf_node is not None:
            self.leaf_node.encode(w)
        elif self.parent_node is not None:
            self.parent_node.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        node_type = pull_enum(r, NodeType, Reader.pull_uint8)
        if node_type == NodeType.LEAF:
            return cls(node_type, leaf_node=LeafNode.decode(r))
        return cls(node_type, parent_node=ParentNode.decode(r))


# --------------------------------------------------------------------------
# The ratchet_tree extension (RFC 9420 §12.4.3.3)


def push_ratchet_tree(w: Writer, nodes: Sequence[Node | None]) -> None:
    w.push_vector(nodes, _push_optional_node)


def _push_optional_node(w: Writer, node: Node | None) -> None:
    w.push_optional(node, _push_struct)


def pull_ratchet_tree(r: Reader) -> list[Node | None]:
    """``optional<Node> ratchet_tree<V>``, checked as §12.4.3.3 requires.

    Rejected: an empty vector, a blank last node ("The receiver MUST check that
    the last node in ratchet_tree is non-blank"), and a node whose type does
    not fit its position (leaves at even indices, parents at odd ones).  The
    list is returned as sent, *not* extended to 2^(d+1)-1 entries: that is the
    tree's job.
    """
    nodes = r.pull_vector(_pull_optional_node)
    if not nodes:
        raise DecodeError("empty ratchet_tree")
    if nodes[-1] is None:
        raise DecodeError("ratchet_tree ends with a blank node")
    for i, node in enumerate(nodes):
        if node is not None and node.node_type != (NodeType.PARENT if i & 1 else NodeType.LEAF):
            raise DecodeError(f"ratchet_tree node {i} has type {node.node_type.name}")
    return nodes


def _pull_optional_node(r: Reader) -> Node | None:
    return r.pull_optional(Node.decode)


def encode_ratchet_tree(nodes: Sequence[Node | None]) -> bytes:
    """Encode the ``ratchet_tree`` extension data.

    Trailing blank nodes must already be stripped (the sender "MUST NOT include
    blank nodes after the last non-blank node"); see :func:`strip_blank_tail`.
    """
    _require(bool(nodes) and nodes[-1] is not None, "ratchet_tree must end with a node")
    w = Writer()
    push_ratchet_tree(w, nodes)
    return w.getvalue()


def decode_ratchet_tree(data: bytes) -> list[Node | None]:
    """Decode ``ratchet_tree`` extension data (see :func:`pull_ratchet_tree`)."""
    return decode_exact(data, pull_ratchet_tree)


def strip_blank_tail(nodes: Sequence[Node | None]) -> list[Node | None]:
    """``nodes`` without its trailing blank entries."""
    out = list(nodes)
    while out and out[-1] is None:
        out.pop()
    return out


# --------------------------------------------------------------------------
# UpdatePath (RFC 9420 §7.6)


@dataclass(frozen=True, slots=True)
class HPKECiphertext(Struct):
    kem_output: bytes
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.kem_output)
        w.push_opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_opaque(), r.pull_opaque())


class EncryptedPathSecrets(Sequence[HPKECiphertext]):
    """A received ``HPKECiphertext encrypted_path_secret<V>`` (RFC 9420 §7.6),
    entries built on access.

    A member decrypts one entry of a path; building all of them (one per
    member, 2,000 for a group of 2,000) was a quarter of processing a commit.
    Decoding still checks the whole vector as strictly as an entry-by-entry
    parse: when every entry has the first entry's shape (one-byte lengths,
    checked at every stride in C), entry ``i`` is at ``i * stride``; any other
    vector is split by :meth:`Reader.pull_opaques` like before.  Equal to (and
    hashed like) the tuple of its entries, which ``tuple()`` gives."""

    __slots__ = ("_body", "_kem_len", "_stride", "_count", "_parts")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._kem_len = self._stride = 0
        self._parts: list[bytes] | None = None
        shape = _uniform_shape(body)
        if shape is not None:
            self._kem_len, self._stride = shape
            self._count = len(body) // self._stride
            return
        parts = Reader(body).pull_opaques()  # kem_output, ciphertext, kem_output, ...
        if len(parts) % 2:
            raise DecodeError("HPKECiphertext vector ends inside an entry")
        self._parts = parts
        self._count = len(parts) // 2

    @property
    def body(self) -> bytes:
        """The vector's body as received (what encoding the entries gives)."""
        return self._body

    def __len__(self) -> int:
        return self._count

    def _entry(self, i: int) -> HPKECiphertext:
        if self._parts is not None:
            return HPKECiphertext(self._parts[2 * i], self._parts[2 * i + 1])
        start = i * self._stride + 1
        kem_end = start + self._kem_len
        return HPKECiphertext(
            self._body[start:kem_end], self._body[kem_end + 1 : start - 1 + self._stride]
        )

    @overload
    def __getitem__(self, index: int) -> HPKECiphertext: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[HPKECiphertext, ...]: ...
    def __getitem__(self, index: int | slice) -> HPKECiphertext | tuple[HPKECiphertext, ...]:
        if isinstance(index, slice):
            return tuple(self._entry(i) for i in range(*index.indices(self._count)))
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("HPKECiphertext index out of range")
        return self._entry(index)

    def __iter__(self) -> Iterator[HPKECiphertext]:
        return (self._entry(i) for i in range(self._count))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EncryptedPathSecrets):
            return self._body == other._body
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"EncryptedPathSecrets({list(self)!r})"


def _uniform_shape(body: bytes) -> tuple[int, int] | None:
    """(kem_output length, entry length) if ``body`` is a whole number of
    entries all shaped like the first, with one-byte (so minimal) lengths."""
    if not body or body[0] >= 64 or body[0] + 1 >= len(body):
        return None
    kem_len = body[0]
    ct_len = body[kem_len + 1]
    if ct_len >= 64:
        return None
    stride = kem_len + ct_len + 2
    count, rest = divmod(len(body), stride)
    if rest:
        return None
    if body[0::stride] != bytes((kem_len,)) * count:
        return None
    if body[kem_len + 1 :: stride] != bytes((ct_len,)) * count:
        return None
    return kem_len, stride


@dataclass(frozen=True, slots=True)
class UpdatePathNode(Struct):
    encryption_key: bytes
    # a tuple when built locally, an EncryptedPathSecrets when decoded
    encrypted_path_secret: Sequence[HPKECiphertext]

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.encryption_key)
        secrets = self.encrypted_path_secret
        if isinstance(secrets, EncryptedPathSecrets):
            # re-encoding a large received path (for the commit's signature and
            # transcript hash) is a copy of the bytes received
            w.push_opaque(secrets.body)
        else:
            push_structs(w, secrets)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        encryption_key = r.pull_opaque()
        return cls(encryption_key, EncryptedPathSecrets(r.pull_opaque()))


@dataclass(frozen=True, slots=True)
class UpdatePath(Struct):
    leaf_node: LeafNode
    nodes: tuple[UpdatePathNode, ...]

    def encode(self, w: Writer) -> None:
        self.leaf_node.encode(w)
        push_structs(w, self.nodes)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(LeafNode.decode(r), pull_structs(r, UpdatePathNode))


# --------------------------------------------------------------------------
# KeyPackage (RFC 9420 §10)


@dataclass(frozen=True, slots=True)
class KeyPackage(Struct):
    version: ProtocolVersion
    cipher_suite: int
    init_key: bytes
    leaf_node: LeafNode
    extensions: tuple[Extension, ...]
    signature: bytes

    def _encode_tbs(self, w: Writer) -> None:
        w.push_uint16(self.version)
        w.push_uint16(self.cipher_suite)
        w.push_opaque(self.init_key)
        self.leaf_node.encode(w)
        push_structs(w, self.extensions)

    def encode(self, w: Writer) -> None:
        self._encode_tbs(w)
        w.push_opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(
            pull_enum(r, ProtocolVersion, Reader.pull_uint16),
            r.pull_uint16(),
            r.pull_opaque(),
            LeafNode.decode(r),
            pull_extensions(r),
            r.pull_opaque(),
        )

    def tbs_bytes(self) -> bytes:
        """The encoded ``KeyPackageTBS`` (signed under label "KeyPackageTBS")."""
        w = Writer()
        self._encode_tbs(w)
        return w.getvalue()


# --------------------------------------------------------------------------
# Extension bodies (RFC 9420 §11.1, §12.1.8.1)


@dataclass(frozen=True, slots=True)
class RequiredCapabilities(Struct):
    extension_types: tuple[int, ...]
    proposal_types: tuple[int, ...]
    credential_types: tuple[int, ...]

    def encode(self, w: Writer) -> None:
        push_uint16s(w, self.extension_types)
        push_uint16s(w, self.proposal_types)
        push_uint16s(w, self.credential_types)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(pull_uint16s(r), pull_uint16s(r), pull_uint16s(r))


@dataclass(frozen=True, slots=True)
class ExternalSender(Struct):
    signature_key: bytes
    credential: Credential

    def encode(self, w: Writer) -> None:
        w.push_opaque(self.signature_key)
        self.credential.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_opaque(), Credential.decode(r))


def encode_external_senders(senders: Iterable[ExternalSender]) -> bytes:
    """``ExternalSender external_senders<V>``: the external_senders extension data."""
    w = Writer()
    push_structs(w, senders)
    return w.getvalue()


def decode_external_senders(data: bytes) -> tuple[ExternalSender, ...]:
    return decode_exact(data, lambda r: pull_structs(r, ExternalSender))
