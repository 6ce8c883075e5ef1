"""Key-schedule vectors (FORMAT.md "Key Schedule")."""

from __future__ import annotations

from typing import Any

from harness.conformance import expect_equal, h
from protocol.mls.crypto import get_suite
from protocol.mls.key_schedule import derive_epoch, mls_exporter
from protocol.mls.messages import GroupContext
from protocol.mls.tree_structs import ProtocolVersion

KIND = "key-schedule"

_OUTPUTS = (
    "joiner_secret",
    "welcome_secret",
    "init_secret",
    "sender_data_secret",
    "encryption_secret",
    "exporter_secret",
    "epoch_authenticator",
    "external_secret",
    "confirmation_key",
    "membership_key",
    "resumption_psk",
)


def run(case: dict[str, Any]) -> None:
    suite = get_suite(case["cipher_suite"])
    init_secret = h(case["initial_init_secret"])
    for n, epoch in enumerate(case["epochs"]):
        context = GroupContext(
            version=ProtocolVersion.MLS10,
            cipher_suite=case["cipher_suite"],
            group_id=h(case["group_id"]),
            epoch=n,
            tree_hash=h(epoch["tree_hash"]),
            confirmed_transcript_hash=h(epoch["confirmed_transcript_hash"]),
            extensions=(),
        ).to_bytes()
        expect_equal(f"epoch {n} group_context", context, h(epoch["group_context"]))
        secrets = derive_epoch(
            suite,
            init_secret,
            h(epoch["commit_secret"]),
            context,
            h(epoch["psk_secret"]) if epoch.get("psk_secret") else None,
        )
        for name in _OUTPUTS:
            expect_equal(f"epoch {n} {name}", getattr(secrets, name), h(epoch[name]))
        _, external_pub = suite.derive_key_pair(secrets.external_secret)
        expect_equal(f"epoch {n} external_pub", external_pub, h(epoch["external_pub"]))
        exp = epoch["exporter"]
        exported = mls_exporter(
            suite, secrets.exporter_secret, exp["label"], h(exp["context"]), exp["length"]
        )
        expect_equal(f"epoch {n} exporter.secret", exported, h(exp["secret"]))
        init_secret = secrets.init_secret
