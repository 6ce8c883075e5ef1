"""Tree math, key schedule, PSK secret and secret tree: official vectors and
the ratchet's replay / forward-limit / atomicity rules."""

from __future__ import annotations

from typing import Any

import pytest

from harness.conformance import key_schedule, psk_secret, secret_tree, tree_math
from protocol.mls import tree_math as tm
from protocol.mls.crypto import get_suite
from protocol.mls.errors import GenerationTooFar, ReplayedMessage, UnknownMember
from protocol.mls.secret_tree import RatchetType, SecretTree
from tests.conftest import run_vector, vector_cases


@pytest.mark.parametrize("case", vector_cases("tree-math.json"))
def test_tree_math_vectors(case: Any) -> None:
    run_vector(tree_math, case)


@pytest.mark.parametrize("case", vector_cases("key-schedule.json"))
def test_key_schedule_vectors(case: Any) -> None:
    run_vector(key_schedule, case)


@pytest.mark.parametrize("case", vector_cases("psk_secret.json"))
def test_psk_secret_vectors(case: Any) -> None:
    run_vector(psk_secret, case)


@pytest.mark.parametrize("case", vector_cases("secret-tree.json"))
def test_secret_tree_vectors(case: Any) -> None:
    run_vector(secret_tree, case)


def test_direct_path_and_copath() -> None:
    # Eight leaves: leaf 2 is node 4; its path is 5, 3, 7; copath 6, 1, 11.
    assert tm.direct_path(4, 8) == [5, 3, 7]
    assert tm.copath(4, 8) == [6, 1, 11]
    assert tm.common_ancestor(0, 6) == 3
    assert tm.is_in_subtree(3, 4) and not tm.is_in_subtree(3, 8)


def _tree(n: int = 4) -> SecretTree:
    return SecretTree(get_suite(1), bytes(range(32)), n, max_forward=16, max_skipped=4)


def test_out_of_order_then_replay_rejected() -> None:
    tree = _tree()
    a = RatchetType.APPLICATION
    late = tree.peek(1, a, 3)
    tree.consume(1, a, 5)  # generations 0..4 are skipped and kept (up to 4)
    assert tree.consume(1, a, 3) == late
    with pytest.raises(ReplayedMessage):
        tree.peek(1, a, 3)
    with pytest.raises(ReplayedMessage):
        tree.consume(1, a, 5)
    # only the newest max_skipped=4 skipped keys survive: generation 0 is gone
    with pytest.raises(ReplayedMessage):
        tree.peek(1, a, 0)
    tree.consume(1, a, 1)


def test_generation_too_far_rejected_without_state_change() -> None:
    tree = _tree()
    with pytest.raises(GenerationTooFar):
        tree.consume(2, RatchetType.HANDSHAKE, 17)
    assert tree.next_generation(2, RatchetType.HANDSHAKE) == 0
    tree.consume(2, RatchetType.HANDSHAKE, 16)


def test_peek_changes_nothing_and_unknown_leaf() -> None:
    tree = _tree()
    before = (dict(tree._nodes), dict(tree._ratchets))
    tree.peek(3, RatchetType.APPLICATION, 7)
    assert (tree._nodes, tree._ratchets) == before
    with pytest.raises(UnknownMember):
        tree.peek(4, RatchetType.APPLICATION, 0)


def test_deletion_schedule_drops_parent_secrets() -> None:
    tree = _tree(8)
    tree.consume(0, RatchetType.APPLICATION, 0)
    # root, then 3, then 1 were split; copath secrets of leaf 0 remain
    assert set(tree._nodes) == {2, 5, 11}


def test_consume_refuses_exactly_what_peek_refuses_and_changes_nothing_then() -> None:
    """consume checks its limits without deriving (it no longer runs peek
    first): over random in-order, late, replayed and far-ahead generations
    it must refuse exactly when peek does, with the same error and no state
    change, and otherwise return peek's key and nonce."""
    import random

    from protocol.codec import Writer

    def encoded(tree: SecretTree) -> bytes:
        w = Writer()
        tree.encode(w)
        return w.getvalue()

    rnd = random.Random(9)
    for _ in range(20):
        tree = _tree(8)
        for _ in range(60):
            leaf = rnd.randrange(9)  # leaf 8 is outside the tree
            kind = rnd.choice(list(RatchetType))
            generation = max(0, tree.next_generation(leaf % 8, kind) + rnd.randint(-6, 18))
            try:
                expected: object = tree.peek(leaf, kind, generation)
            except (ReplayedMessage, GenerationTooFar, UnknownMember) as exc:
                expected = type(exc)
            before = encoded(tree)
            try:
                got: object = tree.consume(leaf, kind, generation)
            except (ReplayedMessage, GenerationTooFar, UnknownMember) as exc:
                got = type(exc)
                assert encoded(tree) == before
            assert got == expected
