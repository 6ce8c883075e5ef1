"""Tree-validation vectors (FORMAT.md "Tree Validation")."""

from __future__ import annotations

from typing import Any

from harness.conformance import expect_equal, h
from protocol.mls.crypto import get_suite
from protocol.mls.ratchet_tree import RatchetTree
from protocol.mls.tree_structs import decode_ratchet_tree

KIND = "tree-validation"


def run(case: dict[str, Any]) -> None:
    suite = get_suite(case["cipher_suite"])
    tree = RatchetTree(suite, decode_ratchet_tree(h(case["tree"])))
    for x, want in enumerate(case["resolutions"]):
        expect_equal(f"resolution of node {x}", tree.resolution(x), want)
    for x, want in enumerate(case["tree_hashes"]):
        expect_equal(f"tree hash of node {x}", tree.tree_hash(x), h(want))
    tree.verify_parent_hashes()
    for leaf_index, _ in tree.members():
        tree.verify_leaf_signature(leaf_index, h(case["group_id"]))
    tree.verify_structure()
