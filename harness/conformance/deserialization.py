"""Vector deserialization vectors (FORMAT.md "Vector Deserialization").

The varint length header must decode (strictly, spanning the field) to
``length`` and re-encode to the same bytes.
"""

from __future__ import annotations

from typing import Any

from harness.conformance import VectorFailure, expect_equal, h
from protocol.codec import Reader, decode_exact, encode_varint
from protocol.errors import DecodeError

KIND = "deserialization"
FIELDS = frozenset({"vlbytes_header", "length"})


def run(case: dict[str, Any]) -> None:
    header = h(case["vlbytes_header"])
    try:
        length = decode_exact(header, Reader.pull_varint)
    except DecodeError as exc:
        raise VectorFailure(f"vlbytes_header does not decode: {exc}") from exc
    expect_equal("length", length, case["length"])
    expect_equal("re-encoded header", encode_varint(length), header)
