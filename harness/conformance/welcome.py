"""Welcome vectors (FORMAT.md "Welcome")."""

from __future__ import annotations

from typing import Any

from harness.conformance import VectorFailure, h
from protocol.mls.crypto import get_suite
from protocol.mls.messages import MLSMessage
from protocol.mls.welcome import (
    decrypt_group_info,
    decrypt_group_secrets,
    epoch_from_group_info,
    find_secrets,
    verify_group_info_signature,
)

KIND = "welcome"


def run(case: dict[str, Any]) -> None:
    suite = get_suite(case["cipher_suite"])
    key_package = MLSMessage.from_bytes(h(case["key_package"])).key_package
    welcome = MLSMessage.from_bytes(h(case["welcome"])).welcome
    if key_package is None or welcome is None:
        raise VectorFailure("key_package / welcome are not of the expected wire format")
    entry = find_secrets(suite, welcome, key_package)
    secrets = decrypt_group_secrets(suite, welcome, entry, h(case["init_priv"]))
    if secrets.psks:
        raise VectorFailure("welcome vector unexpectedly names PSKs")
    info = decrypt_group_info(suite, welcome, secrets.joiner_secret, None)
    verify_group_info_signature(suite, info, h(case["signer_pub"]))
    epoch_from_group_info(suite, info, secrets.joiner_secret, None)
