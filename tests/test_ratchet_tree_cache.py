"""The ratchet tree's memos (tree hashes, resolutions, filtered direct paths,
the free-leaf hint) against computation from scratch, after random mutations.

Every check first queries the mutated tree (so stale memo entries would be
returned), then compares with a fresh ``RatchetTree`` built from the same
nodes and with a naive resolution written here from RFC 9420 §4.1.
"""

from __future__ import annotations

import random

from protocol.mls import tree_math as tm
from protocol.mls.crypto import get_suite
from protocol.mls.ratchet_tree import RatchetTree
from protocol.mls.tree_structs import (
    Capabilities,
    Credential,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    ParentNode,
)

SUITE = get_suite(1)
CAPS = Capabilities((1,), (1,), (), (), (1,))


KEYS = [bytes([i]) * 32 for i in range(6)]  # drawn from sometimes, so keys repeat


def _leaf(rnd: random.Random) -> LeafNode:
    def key() -> bytes:
        return rnd.choice(KEYS) if rnd.random() < 0.2 else rnd.randbytes(32)

    caps = Capabilities((1,), (1,), (), (), tuple(sorted(rnd.sample([1, 2, 3], k=2))))
    return LeafNode(
        encryption_key=key(),
        signature_key=key(),
        credential=Credential.basic(rnd.randbytes(4)),
        capabilities=rnd.choice([CAPS, caps]),
        leaf_node_source=LeafNodeSource.KEY_PACKAGE,
        lifetime=Lifetime(0, 1),
        parent_hash=None,
        extensions=(),
        signature=rnd.randbytes(64),
    )


def _naive_resolution(tree: RatchetTree, x: int) -> list[int]:
    """RFC 9420 §4.1.1, recomputed every time."""
    node = tree.nodes[x]
    if node is None:
        if tm.is_leaf(x):
            return []
        return _naive_resolution(tree, tm.left(x)) + _naive_resolution(tree, tm.right(x))
    if node.parent_node is not None:
        return [x, *(2 * i for i in node.parent_node.unmerged_leaves)]
    return [x]


def _naive_fdp(tree: RatchetTree, leaf: int) -> list[int]:
    n = tree.n_leaves
    x = 2 * leaf
    return [
        p
        for p, c in zip(tm.direct_path(x, n), tm.copath(x, n), strict=True)
        if _naive_resolution(tree, c)
    ]


def _check(tree: RatchetTree, rnd: random.Random) -> None:
    fresh = RatchetTree(tree.suite, list(tree.nodes))
    n = tree.n_leaves
    for x in range(len(tree.nodes)):
        want = _naive_resolution(tree, x)
        assert tree.resolution(x) == want, f"resolution of {x}"
        exclude = frozenset(rnd.sample(range(n), k=min(n, rnd.randint(0, 3))))
        assert tree.resolution(x, exclude) == [y for y in want if y & 1 or y // 2 not in exclude], (
            f"resolution of {x} minus {sorted(exclude)}"
        )
        assert tree.tree_hash(x) == fresh.tree_hash(x), f"tree hash of {x}"
    for leaf in range(n):
        assert tree.filtered_direct_path(leaf) == _naive_fdp(tree, leaf), f"fdp of {leaf}"
    _check_indexes(tree, rnd)
    for p in range(1, len(tree.nodes), 2):
        if tree.nodes[p] is not None:
            for child in (tm.left(p), tm.right(p)):
                assert tree.parent_hash_of(p, child) == fresh.parent_hash_of(p, child)


def _check_indexes(tree: RatchetTree, rnd: random.Random) -> None:
    """The key and credential indexes against a pass over the nodes."""
    keys = [tree.public_key(x) for x in range(len(tree.nodes))]
    for x, key in enumerate(keys):
        if key is not None:
            others = any(k == key for y, k in enumerate(keys) if y != x)
            assert tree.has_encryption_key(key)
            assert tree.has_encryption_key(key, except_node=x) == others
    assert not tree.has_encryption_key(rnd.randbytes(32))
    members = list(tree.members())
    for i, leaf in members:
        others = any(o.signature_key == leaf.signature_key for j, o in members if j != i)
        assert tree.has_signature_key(leaf.signature_key)
        assert tree.has_signature_key(leaf.signature_key, except_leaf=i) == others
    assert not tree.has_signature_key(rnd.randbytes(32))
    supported, in_use = tree.credential_support()
    if members:
        want = frozenset.intersection(*(frozenset(m.capabilities.credentials) for _, m in members))
        assert supported == want
    else:
        assert supported is None
    assert in_use == {m.credential.credential_type for _, m in members}


def _query(tree: RatchetTree, rnd: random.Random) -> None:
    """Fill some memo entries, so that a later mutation has something to invalidate."""
    for _ in range(6):
        x = rnd.randrange(len(tree.nodes))
        tree.resolution(x)
        tree.tree_hash(x)
    tree.tree_hash()
    tree.filtered_direct_path(rnd.randrange(tree.n_leaves))


def _mutate(tree: RatchetTree, rnd: random.Random) -> None:
    members = [i for i, _ in tree.members()]
    op = rnd.choice(["add", "add", "remove", "update", "parent", "blank"])
    if op == "add" or len(members) < 2:
        blanks = [i for i in range(tree.n_leaves) if tree.nodes[2 * i] is None]
        want = blanks[0] if blanks else tree.n_leaves
        assert tree.add_leaf(_leaf(rnd)) == want  # the leftmost blank leaf (§12.1.1)
    elif op == "remove":
        tree.remove_leaf(rnd.choice(members[1:]))
    elif op == "update":
        tree.update_leaf(rnd.choice(members), _leaf(rnd))
    elif op == "parent" and tree.n_leaves > 1:
        p = rnd.randrange(1, len(tree.nodes), 2)
        below = [i for i in members if tm.is_in_subtree(p, 2 * i)]
        unmerged = tuple(sorted(rnd.sample(below, k=rnd.randint(0, len(below)))))
        key = rnd.choice(KEYS) if rnd.random() < 0.2 else rnd.randbytes(32)
        tree.set_parent(p, ParentNode(key, rnd.randbytes(32), unmerged))
    else:
        tree.blank_direct_path(rnd.choice(members))


def test_memoised_tree_matches_fresh_computation_under_random_mutation() -> None:
    for seed in range(6):
        rnd = random.Random(seed)
        tree = RatchetTree.single(SUITE, _leaf(rnd))
        for _ in range(60):
            _query(tree, rnd)
            _mutate(tree, rnd)
            _check(tree, rnd)


def test_copy_keeps_memos_apart() -> None:
    """A copy (what commit processing works on) never shares memo state."""
    rnd = random.Random(99)
    tree = RatchetTree.single(SUITE, _leaf(rnd))
    for _ in range(20):
        tree.add_leaf(_leaf(rnd))
    for _ in range(30):
        _query(tree, rnd)
        copy = tree.copy()
        _query(copy, rnd)
        _mutate(copy, rnd)
        _check(copy, rnd)
        _check(tree, rnd)  # the original is unchanged by the copy's mutation
        if rnd.random() < 0.5:
            tree = copy
