"""Welcome decryption (RFC 9420 §12.4.3.1).

These are the cryptographic steps of joining: find our entry, open the
GroupSecrets with the KeyPackage's init key, derive the welcome key, open the
GroupInfo, check its signature and confirmation tag.  Building the group state
(tree validation, the joiner's own leaf, path secrets) belongs to the group
module, which calls these in order.
"""

from __future__ import annotations

from protocol.errors import DecodeError
from protocol.mls.crypto import CipherSuite, get_suite
from protocol.mls.errors import InvalidMessage
from protocol.mls.key_schedule import (
    EpochSecrets,
    epoch_from_joiner,
    mls_exporter,
    welcome_key_nonce,
    welcome_secret,
)
from protocol.mls.messages import (
    EncryptedGroupSecrets,
    GroupInfo,
    GroupSecrets,
    MLSMessage,
    Welcome,
)
from protocol.mls.tree_structs import KeyPackage

KEY_PACKAGE_REF_LABEL = "MLS 1.0 KeyPackage Reference"


def key_package_ref(suite: CipherSuite, key_package: KeyPackage) -> bytes:
    """``MakeKeyPackageRef`` (RFC 9420 §5.2) over the encoded KeyPackage."""
    return suite.ref_hash(KEY_PACKAGE_REF_LABEL, key_package.to_bytes())


def find_secrets(
    suite: CipherSuite, welcome: Welcome, key_package: KeyPackage
) -> EncryptedGroupSecrets:
    """Our entry in ``welcome.secrets``, checking the suites agree."""
    if welcome.cipher_suite != key_package.cipher_suite:
        raise InvalidMessage(
            f"Welcome uses suite {welcome.cipher_suite}, KeyPackage {key_package.cipher_suite}"
        )
    ref = key_package_ref(suite, key_package)
    for entry in welcome.secrets:
        if entry.new_member == ref:
            return entry
    raise InvalidMessage("the Welcome has no entry for this KeyPackage")


def split_welcome(welcome: bytes) -> list[tuple[bytes, bytes]]:
    """One MLSMessage(Welcome) per new member: ``(KeyPackageRef, welcome)``.

    Each keeps the shared ``encrypted_group_info`` and only that member's
    ``EncryptedGroupSecrets`` entry, which is still a valid Welcome
    (RFC 9420 §12.4.3.1: a joiner looks up its own entry by KeyPackageRef).
    Posting these instead of the whole Welcome to each joiner's inbox saves
    the other joiners' entries (1,120+ bytes each with X-Wing, SPEC §4.1.1)
    and hides from each joiner who else was added in the same commit.
    """
    message = MLSMessage.from_bytes(welcome)
    body = message.welcome
    if body is None:
        raise InvalidMessage("not an MLSMessage(Welcome)")
    return [
        (
            entry.new_member,
            MLSMessage.of(
                Welcome(body.cipher_suite, (entry,), body.encrypted_group_info)
            ).to_bytes(),
        )
        for entry in body.secrets
    ]


def decrypt_group_secrets(
    suite: CipherSuite, welcome: Welcome, entry: EncryptedGroupSecrets, init_priv: bytes
) -> GroupSecrets:
    """``DecryptWithLabel(init_key_priv, "Welcome", encrypted_group_info, ...)``."""
    ct = entry.encrypted_group_secrets
    plaintext = suite.decrypt_with_label(
        init_priv, "Welcome", welcome.encrypted_group_info, ct.kem_output, ct.ciphertext
    )
    try:
        return GroupSecrets.from_bytes(plaintext)
    except DecodeError as exc:
        raise InvalidMessage(f"malformed GroupSecrets: {exc}") from exc


def decrypt_group_info(
    suite: CipherSuite, welcome: Welcome, joiner_secret: bytes, psk_secret: bytes | None
) -> GroupInfo:
    """Open ``encrypted_group_info`` with the welcome key and nonce."""
    key, nonce = welcome_key_nonce(suite, welcome_secret(suite, joiner_secret, psk_secret))
    plaintext = suite.aead_open(key, nonce, b"", welcome.encrypted_group_info)
    try:
        return GroupInfo.from_bytes(plaintext)
    except DecodeError as exc:
        raise InvalidMessage(f"malformed GroupInfo: {exc}") from exc


def verify_group_info_signature(suite: CipherSuite, info: GroupInfo, signer_pub: bytes) -> None:
    suite.verify_with_label(signer_pub, "GroupInfoTBS", info.tbs_bytes(), info.signature)


def epoch_from_group_info(
    suite: CipherSuite, info: GroupInfo, joiner_secret: bytes, psk_secret: bytes | None
) -> EpochSecrets:
    """The epoch's secrets, after checking the GroupInfo's confirmation tag."""
    secrets = epoch_from_joiner(suite, joiner_secret, psk_secret, info.group_context.to_bytes())
    suite.verify_mac(
        secrets.confirmation_key,
        info.group_context.confirmed_transcript_hash,
        info.confirmation_tag,
    )
    return secrets


def welcome_export(
    welcome: bytes, key_package: KeyPackage, init_priv: bytes, label: str, length: int
) -> bytes:
    """``MLS-Exporter(label, "", length)`` of the epoch a Welcome joins, before the tree.

    For a Welcome built without the ratchet tree (SPEC §4.1.1): the joiner
    derives the key that the tree, posted once for all joiners, is encrypted
    under, then joins with ``Group.join(welcome, bundle, ratchet_tree=...)``,
    which authenticates everything (tree hash against the GroupContext, the
    GroupInfo signature).  The confirmation tag is checked here already, so a
    Welcome whose GroupInfo was not made with its joiner secret is refused.
    Welcomes that need PSKs are refused (join them with the tree in hand).
    """
    message = MLSMessage.from_bytes(welcome)
    body = message.welcome
    if body is None:
        raise InvalidMessage("not an MLSMessage(Welcome)")
    suite = get_suite(body.cipher_suite)
    entry = find_secrets(suite, body, key_package)
    secrets = decrypt_group_secrets(suite, body, entry, init_priv)
    if secrets.psks:
        raise InvalidMessage("a Welcome with PSKs needs the tree and the PSKs to join")
    info = decrypt_group_info(suite, body, secrets.joiner_secret, None)
    epoch = epoch_from_group_info(suite, info, secrets.joiner_secret, None)
    return mls_exporter(suite, epoch.exporter_secret, label, b"", length)
