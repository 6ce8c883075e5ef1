"""Tree-operations vectors (FORMAT.md "Tree Operations")."""

from __future__ import annotations

from typing import Any

from harness.conformance import VectorFailure, expect_equal, h
from protocol.mls.crypto import get_suite
from protocol.mls.messages import Add, Proposal, Remove, Update
from protocol.mls.ratchet_tree import RatchetTree
from protocol.mls.tree_structs import decode_ratchet_tree, encode_ratchet_tree

KIND = "tree-operations"


def run(case: dict[str, Any]) -> None:
    suite = get_suite(case["cipher_suite"])
    tree = RatchetTree(suite, decode_ratchet_tree(h(case["tree_before"])))
    expect_equal("tree_hash_before", tree.tree_hash(), h(case["tree_hash_before"]))
    body = Proposal.from_bytes(h(case["proposal"])).body
    if isinstance(body, Add):
        tree.add_leaf(body.key_package.leaf_node)
    elif isinstance(body, Update):
        tree.update_leaf(case["proposal_sender"], body.leaf_node)
    elif isinstance(body, Remove):
        tree.remove_leaf(body.removed)
    else:
        raise VectorFailure(f"unexpected proposal {type(body).__name__}")
    expect_equal("tree_after", encode_ratchet_tree(tree.to_nodes()), h(case["tree_after"]))
    expect_equal("tree_hash_after", tree.tree_hash(), h(case["tree_hash_after"]))
