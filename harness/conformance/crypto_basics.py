"""Crypto Basics vectors (FORMAT.md "Crypto Basics"): the labelled primitives of RFC 9420.

Besides checking the given outputs, a case re-signs and re-encrypts with fresh
randomness and checks that the results verify and decrypt; that randomness
comes from a SHA-256 counter stream seeded by the case, so runs repeat exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from harness.conformance import VectorFailure, expect_equal, h
from protocol.errors import CryptoError
from protocol.mls.crypto import CipherSuite, Rng, get_suite

KIND = "crypto-basics"
FIELDS = frozenset({"ref_hash", "expand_with_label", "derive_secret", "sign_with_label"})


def seeded_rng(seed: bytes) -> Rng:
    """A deterministic byte stream: SHA-256(seed || counter) blocks."""
    counter = 0
    buffer = b""

    def rng(n: int) -> bytes:
        nonlocal counter, buffer
        while len(buffer) < n:
            buffer += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        out, buffer = buffer[:n], buffer[n:]
        return out

    return rng


def run(case: dict[str, Any]) -> None:
    suite = get_suite(case["cipher_suite"])
    rng = seeded_rng(b"crypto-basics" + suite.suite_id.to_bytes(2, "big"))

    v = case["ref_hash"]
    expect_equal("ref_hash", suite.ref_hash(v["label"], h(v["value"])), h(v["out"]))

    v = case["expand_with_label"]
    got = suite.expand_with_label(h(v["secret"]), v["label"], h(v["context"]), v["length"])
    expect_equal("expand_with_label", got, h(v["out"]))

    v = case["derive_secret"]
    expect_equal("derive_secret", suite.derive_secret(h(v["secret"]), v["label"]), h(v["out"]))

    v = case["derive_tree_secret"]
    got = suite.derive_tree_secret(h(v["secret"]), v["label"], v["generation"], v["length"])
    expect_equal("derive_tree_secret", got, h(v["out"]))

    v = case["sign_with_label"]
    priv, pub, label, content = h(v["priv"]), h(v["pub"]), v["label"], h(v["content"])
    expect_equal("sign_with_label: public key of priv", suite.signature_public_key(priv), pub)
    _verifies("sign_with_label: given signature", suite, pub, label, content, h(v["signature"]))
    resigned = suite.sign_with_label(priv, label, content)
    _verifies("sign_with_label: fresh signature", suite, pub, label, content, resigned)

    v = case["encrypt_with_label"]
    priv, pub, label, context = h(v["priv"]), h(v["pub"]), v["label"], h(v["context"])
    plaintext = h(v["plaintext"])
    expect_equal("encrypt_with_label: public key of priv", suite.hpke_public_key(priv), pub)
    got = _decrypts(
        "encrypt_with_label: given ciphertext",
        lambda: suite.decrypt_with_label(
            priv, label, context, h(v["kem_output"]), h(v["ciphertext"])
        ),
    )
    expect_equal("encrypt_with_label: given ciphertext", got, plaintext)
    kem_output, ciphertext = suite.encrypt_with_label(pub, label, context, plaintext, rng)
    got = _decrypts(
        "encrypt_with_label: fresh ciphertext",
        lambda: suite.decrypt_with_label(priv, label, context, kem_output, ciphertext),
    )
    expect_equal("encrypt_with_label: fresh ciphertext", got, plaintext)


def _verifies(
    what: str, suite: CipherSuite, pub: bytes, label: str, content: bytes, sig: bytes
) -> None:
    try:
        suite.verify_with_label(pub, label, content, sig)
    except CryptoError as exc:
        raise VectorFailure(f"{what} does not verify: {exc}") from exc


def _decrypts(what: str, decrypt: Callable[[], bytes]) -> bytes:
    try:
        return decrypt()
    except CryptoError as exc:
        raise VectorFailure(f"{what} does not decrypt: {exc}") from exc
