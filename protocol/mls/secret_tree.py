"""The secret tree and per-sender hash ratchets (RFC 9420 §9).

Theory of operation
-------------------
The tree starts from the epoch's ``encryption_secret`` at the root.  A leaf's
secret is derived on first use along the path from the lowest known ancestor;
every parent secret is deleted as soon as both its children are derived, and a
leaf's secret once its two ratchets are seeded (the deletion schedule of
§9.2).  Each ratchet keeps the secret of its next unused generation and a
bounded map of keys skipped over by out-of-order delivery.

Decryption is two-phase so that a rejected message changes nothing:
:meth:`SecretTree.peek` derives a key and nonce without touching any state,
and only after the AEAD has verified does :meth:`SecretTree.consume` advance
the ratchet and delete what was used.  Both enforce the same limits: a
generation already consumed raises :class:`ReplayedMessage`; one more than
``max_forward`` steps ahead raises :class:`GenerationTooFar` (§15.3: a hostile
member could otherwise demand 2^32 derivations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from protocol.codec import Reader, Writer
from protocol.errors import DecodeError
from protocol.mls import tree_math as tm
from protocol.mls.crypto import CipherSuite
from protocol.mls.errors import GenerationTooFar, ReplayedMessage, UnknownMember

DEFAULT_MAX_FORWARD = 1024  # steps a message may jump ahead of its ratchet
DEFAULT_MAX_SKIPPED = 256  # retained keys per ratchet for late messages


class RatchetType(Enum):
    HANDSHAKE = "handshake"
    APPLICATION = "application"


@dataclass(slots=True)
class _Ratchet:
    secret: bytes  # ratchet_secret_[N]_[generation]
    generation: int = 0
    skipped: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)


def _key_nonce(suite: CipherSuite, secret: bytes, generation: int) -> tuple[bytes, bytes]:
    key = suite.derive_tree_secret(secret, "key", generation, suite.key_len)
    nonce = suite.derive_tree_secret(secret, "nonce", generation, suite.nonce_len)
    return key, nonce


def _next_secret(suite: CipherSuite, secret: bytes, generation: int) -> bytes:
    return suite.derive_tree_secret(secret, "secret", generation, suite.hash_len)


class SecretTree:
    """Per-epoch sender ratchets for ``n_leaves`` members."""

    def __init__(
        self,
        suite: CipherSuite,
        encryption_secret: bytes,
        n_leaves: int,
        *,
        max_forward: int = DEFAULT_MAX_FORWARD,
        max_skipped: int = DEFAULT_MAX_SKIPPED,
    ) -> None:
        self.suite = suite
        self.n_leaves = n_leaves
        self.max_forward = max_forward
        self.max_skipped = max_skipped
        self._nodes: dict[int, bytes] = {tm.root(n_leaves): encryption_secret}
        self._ratchets: dict[tuple[int, RatchetType], _Ratchet] = {}

    def copy(self) -> SecretTree:
        other = SecretTree.__new__(SecretTree)
        other.suite = self.suite
        other.n_leaves = self.n_leaves
        other.max_forward = self.max_forward
        other.max_skipped = self.max_skipped
        other._nodes = dict(self._nodes)
        other._ratchets = {
            k: _Ratchet(r.secret, r.generation, dict(r.skipped)) for k, r in self._ratchets.items()
        }
        return other

    def encode(self, w: Writer) -> None:
        """Serialize for the client's encrypted store (not a wire format)."""
        w.push_uint32(self.n_leaves)
        w.push_vector(sorted(self._nodes.items()), _push_node_secret)
        w.push_vector(sorted(self._ratchets.items(), key=_ratchet_key), _push_ratchet)

    @classmethod
    def decode(cls, suite: CipherSuite, r: Reader) -> SecretTree:
        tree = cls.__new__(cls)
        tree.suite = suite
        tree.n_leaves = r.pull_uint32()
        tree.max_forward = DEFAULT_MAX_FORWARD
        tree.max_skipped = DEFAULT_MAX_SKIPPED
        tree._nodes = dict(r.pull_vector(_pull_node_secret))
        tree._ratchets = dict(r.pull_vector(_pull_ratchet))
        return tree

    # -- tree ---------------------------------------------------------------

    def _path_from_known(self, leaf: int) -> tuple[int, list[int]]:
        """Lowest ancestor-or-self of ``leaf`` with a stored secret, and the
        nodes below it down to the leaf."""
        if not 0 <= leaf < self.n_leaves:
            raise UnknownMember(f"leaf {leaf} is outside a tree of {self.n_leaves} leaves")
        node = tm.leaf_to_node(leaf)
        below: list[int] = []
        while node not in self._nodes:
            if node == tm.root(self.n_leaves):
                raise ReplayedMessage(f"secrets of leaf {leaf} were already consumed")
            below.append(node)
            node = tm.parent(node, self.n_leaves)
        below.reverse()
        return node, below

    def _child_secret(self, parent_secret: bytes, parent: int, child: int) -> bytes:
        side = b"left" if child < parent else b"right"
        return self.suite.expand_with_label(parent_secret, "tree", side, self.suite.hash_len)

    def _leaf_secret_peek(self, leaf: int) -> bytes:
        node, below = self._path_from_known(leaf)
        secret = self._nodes[node]
        for child in below:
            secret = self._child_secret(secret, node, child)
            node = child
        return secret

    def _leaf_secret_take(self, leaf: int) -> bytes:
        """Derive the leaf secret, storing copath secrets and deleting the path."""
        node, below = self._path_from_known(leaf)
        for child in below:
            secret = self._nodes.pop(node)
            self._nodes[tm.left(node)] = self._child_secret(secret, node, tm.left(node))
            self._nodes[tm.right(node)] = self._child_secret(secret, node, tm.right(node))
            node = child
        return self._nodes.pop(node)

    def _ratchet_root(self, leaf_secret: bytes, kind: RatchetType) -> bytes:
        return self.suite.expand_with_label(leaf_secret, kind.value, b"", self.suite.hash_len)

    def _ratchet(self, leaf: int, kind: RatchetType) -> _Ratchet | None:
        return self._ratchets.get((leaf, kind))

    def _ensure_ratchets(self, leaf: int) -> None:
        if (leaf, RatchetType.HANDSHAKE) in self._ratchets:
            return
        leaf_secret = self._leaf_secret_take(leaf)
        for kind in RatchetType:
            self._ratchets[(leaf, kind)] = _Ratchet(self._ratchet_root(leaf_secret, kind))

    # -- ratchets -----------------------------------------------------------

    def _check(self, leaf: int, kind: RatchetType, generation: int) -> _Ratchet | None:
        """The limits of :meth:`peek` and :meth:`consume`, checked without
        deriving anything; the leaf's ratchet if it has one."""
        ratchet = self._ratchet(leaf, kind)
        if ratchet is None:
            self._path_from_known(leaf)  # an unknown leaf, or one already consumed
            start = 0
        else:
            if generation < ratchet.generation:
                if generation in ratchet.skipped:
                    return ratchet
                raise ReplayedMessage(f"generation {generation} of leaf {leaf} already used")
            start = ratchet.generation
        if generation - start > self.max_forward:
            raise GenerationTooFar(
                f"generation {generation} is more than {self.max_forward} ahead of {start}"
            )
        return ratchet

    def peek(self, leaf: int, kind: RatchetType, generation: int) -> tuple[bytes, bytes]:
        """Key and nonce of ``generation`` without changing any state."""
        ratchet = self._check(leaf, kind, generation)
        if ratchet is None:
            secret, start = self._ratchet_root(self._leaf_secret_peek(leaf), kind), 0
        elif generation < ratchet.generation:
            return ratchet.skipped[generation]
        else:
            secret, start = ratchet.secret, ratchet.generation
        for g in range(start, generation):
            secret = _next_secret(self.suite, secret, g)
        return _key_nonce(self.suite, secret, generation)

    def consume(self, leaf: int, kind: RatchetType, generation: int) -> tuple[bytes, bytes]:
        """Key and nonce of ``generation``, deleting them and all secrets
        before it (keys skipped over are kept, up to ``max_skipped``)."""
        self._check(leaf, kind, generation)  # the checks of peek, before any mutation
        self._ensure_ratchets(leaf)
        ratchet = self._ratchets[(leaf, kind)]
        if generation < ratchet.generation:
            return ratchet.skipped.pop(generation)
        secret = ratchet.secret
        for g in range(ratchet.generation, generation):
            ratchet.skipped[g] = _key_nonce(self.suite, secret, g)
            secret = _next_secret(self.suite, secret, g)
        while len(ratchet.skipped) > self.max_skipped:
            del ratchet.skipped[min(ratchet.skipped)]
        key_nonce = _key_nonce(self.suite, secret, generation)
        ratchet.secret = _next_secret(self.suite, secret, generation)
        ratchet.generation = generation + 1
        return key_nonce

    def next_generation(self, leaf: int, kind: RatchetType) -> int:
        """The generation a sender at ``leaf`` uses next."""
        ratchet = self._ratchet(leaf, kind)
        return 0 if ratchet is None else ratchet.generation


