"""Ratchet tree and TreeKEM: official vectors plus hostile-input checks."""

from __future__ import annotations

from typing import Any

import pytest

from harness.conformance import tree_operations, tree_validation, treekem
from protocol.errors import CryptoError
from protocol.mls.errors import InvalidMessage
from tests.conftest import run_vector, vector_cases


@pytest.mark.parametrize("case", vector_cases("tree-validation.json"))
def test_tree_validation_vectors(case: Any) -> None:
    run_vector(tree_validation, case)


@pytest.mark.parametrize("case", vector_cases("tree-operations.json"))
def test_tree_operations_vectors(case: Any) -> None:
    run_vector(tree_operations, case)


@pytest.mark.parametrize("case", vector_cases("treekem.json"))
def test_treekem_vectors(case: Any) -> None:
    run_vector(treekem, case)


@pytest.mark.parametrize("case", vector_cases("tree-validation.json")[:14])
def test_tampered_tree_fails_validation(case: Any) -> None:
    """Flip a parent node's key or a leaf's signature: validation must fail."""
    import dataclasses

    from harness.conformance import h
    from protocol.mls.crypto import get_suite
    from protocol.mls.ratchet_tree import RatchetTree
    from protocol.mls.tree_structs import Node, decode_ratchet_tree

    if not isinstance(case, dict):
        run_vector(tree_validation, case)
        return
    suite = get_suite(case["cipher_suite"])
    nodes = decode_ratchet_tree(h(case["tree"]))
    parents = [i for i, n in enumerate(nodes) if n is not None and n.parent_node is not None]
    if parents:
        p = parents[0]
        node = nodes[p]
        assert node is not None and node.parent_node is not None
        key = node.parent_node.encryption_key
        bad = dataclasses.replace(node.parent_node, encryption_key=key[:-1] + bytes([key[-1] ^ 1]))
        tampered = list(nodes)
        tampered[p] = Node.parent(bad)
        with pytest.raises(InvalidMessage):
            RatchetTree(suite, tampered).verify_parent_hashes()
    leaf = nodes[0]
    assert leaf is not None and leaf.leaf_node is not None
    sig = leaf.leaf_node.signature
    forged = dataclasses.replace(leaf.leaf_node, signature=sig[:-1] + bytes([sig[-1] ^ 1]))
    tampered = list(nodes)
    tampered[0] = Node.leaf(forged)
    with pytest.raises(CryptoError):
        RatchetTree(suite, tampered).verify_leaf_signature(0, h(case["group_id"]))
