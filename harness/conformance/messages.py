"""Messages vectors (FORMAT.md "Messages"): every field decodes and re-encodes.

Each field is decoded with its struct from :mod:`protocol.mls.messages` /
:mod:`protocol.mls.tree_structs` (strictly: no trailing bytes) and must
re-encode to exactly the bytes of the vector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.conformance import VectorFailure, expect_equal, h
from protocol.errors import DecodeError
from protocol.mls.messages import (
    Add,
    Commit,
    ExternalInit,
    GroupContextExtensions,
    GroupSecrets,
    MLSMessage,
    PreSharedKey,
    ReInit,
    Remove,
    Update,
    WireFormat,
)
from protocol.mls.tree_structs import Struct, decode_ratchet_tree, encode_ratchet_tree

KIND = "messages"
FIELDS = frozenset({"mls_welcome", "mls_group_info", "mls_key_package", "private_message"})


def _roundtrip_struct(cls: type[Struct]) -> Callable[[bytes], bytes]:
    return lambda data: cls.from_bytes(data).to_bytes()


def _roundtrip_message(wire_format: WireFormat) -> Callable[[bytes], bytes]:
    def run(data: bytes) -> bytes:
        msg = MLSMessage.from_bytes(data)
        expect_equal("wire_format", msg.wire_format, wire_format)
        return msg.to_bytes()

    return run


def _roundtrip_tree(data: bytes) -> bytes:
    return encode_ratchet_tree(decode_ratchet_tree(data))


# field -> bytes-to-reencoded-bytes
ROUNDTRIPS: dict[str, Callable[[bytes], bytes]] = {
    "mls_welcome": _roundtrip_message(WireFormat.MLS_WELCOME),
    "mls_group_info": _roundtrip_message(WireFormat.MLS_GROUP_INFO),
    "mls_key_package": _roundtrip_message(WireFormat.MLS_KEY_PACKAGE),
    "ratchet_tree": _roundtrip_tree,
    "group_secrets": _roundtrip_struct(GroupSecrets),
    "add_proposal": _roundtrip_struct(Add),
    "update_proposal": _roundtrip_struct(Update),
    "remove_proposal": _roundtrip_struct(Remove),
    "pre_shared_key_proposal": _roundtrip_struct(PreSharedKey),
    "re_init_proposal": _roundtrip_struct(ReInit),
    "external_init_proposal": _roundtrip_struct(ExternalInit),
    "group_context_extensions_proposal": _roundtrip_struct(GroupContextExtensions),
    "commit": _roundtrip_struct(Commit),
    "public_message_application": _roundtrip_message(WireFormat.MLS_PUBLIC_MESSAGE),
    "public_message_proposal": _roundtrip_message(WireFormat.MLS_PUBLIC_MESSAGE),
    "public_message_commit": _roundtrip_message(WireFormat.MLS_PUBLIC_MESSAGE),
    "private_message": _roundtrip_message(WireFormat.MLS_PRIVATE_MESSAGE),
}


def run(case: dict[str, Any]) -> None:
    for field, roundtrip in ROUNDTRIPS.items():
        data = h(case[field])
        try:
            again = roundtrip(data)
        except DecodeError as exc:
            raise VectorFailure(f"{field}: does not decode: {exc}") from exc
        expect_equal(field, again, data)