_RATCHET_CODES = {RatchetType.HANDSHAKE: 1, RatchetType.APPLICATION: 2}
_RATCHET_BY_CODE = {v: k for k, v in _RATCHET_CODES.items()}


def _ratchet_key(item: tuple[tuple[int, RatchetType], _Ratchet]) -> tuple[int, int]:
    return item[0][0], _RATCHET_CODES[item[0][1]]


def _push_node_secret(w: Writer, item: tuple[int, bytes]) -> None:
    w.push_uint32(item[0])
    w.push_opaque(item[1])


def _pull_node_secret(r: Reader) -> tuple[int, bytes]:
    return r.pull_uint32(), r.pull_opaque()


def _push_key_nonce(w: Writer, item: tuple[int, tuple[bytes, bytes]]) -> None:
    w.push_uint32(item[0])
    w.push_opaque(item[1][0])
    w.push_opaque(item[1][1])


def _pull_key_nonce(r: Reader) -> tuple[int, tuple[bytes, bytes]]:
    return r.pull_uint32(), (r.pull_opaque(), r.pull_opaque())


def _push_ratchet(w: Writer, item: tuple[tuple[int, RatchetType], _Ratchet]) -> None:
    (leaf, kind), ratchet = item
    w.push_uint32(leaf)
    w.push_uint8(_RATCHET_CODES[kind])
    w.push_opaque(ratchet.secret)
    w.push_uint32(ratchet.generation)
    w.push_vector(sorted(ratchet.skipped.items()), _push_key_nonce)


def _pull_ratchet(r: Reader) -> tuple[tuple[int, RatchetType], _Ratchet]:
    leaf = r.pull_uint32()
    code = r.pull_uint8()
    if code not in _RATCHET_BY_CODE:
        raise DecodeError(f"unknown ratchet type {code}")
    secret = r.pull_opaque()
    generation = r.pull_uint32()
    skipped = dict(r.pull_vector(_pull_key_nonce))
    return (leaf, _RATCHET_BY_CODE[code]), _Ratchet(secret, generation, skipped)


def sender_data_key_nonce(
    suite: CipherSuite, sender_data_secret: bytes, ciphertext: bytes
) -> tuple[bytes, bytes]:
    """Key and nonce for SenderData (RFC 9420 §6.3.2): keyed by the first
    ``KDF.Nh`` bytes of the content ciphertext (all of it if shorter)."""
    sample = ciphertext[: suite.hash_len]
    key = suite.expand_with_label(sender_data_secret, "key", sample, suite.key_len)
    nonce = suite.expand_with_label(sender_data_secret, "nonce", sample, suite.nonce_len)
    return key, nonce
