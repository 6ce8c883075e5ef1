"""Tree-math vectors (FORMAT.md "Tree Math")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.conformance import expect_equal
from protocol.errors import LocalError
from protocol.mls import tree_math as tm

KIND = "tree-math"


def _or_none(fn: Callable[[int], int], x: int) -> int | None:
    try:
        return fn(x)
    except LocalError:
        return None


def run(case: dict[str, Any]) -> None:
    n = case["n_leaves"]
    expect_equal("n_nodes", tm.node_width(n), case["n_nodes"])
    expect_equal("root", tm.root(n), case["root"])
    for x in range(case["n_nodes"]):
        expect_equal(f"left[{x}]", _or_none(tm.left, x), case["left"][x])
        expect_equal(f"right[{x}]", _or_none(tm.right, x), case["right"][x])
        expect_equal(f"parent[{x}]", _or_none(lambda y: tm.parent(y, n), x), case["parent"][x])
        expect_equal(f"sibling[{x}]", _or_none(lambda y: tm.sibling(y, n), x), case["sibling"][x])
