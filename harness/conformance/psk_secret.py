"""PSK-secret vectors (FORMAT.md "Pre-Shared Keys")."""

from __future__ import annotations

from typing import Any

from harness.conformance import expect_equal, h
from protocol.mls.crypto import get_suite
from protocol.mls.key_schedule import psk_secret
from protocol.mls.messages import PreSharedKeyID, PSKType

KIND = "psk-secret"


def run(case: dict[str, Any]) -> None:
    suite = get_suite(case["cipher_suite"])
    psks = [
        (
            PreSharedKeyID(
                psktype=PSKType.EXTERNAL, psk_id=h(p["psk_id"]), psk_nonce=h(p["psk_nonce"])
            ).to_bytes(),
            h(p["psk"]),
        )
        for p in case["psks"]
    ]
    expect_equal("psk_secret", psk_secret(suite, psks), h(case["psk_secret"]))
