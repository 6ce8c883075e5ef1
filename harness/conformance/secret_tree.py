"""Secret-tree vectors (FORMAT.md "Secret Tree")."""

from __future__ import annotations

from typing import Any

from harness.conformance import expect_equal, h
from protocol.mls.crypto import get_suite
from protocol.mls.secret_tree import RatchetType, SecretTree, sender_data_key_nonce

KIND = "secret-tree"


def run(case: dict[str, Any]) -> None:
    suite = get_suite(case["cipher_suite"])
    sd = case["sender_data"]
    key, nonce = sender_data_key_nonce(suite, h(sd["sender_data_secret"]), h(sd["ciphertext"]))
    expect_equal("sender_data key", key, h(sd["key"]))
    expect_equal("sender_data nonce", nonce, h(sd["nonce"]))

    leaves = case["leaves"]
    tree = SecretTree(suite, h(case["encryption_secret"]), len(leaves))
    for leaf, entries in enumerate(leaves):
        for entry in entries:
            g = entry["generation"]
            for kind, name in (
                (RatchetType.HANDSHAKE, "handshake"),
                (RatchetType.APPLICATION, "application"),
            ):
                peeked = tree.peek(leaf, kind, g)
                k, n = tree.consume(leaf, kind, g)
                expect_equal(f"leaf {leaf} gen {g} {name} peek", peeked, (k, n))
                expect_equal(f"leaf {leaf} gen {g} {name}_key", k, h(entry[f"{name}_key"]))
                expect_equal(f"leaf {leaf} gen {g} {name}_nonce", n, h(entry[f"{name}_nonce"]))
