"""Array-based binary tree arithmetic (RFC 9420 §4.1, Appendix C).

Nodes are numbered left to right: leaves have even indices (leaf ``i`` is node
``2i``), parents odd ones.  An MLS tree always has a power-of-two number of
leaves (RFC 9420 §7.7: it is extended by doubling and truncated by halving),
so every function here takes ``n_leaves`` and the tree is full.
"""

from __future__ import annotations

from protocol.errors import LocalError


def log2(x: int) -> int:
    """Exponent of the largest power of two not above ``x`` (0 for 0)."""
    return x.bit_length() - 1 if x > 0 else 0


def level(x: int) -> int:
    """Leaves are level 0; a parent is one above its children."""
    # The level is the number of trailing one bits of x.
    return ((x ^ (x + 1)) >> 1).bit_length()


def node_width(n_leaves: int) -> int:
    return 0 if n_leaves == 0 else 2 * (n_leaves - 1) + 1


def root(n_leaves: int) -> int:
    return (1 << log2(node_width(n_leaves))) - 1


def is_leaf(x: int) -> bool:
    return x & 1 == 0


def leaf_to_node(leaf: int) -> int:
    return 2 * leaf


def node_to_leaf(x: int) -> int:
    if x & 1:
        raise LocalError(f"node {x} is not a leaf")
    return x >> 1


def left(x: int) -> int:
    k = level(x)
    if k == 0:
        raise LocalError(f"leaf node {x} has no children")
    return x ^ (1 << (k - 1))


def right(x: int) -> int:
    k = level(x)
    if k == 0:
        raise LocalError(f"leaf node {x} has no children")
    return x ^ (3 << (k - 1))


def parent(x: int, n_leaves: int) -> int:
    if x == root(n_leaves):
        raise LocalError(f"root node {x} has no parent")
    return parent_of(x)


def sibling(x: int, n_leaves: int) -> int:
    p = parent(x, n_leaves)
    return right(p) if x < p else left(p)


def direct_path(x: int, n_leaves: int) -> list[int]:
    """Ancestors of ``x`` from its parent up to the root."""
    r = root(n_leaves)
    path: list[int] = []
    while x != r:
        x = parent_of(x)
        path.append(x)
    return path


def parent_of(x: int) -> int:
    """The parent of ``x`` in any tree large enough to hold it above ``x``
    (the caller knows ``x`` is not the root); :func:`parent` with the check."""
    k = level(x)
    b = (x >> (k + 1)) & 1
    return (x | (1 << k)) ^ (b << (k + 1))


def copath(x: int, n_leaves: int) -> list[int]:
    """Siblings of ``x`` and of each ancestor below the root, leaf to root."""
    r = root(n_leaves)
    if x == r:
        return []
    nodes = [x, *direct_path(x, n_leaves)[:-1]]
    return [sibling(y, n_leaves) for y in nodes]


def is_in_subtree(ancestor: int, x: int) -> bool:
    """Whether node ``x`` lies in the subtree rooted at ``ancestor``.

    A node at level k spans the indices within 2^k - 1 of itself.
    """
    return abs(x - ancestor) < (1 << level(ancestor))


def common_ancestor(x: int, y: int) -> int:
    """The lowest node whose subtree holds both ``x`` and ``y``."""
    lx, ly = level(x) + 1, level(y) + 1
    if lx <= ly and x >> ly == y >> ly:
        return y
    if ly <= lx and x >> lx == y >> lx:
        return x
    xn, yn, k = x, y, 0
    while xn != yn:
        xn, yn = xn >> 1, yn >> 1
        k += 1
    return (xn << k) + (1 << (k - 1)) - 1
