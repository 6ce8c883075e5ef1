"""Transcript-hash vectors (FORMAT.md "Transcript Hashes")."""

from __future__ import annotations

from typing import Any

from harness.conformance import VectorFailure, expect_equal, h
from protocol.mls.crypto import get_suite
from protocol.mls.key_schedule import confirmed_transcript_hash, interim_transcript_hash
from protocol.mls.messages import (
    AuthenticatedContent,
    ContentType,
    confirmed_transcript_hash_input,
)

KIND = "transcript-hashes"


def run(case: dict[str, Any]) -> None:
    suite = get_suite(case["cipher_suite"])
    auth = AuthenticatedContent.from_bytes(h(case["authenticated_content"]))
    if auth.content.content_type != ContentType.COMMIT or auth.auth.confirmation_tag is None:
        raise VectorFailure("authenticated_content does not hold a Commit")
    confirmed = confirmed_transcript_hash(
        suite,
        h(case["interim_transcript_hash_before"]),
        confirmed_transcript_hash_input(auth.wire_format, auth.content, auth.auth.signature),
    )
    expect_equal(
        "confirmed_transcript_hash_after", confirmed, h(case["confirmed_transcript_hash_after"])
    )
    suite.verify_mac(h(case["confirmation_key"]), confirmed, auth.auth.confirmation_tag)
    expect_equal(
        "interim_transcript_hash_after",
        interim_transcript_hash(suite, confirmed, auth.auth.confirmation_tag),
        h(case["interim_transcript_hash_after"]),
    )
