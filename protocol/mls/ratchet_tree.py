"""The public ratchet tree (RFC 9420 §4.1, §7): nodes, resolution, tree and
parent hashes, validation, and the membership operations of §12.1.

Theory of operation
-------------------
``RatchetTree.nodes`` always has ``node_width(n_leaves)`` entries, ``None``
for blank nodes, with ``n_leaves`` a power of two (the tree is full, §7.7).
Leaves sit at even indices, parents at odd ones; the constructor enforces
both, so the rest of the module can index without re-checking.  Only the
``ratchet_tree`` extension form (:meth:`to_nodes`) strips trailing blanks.

The tree is a plain mutable value: group logic works on a :meth:`copy` and
swaps it in only when a whole commit has validated, which is what makes
commit processing atomic.  Private keys are not held here; TreeKEM
(:mod:`protocol.mls.treekem`) keeps them beside the tree.

Tree hashes (§7.8) and resolutions (§4.1.1) are memoised per node, and
filtered direct paths (§4.1.2) per leaf: a large group asks for them once
per joiner, ciphertext or check, and recomputing them each time makes
commits quadratic in the group size.  Every mutation goes through
:meth:`_set`, which drops the memo of the node and its ancestors (the only
nodes whose subtree changed) and all filtered direct paths (which depend on
resolutions anywhere on a copath); growing or truncating the tree drops
every memo.  ``tests/test_ratchet_tree_cache.py`` mutates trees at random
and compares the memoised answers with fresh computations.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import TypeVar

from protocol.codec import Writer
from protocol.errors import CryptoError
from protocol.mls import tree_math as tm
from protocol.mls.crypto import CipherSuite
from protocol.mls.errors import InvalidMessage, UnknownMember
from protocol.mls.tree_structs import (
    LeafNode,
    LeafNodeSource,
    Node,
    NodeType,
    ParentNode,
    strip_blank_tail,
)

_K = TypeVar("_K", bound=Hashable)

# Extension types every client supports without listing them (RFC 9420 §7.2).
DEFAULT_EXTENSIONS = frozenset({1, 2, 3, 4, 5})
DEFAULT_PROPOSALS = frozenset({1, 2, 3, 4, 5, 6, 7})


class RatchetTree:
    """The public state of a group's ratchet tree."""

    __slots__ = (
        "suite",
        "nodes",
        "_hashes",
        "_resolutions",
        "_fdps",
        "_free_hint",
        "_encryption_keys",
        "_signature_keys",
        "_credential_support",
        "_credentials_in_use",
        "_n_members",
    )

    def __init__(self, suite: CipherSuite, nodes: Sequence[Node | None]) -> None:
        if not nodes:
            raise InvalidMessage("a ratchet tree needs at least one leaf")
        n_leaves = 1
        while tm.node_width(n_leaves) < len(nodes):
            n_leaves *= 2
        full = list(nodes) + [None] * (tm.node_width(n_leaves) - len(nodes))
        for i, node in enumerate(full):
            if node is not None and node.node_type != (NodeType.PARENT if i & 1 else NodeType.LEAF):
                raise InvalidMessage(f"node {i} has the wrong type for its position")
        self.suite = suite
        self.nodes: list[Node | None] = full
        self._hashes: dict[int, bytes] = {}
        self._resolutions: dict[int, tuple[int, ...]] = {}
        self._fdps: dict[int, tuple[int, ...]] = {}
        # Every leaf below this index is occupied (so add_leaf need not scan them).
        self._free_hint = 0
        # Indexes kept up to date by _set, so the §7.3 uniqueness and credential
        # checks cost a lookup instead of a pass over the tree per new leaf:
        # encryption key -> nodes holding it, signature key -> leaves holding
        # it, credential type -> members listing it in their capabilities and
        # members using it.
        self._encryption_keys: dict[bytes, int] = {}
        self._signature_keys: dict[bytes, int] = {}
        self._credential_support: dict[int, int] = {}
        self._credentials_in_use: dict[int, int] = {}
        self._n_members = 0
        for node in full:
            self._index(node, 1)

    @classmethod
    def single(cls, suite: CipherSuite, leaf: LeafNode) -> RatchetTree:
        return cls(suite, [Node.leaf(leaf)])

    def copy(self) -> RatchetTree:
        other = RatchetTree.__new__(RatchetTree)
        other.suite = self.suite
        other.nodes = list(self.nodes)
        other._hashes = dict(self._hashes)
        other._resolutions = dict(self._resolutions)
        other._fdps = dict(self._fdps)
        other._free_hint = self._free_hint
        other._encryption_keys = dict(self._encryption_keys)
        other._signature_keys = dict(self._signature_keys)
        other._credential_support = dict(self._credential_support)
        other._credentials_in_use = dict(self._credentials_in_use)
        other._n_members = self._n_members
        return other

    def to_nodes(self) -> list[Node | None]:
        """The ``ratchet_tree`` extension form: trailing blanks stripped."""
        return strip_blank_tail(self.nodes)

    # -- access ---------------------------------------------------------------

    @property
    def n_leaves(self) -> int:
        return (len(self.nodes) + 1) // 2

    @property
    def root(self) -> int:
        return tm.root(self.n_leaves)

    def leaf(self, leaf_index: int) -> LeafNode | None:
        if not 0 <= leaf_index < self.n_leaves:
            return None
        node = self.nodes[2 * leaf_index]
        return node.leaf_node if node is not None else None

    def member_leaf(self, leaf_index: int) -> LeafNode:
        """The leaf of a current member; ``UnknownMember`` if blank or absent."""
        leaf = self.leaf(leaf_index)
        if leaf is None:
            raise UnknownMember(f"leaf {leaf_index} is not a member")
        return leaf

    def parent_node(self, x: int) -> ParentNode | None:
        node = self.nodes[x]
        return node.parent_node if node is not None else None

    def members(self) -> Iterator[tuple[int, LeafNode]]:
        for i, node in enumerate(self.nodes[::2]):
            if node is not None:
                assert node.leaf_node is not None
                yield i, node.leaf_node

    def public_key(self, x: int) -> bytes | None:
        node = self.nodes[x]
        if node is None:
            return None
        if node.leaf_node is not None:
            return node.leaf_node.encryption_key
        assert node.parent_node is not None
        return node.parent_node.encryption_key

    # -- key and credential indexes ----------------------------------------------

    def has_encryption_key(self, key: bytes, except_node: int | None = None) -> bool:
        """Whether a node of the tree other than ``except_node`` has this key."""
        count = self._encryption_keys.get(key, 0)
        if except_node is not None and self.public_key(except_node) == key:
            count -= 1
        return count > 0

    def has_signature_key(self, key: bytes, except_leaf: int | None = None) -> bool:
        """Whether a member other than ``except_leaf`` has this signature key."""
        count = self._signature_keys.get(key, 0)
        if except_leaf is not None:
            leaf = self.leaf(except_leaf)
            if leaf is not None and leaf.signature_key == key:
                count -= 1
        return count > 0

    def credential_support(self) -> tuple[frozenset[int] | None, frozenset[int]]:
        """(credential types every member supports, None if there is no member;
        credential types the members use)."""
        n = self._n_members
        supported = (
            frozenset(t for t, c in self._credential_support.items() if c == n) if n else None
        )
        return supported, frozenset(t for t, c in self._credentials_in_use.items() if c)

    def _index(self, node: Node | None, delta: int) -> None:
        """Add (``delta`` 1) or withdraw (-1) ``node`` from the indexes."""
        if node is None:
            return
        leaf = node.leaf_node
        if leaf is None:
            assert node.parent_node is not None
            _bump(self._encryption_keys, node.parent_node.encryption_key, delta)
            return
        _bump(self._encryption_keys, leaf.encryption_key, delta)
        _bump(self._signature_keys, leaf.signature_key, delta)
        for cred in set(leaf.capabilities.credentials):
            _bump(self._credential_support, cred, delta)
        _bump(self._credentials_in_use, leaf.credential.credential_type, delta)
        self._n_members += delta

    # -- paths and resolution (§4.1) -------------------------------------------

    def resolution(self, x: int, exclude: frozenset[int] = frozenset()) -> list[int]:
        """Node indices of the resolution of ``x``, minus leaves in ``exclude``."""
        full = self._resolution(x)
        if not exclude:
            return list(full)
        return [y for y in full if y & 1 or y >> 1 not in exclude]

    def _resolution(self, x: int) -> tuple[int, ...]:
        """The memoised resolution of ``x`` (§4.1.1)."""
        cached = self._resolutions.get(x)
        if cached is not None:
            return cached
        node = self.nodes[x]
        if node is None:
            if tm.is_leaf(x):
                out: tuple[int, ...] = ()
            else:
                out = self._resolution(tm.left(x)) + self._resolution(tm.right(x))
        elif node.leaf_node is not None:
            out = (x,)
        else:
            assert node.parent_node is not None
            out = (x, *(2 * leaf for leaf in node.parent_node.unmerged_leaves))
        self._resolutions[x] = out
        return out

    def filtered_direct_path(self, leaf_index: int) -> list[int]:
        """The direct path of the leaf minus nodes whose copath child has an
        empty resolution (§4.1.2)."""
        cached = self._fdps.get(leaf_index)
        if cached is None:
            x = 2 * leaf_index
            n = self.n_leaves
            cached = tuple(
                parent
                for parent, copath_child in zip(tm.direct_path(x, n), tm.copath(x, n), strict=True)
                if self._resolution(copath_child)
            )
            self._fdps[leaf_index] = cached
        return list(cached)

    # -- mutation ---------------------------------------------------------------

    def _set(self, x: int, node: Node | None) -> None:
        self._index(self.nodes[x], -1)
        self._index(node, 1)
        self.nodes[x] = node
        if node is None and x & 1 == 0:
            self._free_hint = min(self._free_hint, x >> 1)
        hashes, resolutions = self._hashes, self._resolutions
        hashes.pop(x, None)
        resolutions.pop(x, None)
        self._fdps.clear()
        root = tm.root(self.n_leaves)
        while x != root:
            x = tm.parent_of(x)
            hashes.pop(x, None)
            resolutions.pop(x, None)

    def _forget_all(self) -> None:
        self._hashes.clear()
        self._resolutions.clear()
        self._fdps.clear()

    def set_leaf(self, leaf_index: int, leaf: LeafNode | None) -> None:
        self._set(2 * leaf_index, Node.leaf(leaf) if leaf is not None else None)

    def set_parent(self, x: int, parent: ParentNode | None) -> None:
        self._set(x, Node.parent(parent) if parent is not None else None)

    def blank_direct_path(self, leaf_index: int) -> None:
        for x in tm.direct_path(2 * leaf_index, self.n_leaves):
            if self.nodes[x] is not None:
                self._set(x, None)

    def _extend(self) -> None:
        """Double the leaves: the old tree becomes the left subtree (§7.7)."""
        self.nodes.extend([None] * (len(self.nodes) + 1))
        self._forget_all()

    def _truncate(self) -> None:
        """Drop right halves that hold no member (§12.1.3)."""
        while self.n_leaves > 1:
            half = self.n_leaves // 2
            if any(self.nodes[2 * i] is not None for i in range(half, self.n_leaves)):
                return
            for node in self.nodes[tm.node_width(half) :]:
                self._index(node, -1)
            del self.nodes[tm.node_width(half) :]
            self._forget_all()

    def add_leaf(self, leaf: LeafNode) -> int:
        """Place a new member in the leftmost blank leaf (§12.1.1)."""
        index = next(
            (i for i in range(self._free_hint, self.n_leaves) if self.nodes[2 * i] is None), None
        )
        if index is None:
            index = self.n_leaves
            self._extend()
        for x in tm.direct_path(2 * index, self.n_leaves):
            parent = self.parent_node(x)
            if parent is not None:
                unmerged = tuple(sorted({*parent.unmerged_leaves, index}))
                self.set_parent(x, ParentNode(parent.encryption_key, parent.parent_hash, unmerged))
        self.set_leaf(index, leaf)
        self._free_hint = index + 1
        return index

    def update_leaf(self, leaf_index: int, leaf: LeafNode) -> None:
        """Apply an Update (§12.1.2)."""
        self.member_leaf(leaf_index)
        self.set_leaf(leaf_index, leaf)
        self.blank_direct_path(leaf_index)

    def remove_leaf(self, leaf_index: int) -> None:
        """Apply a Remove (§12.1.3)."""
        self.member_leaf(leaf_index)
        self.set_leaf(leaf_index, None)
        self.blank_direct_path(leaf_index)
        self._truncate()

    # -- tree hash (§7.8) ---------------------------------------------------------

    def tree_hash(self, x: int | None = None) -> bytes:
        """Tree hash of the subtree at ``x`` (the root by default)."""
        if x is None:
            x = self.root
        cached = self._hashes.get(x)
        if cached is None:
            cached = self._tree_hash(x, frozenset())
            self._hashes[x] = cached
        return cached

    def _tree_hash(self, x: int, exclude: frozenset[int]) -> bytes:
        """Tree hash with the leaves in ``exclude`` blanked and removed from
        every unmerged_leaves list (used for original sibling tree hashes)."""
        w = Writer()
        node = self.nodes[x]
        if tm.is_leaf(x):
            w.push_uint8(NodeType.LEAF)
            w.push_uint32(x // 2)
            leaf = node.leaf_node if node is not None and x // 2 not in exclude else None
            w.push_optional(leaf, _push)
            return self.suite.hash(w.getvalue())
        if exclude and self._subtree_excludes(x, exclude):
            left, right = (self._tree_hash(c, exclude) for c in (tm.left(x), tm.right(x)))
        else:
            exclude = frozenset()
            left, right = self.tree_hash(tm.left(x)), self.tree_hash(tm.right(x))
        w.push_uint8(NodeType.PARENT)
        parent = node.parent_node if node is not None else None
        if parent is not None and exclude:
            kept = tuple(i for i in parent.unmerged_leaves if i not in exclude)
            parent = ParentNode(parent.encryption_key, parent.parent_hash, kept)
        w.push_optional(parent, _push)
        w.push_opaque(left)
        w.push_opaque(right)
        return self.suite.hash(w.getvalue())

    @staticmethod
    def _subtree_excludes(x: int, exclude: frozenset[int]) -> bool:
        return any(tm.is_in_subtree(x, 2 * leaf) for leaf in exclude)

    # -- parent hashes (§7.9) -------------------------------------------------------

    def parent_hash_of(self, p: int, copath_child: int) -> bytes:
        """The parent hash of parent node ``p`` with copath child ``copath_child``."""
        parent = self.parent_node(p)
        if parent is None:
            raise InvalidMessage(f"parent hash of blank node {p}")
        sibling_hash = self._tree_hash(copath_child, frozenset(parent.unmerged_leaves))
        w = Writer()
        w.push_opaque(parent.encryption_key)
        w.push_opaque(parent.parent_hash)
        w.push_opaque(sibling_hash)
        return self.suite.hash(w.getvalue())

    def _node_parent_hash(self, x: int) -> bytes | None:
        node = self.nodes[x]
        if node is None:
            return None
        if node.leaf_node is not None:
            return node.leaf_node.parent_hash
        assert node.parent_node is not None
        return node.parent_node.parent_hash

    def verify_parent_hashes(self) -> None:
        """Every non-blank parent node is parent-hash valid (§7.9.2, top down:
        exactly one descendant chains to it)."""
        for p in range(1, len(self.nodes), 2):
            parent = self.parent_node(p)
            if parent is None:
                continue
            left, right = tm.left(p), tm.right(p)
            valid = 0
            for child, sibling in ((left, right), (right, left)):
                resolution = self._resolution(child)
                if not resolution:
                    continue
                # §7.9.2: node d below ``child`` chains to p if its parent_hash
                # is p's parent hash with ``sibling`` as the copath child, and
                # the resolution of ``child`` is d plus p's unmerged leaves there.
                expected = self.parent_hash_of(p, sibling)
                in_child = {2 * i for i in parent.unmerged_leaves if tm.is_in_subtree(child, 2 * i)}
                below = set(resolution)
                for d in resolution:
                    if self._node_parent_hash(d) == expected and in_child == below - {d}:
                        valid += 1
            if valid != 1:
                raise InvalidMessage(f"parent node {p} is not parent-hash valid")

    # -- validation (§7.3, §12.4.3.1) --------------------------------------------

    def verify_leaf_signature(self, leaf_index: int, group_id: bytes) -> None:
        leaf = self.member_leaf(leaf_index)
        verify_leaf_node_signature(self.suite, leaf, group_id, leaf_index)

    def verify_structure(self) -> None:
        """Unmerged-leaf rules and key uniqueness of §12.4.3.1."""
        n = self.n_leaves
        parent_keys: set[bytes] = set()
        leaf_keys: set[bytes] = set()
        signature_keys: set[bytes] = set()
        for _, leaf in self.members():
            if leaf.encryption_key in leaf_keys or leaf.signature_key in signature_keys:
                raise InvalidMessage("two leaves share an encryption or signature key")
            leaf_keys.add(leaf.encryption_key)
            signature_keys.add(leaf.signature_key)
        for p in range(1, len(self.nodes), 2):
            parent = self.parent_node(p)
            if parent is None:
                continue
            if parent.encryption_key in parent_keys or parent.encryption_key in leaf_keys:
                raise InvalidMessage(f"parent node {p} reuses an encryption key")
            parent_keys.add(parent.encryption_key)
            if list(parent.unmerged_leaves) != sorted(set(parent.unmerged_leaves)):
                raise InvalidMessage(f"unmerged_leaves of node {p} are not sorted and unique")
            for leaf_index in parent.unmerged_leaves:
                x = 2 * leaf_index
                if leaf_index >= n or self.nodes[x] is None or not tm.is_in_subtree(p, x):
                    raise InvalidMessage(f"node {p} lists a bad unmerged leaf {leaf_index}")
                for between in tm.direct_path(x, n):
                    if between == p:
                        break
                    mid = self.parent_node(between)
                    if mid is not None and leaf_index not in mid.unmerged_leaves:
                        raise InvalidMessage(
                            f"unmerged leaf {leaf_index} missing below node {p} at {between}"
                        )

    def validate(self, group_id: bytes, suite_id: int) -> None:
        """Full validation of a tree received on joining (§12.4.3.1): leaf
        signatures and capabilities, structure, parent hashes."""
        for leaf_index, leaf in self.members():
            verify_leaf_node_signature(self.suite, leaf, group_id, leaf_index)
            check_leaf_node_basics(leaf, suite_id)
        self.verify_structure()
        self.verify_parent_hashes()


def _bump(counts: dict[_K, int], key: _K, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value:
        counts[key] = value
    else:
        del counts[key]


def _push(w: Writer, item: LeafNode | ParentNode) -> None:
    item.encode(w)


def verify_leaf_node_signature(
    suite: CipherSuite, leaf: LeafNode, group_id: bytes, leaf_index: int
) -> None:
    """Check ``SignWithLabel(., "LeafNodeTBS", LeafNodeTBS)`` (§7.2)."""
    if leaf.leaf_node_source == LeafNodeSource.KEY_PACKAGE:
        tbs = leaf.tbs_bytes()
    else:
        tbs = leaf.tbs_bytes(group_id, leaf_index)
    try:
        suite.verify_with_label(leaf.signature_key, "LeafNodeTBS", tbs, leaf.signature)
    except CryptoError as exc:
        raise CryptoError(f"leaf {leaf_index}: bad LeafNode signature") from exc


def check_leaf_node_basics(leaf: LeafNode, suite_id: int) -> None:
    """The self-consistency rules of §7.3 that need no group context: the
    credential type and non-default extensions are listed in the leaf's own
    capabilities, and MLS 1.0 is listed.

    ``suite_id`` is deliberately not required in ``capabilities.cipher_suites``:
    §7.3 does not ask for it (the suite is bound by KeyPackage.cipher_suite,
    checked against the group's in §10.1, and by the Welcome), and other
    implementations create groups whose leaves omit it (SPEC.md §4.3)."""
    caps = leaf.capabilities
    if leaf.credential.credential_type not in caps.credentials:
        raise InvalidMessage("leaf credential type not listed in its capabilities")
    for ext in leaf.extensions:
        if (
            ext.extension_type not in DEFAULT_EXTENSIONS
            and ext.extension_type not in caps.extensions
        ):
            raise InvalidMessage(f"leaf extension {ext.extension_type} not in its capabilities")
    if 1 not in caps.versions:
        raise InvalidMessage("leaf does not support MLS 1.0")
