"""Passive-client scenarios (FORMAT.md "Passive Client Scenarios"): join from
a Welcome, then follow every commit, comparing epoch authenticators.  Covers
passive-client-welcome, -handling-commit and -random alike."""

from __future__ import annotations

from typing import Any

from harness.conformance import VectorFailure, expect_equal, h
from protocol.mls.crypto import get_suite
from protocol.mls.group import Group, PskStore
from protocol.mls.key_package import KeyPackageBundle
from protocol.mls.messages import MLSMessage

KIND = "passive-client"


def run(case: dict[str, Any]) -> None:
    suite = get_suite(case["cipher_suite"])
    key_package = MLSMessage.from_bytes(h(case["key_package"])).key_package
    if key_package is None:
        raise VectorFailure("key_package is not an MLSMessage(KeyPackage)")
    leaf = key_package.leaf_node
    sig_priv, enc_priv, init_priv = (
        h(case["signature_priv"]),
        h(case["encryption_priv"]),
        h(case["init_priv"]),
    )
    expect_equal("signature key", suite.signature_public_key(sig_priv), leaf.signature_key)
    expect_equal("encryption key", suite.hpke_public_key(enc_priv), leaf.encryption_key)
    expect_equal("init key", suite.hpke_public_key(init_priv), key_package.init_key)

    psks = PskStore(external={h(p["psk_id"]): h(p["psk"]) for p in case["external_psks"]})
    tree = h(case["ratchet_tree"]) if case["ratchet_tree"] else None
    group = Group.join(
        h(case["welcome"]),
        KeyPackageBundle(key_package, init_priv, enc_priv, sig_priv),
        ratchet_tree=tree,
        psks=psks,
    )
    expect_equal(
        "initial epoch_authenticator",
        group.epoch_authenticator,
        h(case["initial_epoch_authenticator"]),
    )
    for n, epoch in enumerate(case["epochs"]):
        for proposal in epoch["proposals"]:
            group.process(h(proposal))
        group.process(h(epoch["commit"]))
        expect_equal(
            f"epoch {n} epoch_authenticator",
            group.epoch_authenticator,
            h(epoch["epoch_authenticator"]),
        )
