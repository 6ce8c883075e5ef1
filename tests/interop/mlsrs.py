"""A thin, typed, plain-bytes adapter over mls-rs (the ``mls_rs_uniffi`` wheel).

Interop tests drive mls-rs through :class:`RsMember` only: one mls-rs client
plus (at most) one group, every input and output a ``bytes`` MLSMessage or a
plain Python value.  Facts about the binding that shape this module (details
in ``MLSRS_NOTES.md``):

* only cipher suite 1 (``MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519``) and
  basic credentials exist;
* a commit built by the binding (``add_members``, ``remove_members``,
  ``commit``) is left *pending*; it is applied by feeding the committer its
  own commit through ``process_incoming_message``.  :class:`RsMember` does
  that by default (``apply=True``);
* commits and proposals are always PublicMessage, application data always
  PrivateMessage (``encrypt_control_messages`` is not exposed);
* the binding has no epoch / roster / leaf-index / group-id / epoch
  authenticator accessors.  This module recovers them from the exported
  ratchet tree and from the group-state snapshot mls-rs writes to a
  Python-implemented ``GroupStateStorage``, parsed here with a small
  stand-alone TLS reader (deliberately *not* Samizdat's codec, so that the
  mls-rs side stays an independent reference).

Nothing here imports Samizdat.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

try:
    import mls_rs_uniffi as _rs
except ImportError as _exc:  # pragma: no cover - depends on the environment
    # Any test module importing this adapter is skipped, with the reason, when
    # the wheel (the project's 'test' extra) is missing or cannot load.
    from tests.required import missing

    missing(f"mls-rs interop needs the agentvault-mls-rs-uniffi wheel: {_exc}", module=True)

__all__ = [
    "SUITE",
    "CommitInfo",
    "Member",
    "ProposalInfo",
    "RsError",
    "RsGroupContext",
    "RsMember",
    "message_header",
    "mls_exporter",
    "parse_ratchet_tree",
]

#: RFC 9420 cipher suite id of the only suite the binding offers.
SUITE = 1
_CS = _rs.CipherSuite.CURVE25519_AES128
_HASH_LEN = 32

#: Base class of every error the binding raises (``.MlsError``, ``.AnyError``,
#: ``.MlsCodecError``, ``.UnexpectedCallbackError`` are its subclasses).
RsError = _rs.Error

_WF_PUBLIC, _WF_PRIVATE = 1, 2
_CT_APPLICATION, _CT_PROPOSAL, _CT_COMMIT = 1, 2, 3


# --------------------------------------------------------------------------
# A minimal TLS-PL reader (RFC 9420 §2.1), independent of protocol.codec.


class _R:
    __slots__ = ("b", "p")

    def __init__(self, b: bytes, p: int = 0) -> None:
        self.b = b
        self.p = p

    def take(self, n: int) -> bytes:
        if self.p + n > len(self.b):
            raise ValueError(f"truncated: need {n} at {self.p} of {len(self.b)}")
        out = self.b[self.p : self.p + n]
        self.p += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def varint(self) -> int:
        first = self.b[self.p] if self.p < len(self.b) else -1
        if first < 0:
            raise ValueError("truncated varint")
        size = 1 << (first >> 6)
        if size == 8:
            raise ValueError("invalid varint prefix")
        return self.uint(size) & ((1 << (8 * size - 2)) - 1)

    def opaque(self) -> bytes:
        return self.take(self.varint())

    def end(self) -> bool:
        return self.p >= len(self.b)


def _varint(n: int) -> bytes:
    if n < 1 << 6:
        return n.to_bytes(1, "big")
    if n < 1 << 14:
        return (n | 0x4000).to_bytes(2, "big")
    return (n | 0x8000_0000).to_bytes(4, "big")


# --------------------------------------------------------------------------
# MLS-Exporter (RFC 9420 §8.5), SHA-256 only: used to validate snapshot parsing.


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def _expand_with_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    full = b"MLS 1.0 " + label
    info = length.to_bytes(2, "big") + _varint(len(full)) + full + _varint(len(context)) + context
    return _expand(secret, info, length)


def mls_exporter(exporter_secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """``MLS-Exporter(Label, Context, Length)`` from an ``exporter_secret`` (suite 1)."""
    derived = _expand_with_label(exporter_secret, label, b"", _HASH_LEN)
    return _expand_with_label(derived, b"exported", hashlib.sha256(context).digest(), length)


# --------------------------------------------------------------------------
# Plain values returned by RsMember.


@dataclass(frozen=True, slots=True)
class Member:
    """One occupied leaf of the ratchet tree."""

    leaf_index: int
    identity: bytes  # basic-credential identity (x509: the raw certificates vector)
    credential_type: int
    signature_key: bytes
    encryption_key: bytes


@dataclass(frozen=True, slots=True)
class RsGroupContext:
    """mls-rs's current ``GroupContext`` (from its state snapshot).

    ``encoded`` is the exact RFC 9420 §8.1 encoding mls-rs holds, so it can be
    compared byte for byte with another implementation's.
    """

    version: int
    cipher_suite: int
    group_id: bytes
    epoch: int
    tree_hash: bytes
    confirmed_transcript_hash: bytes
    extensions: bytes  # the encoded extensions<V> vector body
    encoded: bytes


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """What processing a commit did (``process`` returns ``("commit", info)``)."""

    sender: int | None  # committer's leaf index (None: unresolved / external)
    epoch: int  # this member's epoch after processing
    removed: bool  # the commit removed this member
    reinit: bool
    applied_proposals: int
    unused_proposals: int


@dataclass(frozen=True, slots=True)
class ProposalInfo:
    """A proposal this member received and cached (``("proposal", info)``)."""

    sender: int | None
    proposal_type: int | None  # from the PublicMessage header; None if encrypted


Kind = Literal["application", "commit", "proposal", "welcome", "group_info", "key_package"]


# --------------------------------------------------------------------------
# Parsers for the bytes mls-rs hands out.


def _skip_leaf_node(r: _R) -> tuple[bytes, bytes, int, bytes]:
    encryption_key = r.opaque()
    signature_key = r.opaque()
    credential_type = r.uint(2)
    identity = r.opaque()  # basic: identity<V>; x509: certificates<V> (kept raw)
    if credential_type not in (1, 2):
        raise ValueError(f"unknown credential type {credential_type}")
    for _ in range(5):  # capabilities: versions, suites, extensions, proposals, credentials
        r.opaque()
    source = r.uint(1)
    if source == 1:
        r.take(16)  # lifetime
    elif source == 3:
        r.opaque()  # parent_hash
    elif source != 2:
        raise ValueError(f"bad leaf_node_source {source}")
    r.opaque()  # extensions
    r.opaque()  # signature
    return encryption_key, signature_key, credential_type, identity


def parse_ratchet_tree(data: bytes) -> list[Member | None]:
    """Leaves of an encoded ``optional<Node> ratchet_tree<V>`` (None = blank leaf)."""
    outer = _R(data)
    body = _R(outer.opaque())
    if not outer.end():
        raise ValueError("trailing bytes after ratchet_tree")
    leaves: list[Member | None] = []
    i = 0
    while not body.end():
        present = body.uint(1)
        node: Member | None = None
        if present == 1:
            node_type = body.uint(1)
            if node_type == 1:
                enc, sig, ctype, ident = _skip_leaf_node(body)
                node = Member(i // 2, ident, ctype, sig, enc)
            elif node_type == 2:
                body.opaque()
                body.opaque()
                body.opaque()
            else:
                raise ValueError(f"bad node_type {node_type}")
        elif present != 0:
            raise ValueError(f"bad optional flag {present}")
        if i % 2 == 0:
            leaves.append(node)
        i += 1
    return leaves


def _parse_group_context(snapshot: bytes) -> RsGroupContext:
    # Snapshot { version: u16, state: RawGroupState { context: GroupContext, ... }, ... }
    r = _R(snapshot, 2)
    start = r.p
    version = r.uint(2)
    suite = r.uint(2)
    group_id = r.opaque()
    epoch = r.uint(8)
    tree_hash = r.opaque()
    cth = r.opaque()
    extensions = r.opaque()
    return RsGroupContext(
        version, suite, group_id, epoch, tree_hash, cth, extensions, snapshot[start : r.p]
    )


def _parse_key_schedule(snapshot: bytes, signer: bytes) -> dict[str, bytes] | None:
    """The five KeySchedule secrets, read back from the end of the snapshot.

    The snapshot ends ``key_schedule, pending_updates (empty map: 00),
    pending_commit (None: 00), signer<V>``; KeySchedule is ``exporter_secret,
    authentication_secret, external_secret, membership_key, init_secret``,
    each ``opaque<V>`` of Nh = 32 bytes.  Returns None if the layout differs
    (e.g. a commit is pending).
    """
    tail = b"\x00\x00" + _varint(len(signer)) + signer
    n = 5 * (1 + _HASH_LEN)
    if not snapshot.endswith(tail) or len(snapshot) < len(tail) + n:
        return None
    block = snapshot[-len(tail) - n : -len(tail)]
    names = ("exporter", "authentication", "external", "membership", "init")
    out: dict[str, bytes] = {}
    for k, name in enumerate(names):
        chunk = block[k * 33 : (k + 1) * 33]
        if chunk[0] != _HASH_LEN:
            return None
        out[name] = chunk[1:]
    return out


def message_header(message: bytes) -> dict[str, int | bytes | None]:
    """Clear-text header fields of a Public/PrivateMessage MLSMessage."""
    r = _R(message)
    version, wire_format = r.uint(2), r.uint(2)
    hdr: dict[str, int | bytes | None] = {"version": version, "wire_format": wire_format}
    if wire_format == _WF_PUBLIC:
        hdr["group_id"] = r.opaque()
        hdr["epoch"] = r.uint(8)
        sender_type = r.uint(1)
        hdr["sender_type"] = sender_type
        hdr["sender"] = r.uint(4) if sender_type in (1, 2) else None
        r.opaque()  # authenticated_data
        content_type = r.uint(1)
        hdr["content_type"] = content_type
        hdr["proposal_type"] = r.uint(2) if content_type == _CT_PROPOSAL else None
    elif wire_format == _WF_PRIVATE:
        hdr["group_id"] = r.opaque()
        hdr["epoch"] = r.uint(8)
        hdr["content_type"] = r.uint(1)
    return hdr


# --------------------------------------------------------------------------
# Storage: a Python GroupStateStorage so snapshots can be read back.


class _Storage(_rs.GroupStateStorage):  # type: ignore[misc]
    def __init__(self) -> None:
        self.states: dict[bytes, bytes] = {}
        self.epochs: dict[tuple[bytes, int], bytes] = {}
        self.last_group_id: bytes | None = None

    def state(self, group_id: bytes) -> bytes | None:
        return self.states.get(bytes(group_id))

    def epoch(self, group_id: bytes, epoch_id: int) -> bytes | None:
        return self.epochs.get((bytes(group_id), epoch_id))

    def write(self, group_id, group_state, epoch_inserts, epoch_updates) -> None:  # type: ignore[no-untyped-def]
        gid = bytes(group_id)
        self.states[gid] = bytes(group_state)
        self.last_group_id = gid
        for rec in [*epoch_inserts, *epoch_updates]:
            self.epochs[(gid, rec.id)] = bytes(rec.data)

    def max_epoch_id(self, group_id: bytes) -> int | None:
        ids = [e for (g, e) in self.epochs if g == bytes(group_id)]
        return max(ids) if ids else None


# --------------------------------------------------------------------------


class RsMember:
    """One mls-rs client and its (single) group, driven with plain bytes."""

    def __init__(self, name: bytes, *, ratchet_tree_extension: bool = True) -> None:
        self.name = bytes(name)
        self._keypair = _rs.generate_signature_keypair(_CS)
        self._storage = _Storage()
        config = _rs.ClientConfig(
            group_state_storage=self._storage,
            use_ratchet_tree_extension=ratchet_tree_extension,
        )
        self._client = _rs.Client(self.name, self._keypair, config)
        self._group: _rs.Group | None = None
        self._pending: _rs.Message | None = None
        self._identity_cache: dict[tuple[bytes, bytes], _rs.SigningIdentity] = {}
        #: ratchet_tree of the last own commit (only when the extension is off)
        self.last_ratchet_tree: bytes | None = None
        #: leaf index of the sender of the last message ``process`` handled
        self.last_sender: int | None = None

    @classmethod
    def new(cls, name: bytes, *, ratchet_tree_extension: bool = True) -> RsMember:
        """A member with a fresh Ed25519 key and basic credential ``name`` (suite 1).

        ``ratchet_tree_extension``: whether Welcomes this member creates carry
        the ratchet_tree extension (the binding's default, True).  With False
        the new member needs :meth:`export_ratchet_tree` out of band.
        """
        return cls(name, ratchet_tree_extension=ratchet_tree_extension)

    # -- identity -------------------------------------------------------

    @property
    def client(self) -> _rs.Client:
        """The raw binding client (escape hatch)."""
        return self._client

    @property
    def signature_public_key(self) -> bytes:
        return bytes(self._keypair.public_key.bytes)

    def key_package(self) -> bytes:
        """A fresh KeyPackage as MLSMessage bytes (its private keys stay in this client)."""
        return bytes(self._client.generate_key_package_message().to_bytes())

    # -- group lifecycle --------------------------------------------------

    @property
    def group(self) -> _rs.Group:
        if self._group is None:
            raise RuntimeError(f"{self.name!r} is not in a group")
        return self._group

    def create_group(self, group_id: bytes | None = None) -> None:
        """Create a one-member group at epoch 0 (random 32-byte id if None)."""
        self._group = self._client.create_group(None if group_id is None else bytes(group_id))

    def join(self, welcome: bytes, ratchet_tree: bytes | None = None) -> None:
        """Join from a Welcome MLSMessage; ``ratchet_tree`` is needed unless the
        Welcome's GroupInfo carries the ratchet_tree extension."""
        tree = None if ratchet_tree is None else _rs.RatchetTree(bytes=bytes(ratchet_tree))
        info = self._client.join_group(tree, _rs.Message.from_bytes(bytes(welcome)))
        self._group = info.group

    # -- commits ----------------------------------------------------------

    def _finish(self, out: _rs.CommitOutput, apply: bool) -> bytes:
        commit = out.commit_message
        self.last_ratchet_tree = None if out.ratchet_tree is None else bytes(out.ratchet_tree.bytes)
        self._pending = commit
        if apply:
            self.apply_pending_commit()
        return bytes(commit.to_bytes())

    def apply_pending_commit(self) -> None:
        """Merge this member's own pending commit (the binding's way: process it)."""
        if self._pending is None:
            raise RuntimeError("no pending commit")
        pending, self._pending = self._pending, None
        self.group.process_incoming_message(pending)

    def add(self, key_packages: list[bytes], *, apply: bool = True) -> tuple[bytes, bytes | None]:
        """Commit Add proposals; returns (commit, welcome) MLSMessage bytes.

        An add-only commit carries no UpdatePath (mls-rs ``path_required`` is
        false).  One Welcome covers all new members.  With ``apply=False`` the
        commit stays pending until :meth:`apply_pending_commit`.
        """
        msgs = [_rs.Message.from_bytes(bytes(kp)) for kp in key_packages]
        out = self.group.add_members(msgs)
        welcome = None if out.welcome_message is None else bytes(out.welcome_message.to_bytes())
        return self._finish(out, apply), welcome

    def remove(self, leaf_index: int, *, apply: bool = True) -> bytes:
        """Commit removing the member at ``leaf_index`` (the commit has a path)."""
        return self.remove_identity(self._member(leaf_index).identity, apply=apply)

    def remove_identity(self, identity: bytes, *, apply: bool = True) -> bytes:
        """Commit removing the member whose basic credential is ``identity``.

        (The binding removes by identity; leaf indices are resolved here.)
        """
        si = self._signing_identity(bytes(identity), None)
        return self._finish(self.group.remove_members([si]), apply)

    def update(self, *, apply: bool = True) -> bytes:
        """An empty commit with an UpdatePath: re-keys this member's leaf.

        The binding has no Update proposal.  NB it is ``Group.commit()``, so
        proposals received and not yet committed are swept into it.
        """
        return self._finish(self.group.commit(), apply)

    def commit(self, *, apply: bool = True) -> tuple[bytes, bytes | None]:
        """Commit every cached proposal (or an empty path commit); (commit, welcome)."""
        out = self.group.commit()
        welcome = None if out.welcome_message is None else bytes(out.welcome_message.to_bytes())
        return self._finish(out, apply), welcome

    def propose_add(self, key_packages: list[bytes]) -> list[bytes]:
        """Add proposals (PublicMessage bytes), one per KeyPackage."""
        msgs = [_rs.Message.from_bytes(bytes(kp)) for kp in key_packages]
        return [bytes(m.to_bytes()) for m in self.group.propose_add_members(msgs)]

    def propose_remove(self, leaf_index: int) -> list[bytes]:
        si = self._signing_identity(self._member(leaf_index).identity, None)
        return [bytes(m.to_bytes()) for m in self.group.propose_remove_members([si])]

    # -- messages ---------------------------------------------------------

    def encrypt(self, plaintext: bytes) -> bytes:
        """An application message: PrivateMessage MLSMessage bytes."""
        return bytes(self.group.encrypt_application_message(bytes(plaintext)).to_bytes())

    def process(self, message: bytes) -> tuple[Kind, object]:
        """Process one incoming MLSMessage.

        Returns ``("application", plaintext: bytes)``, ``("commit",
        CommitInfo)`` or ``("proposal", ProposalInfo)`` (and, for the
        message types the binding merely validates, ``("welcome" |
        "group_info" | "key_package", None)``).  The sender's leaf index is
        left in :attr:`last_sender`.  Raises :data:`RsError` on rejection.
        """
        message = bytes(message)
        try:
            hdr = message_header(message)
        except (ValueError, IndexError):
            hdr = {}  # let the binding report what is wrong with it
        received = self.group.process_incoming_message(_rs.Message.from_bytes(message))
        if isinstance(received, _rs.ReceivedMessage.APPLICATION_MESSAGE):
            self.last_sender = self._leaf_of(received.sender)
            return "application", bytes(received.data)
        if isinstance(received, _rs.ReceivedMessage.COMMIT):
            effect = received.effect
            removed = isinstance(effect, _rs.CommitEffect.REMOVED)
            sender = hdr.get("sender") if hdr.get("sender_type") == 1 else None
            if sender is None and not removed:
                sender = self._leaf_of(received.committer)
            assert sender is None or isinstance(sender, int)
            self.last_sender = sender
            applied = unused = 0
            if isinstance(effect, _rs.CommitEffect.NEW_EPOCH):
                applied, unused = len(effect.applied_proposals), len(effect.unused_proposals)
            epoch_before = hdr.get("epoch")
            epoch = epoch_before + 1 if isinstance(epoch_before, int) else self.epoch()
            return "commit", CommitInfo(
                sender=sender,
                epoch=epoch,
                removed=removed,
                reinit=isinstance(effect, _rs.CommitEffect.RE_INIT),
                applied_proposals=applied,
                unused_proposals=unused,
            )
        if isinstance(received, _rs.ReceivedMessage.RECEIVED_PROPOSAL):
            sender = self._leaf_of(received.sender)
            self.last_sender = sender
            ptype = hdr.get("proposal_type")
            return "proposal", ProposalInfo(sender, ptype if isinstance(ptype, int) else None)
        if isinstance(received, _rs.ReceivedMessage.WELCOME):
            return "welcome", None
        if isinstance(received, _rs.ReceivedMessage.GROUP_INFO):
            return "group_info", None
        return "key_package", None

    # -- secrets & state --------------------------------------------------

    def export_secret(self, label: bytes, context: bytes, length: int) -> bytes:
        """``MLS-Exporter(label, context, length)`` of the current epoch."""
        return bytes(self.group.export_secret(bytes(label), bytes(context), length))

    def export_ratchet_tree(self) -> bytes:
        """The current tree as RFC 9420 ``optional<Node> ratchet_tree<V>`` bytes
        (mls-rs ``ExportedTree::to_bytes``; trailing blanks already truncated)."""
        return bytes(self.group.export_tree().bytes)

    def snapshot(self) -> bytes:
        """mls-rs's serialized group state (writes it to the Python storage)."""
        self.group.write_to_storage()
        gid = self._storage.last_group_id
        assert gid is not None
        return self._storage.states[gid]

    def group_context(self) -> RsGroupContext:
        return _parse_group_context(self.snapshot())

    def epoch(self) -> int:
        return self.group_context().epoch

    def group_id(self) -> bytes:
        return self.group_context().group_id

    def key_schedule(self) -> dict[str, bytes]:
        """mls-rs's KeySchedule secrets of the current epoch, from the snapshot:
        ``exporter``, ``authentication`` (= epoch_authenticator), ``external``,
        ``membership`` (membership_key), ``init``.  Validated via export_secret."""
        if self._pending is not None:
            raise RuntimeError("a commit is pending; apply it first")
        ks = _parse_key_schedule(self.snapshot(), bytes(self._keypair.secret_key.bytes))
        probe = (b"samizdat interop probe", b"ctx", 32)
        if ks is None or mls_exporter(ks["exporter"], *probe) != self.export_secret(*probe):
            raise RuntimeError("mls-rs snapshot layout not recognised by this adapter")
        return ks

    def epoch_authenticator(self) -> bytes:
        """The epoch's ``epoch_authenticator`` (mls-rs's KeySchedule
        ``authentication_secret``), recovered from the snapshot: the binding
        has no accessor.  The parse is validated against ``export_secret``."""
        return self.key_schedule()["authentication"]

    def members(self) -> list[Member]:
        return [m for m in parse_ratchet_tree(self.export_ratchet_tree()) if m is not None]

    def leaf_index(self) -> int:
        for m in self.members():
            if m.signature_key == self.signature_public_key:
                return m.leaf_index
        raise RuntimeError("own leaf not found in the tree")

    # -- helpers ----------------------------------------------------------

    def _member(self, leaf_index: int) -> Member:
        for m in self.members():
            if m.leaf_index == leaf_index:
                return m
        raise KeyError(f"no member at leaf {leaf_index}")

    def _signing_identity(
        self, identity: bytes, signature_key: bytes | None
    ) -> _rs.SigningIdentity:
        """A binding ``SigningIdentity`` for (identity, signature_key).

        The binding only hands these out from a Client, so a throw-away client
        with a dummy secret key is built (nothing is ever signed with it).
        Removal matches on the identity alone; equality needs the key too.
        """
        key = (identity, signature_key or b"")
        si = self._identity_cache.get(key)
        if si is None:
            if signature_key is None:
                keypair = _rs.generate_signature_keypair(_CS)
            else:
                keypair = _rs.SignatureKeypair(
                    cipher_suite=_CS,
                    public_key=_rs.SignaturePublicKey(bytes=signature_key),
                    secret_key=_rs.SignatureSecretKey(bytes=bytes(64)),
                )
            client = _rs.Client(identity, keypair, _rs.client_config_default())
            si = client.signing_identity()
            self._identity_cache[key] = si
        return si

    def _leaf_of(self, si: _rs.SigningIdentity) -> int | None:
        for m in self.members():
            if m.credential_type == 1 and self._signing_identity(m.identity, m.signature_key) == si:
                return m.leaf_index
        return None
