"""Message framing: signing content, PublicMessage and PrivateMessage
protection (RFC 9420 §6).

Theory of operation
-------------------
``AuthenticatedContent`` is what the group logic handles; these functions wrap
it for the wire and unwrap it again.

* Signing (§6.1): ``SignWithLabel(., "FramedContentTBS", FramedContentTBS)``;
  the GroupContext is part of the signed bytes for member senders.
* PublicMessage (§6.2): a member sender adds ``membership_tag =
  MAC(membership_key, AuthenticatedContentTBM)``.  Application data MUST NOT be
  sent as a PublicMessage.
* PrivateMessage (§6.3): content and auth are encrypted under the sender's
  ratchet key for the content type, with the nonce XORed with a fresh
  reuse guard; the sender's leaf index and generation are encrypted under a key
  derived from the sender-data secret and a ciphertext sample.

Unprotecting a PrivateMessage is two-phase to keep group processing atomic: it
returns a :class:`DecryptedContent` whose :meth:`~DecryptedContent.consume`
must be called only once the caller has verified the signature (which needs
the sender's leaf from the ratchet tree).  Until then no ratchet state moves.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import DecodeError
from protocol.mls.crypto import CipherSuite, Rng
from protocol.mls.errors import InvalidMessage, WrongEpoch
from protocol.mls.messages import (
    AuthenticatedContent,
    ContentType,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    PrivateContentAAD,
    PrivateMessage,
    PrivateMessageContent,
    PublicMessage,
    Sender,
    SenderData,
    SenderDataAAD,
    SenderType,
    WireFormat,
    authenticated_content_tbm,
    framed_content_tbs,
)
from protocol.mls.secret_tree import RatchetType, SecretTree, sender_data_key_nonce

_TBS_LABEL = "FramedContentTBS"


def _context_for(content: FramedContent, context: GroupContext) -> GroupContext | None:
    needs = content.sender.sender_type in (SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT)
    return context if needs else None


def content_signature(
    suite: CipherSuite,
    wire_format: WireFormat,
    content: FramedContent,
    context: GroupContext,
    signature_priv: bytes,
) -> bytes:
    """The sender's signature over FramedContentTBS (§6.1)."""
    tbs = framed_content_tbs(wire_format, content, _context_for(content, context))
    return suite.sign_with_label(signature_priv, _TBS_LABEL, tbs)


def sign_content(
    suite: CipherSuite,
    wire_format: WireFormat,
    content: FramedContent,
    context: GroupContext,
    signature_priv: bytes,
    confirmation_tag: bytes | None = None,
) -> AuthenticatedContent:
    """Sign ``content`` (§6.1).  A commit needs its ``confirmation_tag``, which
    depends on the signature (§8.2): commit builders call
    :func:`content_signature` first and assemble the content themselves."""
    signature = content_signature(suite, wire_format, content, context, signature_priv)
    return AuthenticatedContent(
        wire_format, content, FramedContentAuthData(signature, confirmation_tag)
    )


def verify_content_signature(
    suite: CipherSuite,
    auth: AuthenticatedContent,
    context: GroupContext,
    signature_pub: bytes,
) -> None:
    """Raise ``CryptoError`` unless the sender's signature verifies (§6.1)."""
    tbs = framed_content_tbs(auth.wire_format, auth.content, _context_for(auth.content, context))
    suite.verify_with_label(signature_pub, _TBS_LABEL, tbs, auth.auth.signature)


def proposal_ref(suite: CipherSuite, auth: AuthenticatedContent) -> bytes:
    """``ProposalRef``: RefHash over the AuthenticatedContent (§5.2)."""
    return suite.ref_hash("MLS 1.0 Proposal Reference", auth.to_bytes())


def _tbs_for_tag(auth: AuthenticatedContent, context: GroupContext) -> bytes:
    tbs = framed_content_tbs(auth.wire_format, auth.content, _context_for(auth.content, context))
    return authenticated_content_tbm(tbs, auth.auth)


def protect_public(
    suite: CipherSuite,
    auth: AuthenticatedContent,
    context: GroupContext,
    membership_key: bytes | None,
) -> PublicMessage:
    """Wrap signed content as a PublicMessage (§6.2)."""
    if auth.content.content_type == ContentType.APPLICATION:
        raise InvalidMessage("application data must not be sent as a PublicMessage")
    if auth.wire_format != WireFormat.MLS_PUBLIC_MESSAGE:
        raise InvalidMessage("content was signed for another wire format")
    tag = None
    if auth.content.sender.sender_type == SenderType.MEMBER:
        if membership_key is None:
            raise InvalidMessage("a member's PublicMessage needs the membership key")
        tag = suite.mac(membership_key, _tbs_for_tag(auth, context))
    return PublicMessage(auth.content, auth.auth, tag)


def unprotect_public(
    suite: CipherSuite,
    message: PublicMessage,
    context: GroupContext,
    membership_key: bytes | None,
) -> AuthenticatedContent:
    """Check a PublicMessage's epoch and membership tag (§6.2).

    The signature is left to the caller, who knows the sender's key.
    """
    content = message.content
    if content.content_type == ContentType.APPLICATION:
        raise InvalidMessage("application data in a PublicMessage")
    if content.group_id != context.group_id:
        raise InvalidMessage("PublicMessage for another group")
    if content.epoch != context.epoch:
        raise WrongEpoch(f"PublicMessage for epoch {content.epoch}, group is at {context.epoch}")
    auth = AuthenticatedContent(WireFormat.MLS_PUBLIC_MESSAGE, content, message.auth)
    if content.sender.sender_type == SenderType.MEMBER:
        if membership_key is None or message.membership_tag is None:
            raise InvalidMessage("member PublicMessage without a membership tag")
        suite.verify_mac(membership_key, _tbs_for_tag(auth, context), message.membership_tag)
    return auth


def _ratchet_type(content_type: ContentType) -> RatchetType:
    if content_type == ContentType.APPLICATION:
        return RatchetType.APPLICATION
    return RatchetType.HANDSHAKE


def _guarded(nonce: bytes, reuse_guard: bytes) -> bytes:
    """XOR the reuse guard into the first four nonce bytes (§6.3.1)."""
    head = bytes(a ^ b for a, b in zip(nonce[:4], reuse_guard, strict=True))
    return head + nonce[4:]


def protect_private(
    suite: CipherSuite,
    auth: AuthenticatedContent,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    rng: Rng,
    padding: int = 0,
) -> PrivateMessage:
    """Encrypt signed member content as a PrivateMessage (§6.3).

    Consumes the next generation of the sender's ratchet.  ``padding`` zero
    bytes are appended inside the ciphertext.
    """
    content = auth.content
    if auth.wire_format != WireFormat.MLS_PRIVATE_MESSAGE:
        raise InvalidMessage("content was signed for another wire format")
    if content.sender.sender_type != SenderType.MEMBER or content.sender.leaf_index is None:
        raise InvalidMessage("only members send PrivateMessages")
    leaf = content.sender.leaf_index
    kind = _ratchet_type(content.content_type)
    generation = secret_tree.next_generation(leaf, kind)
    key, nonce = secret_tree.consume(leaf, kind, generation)
    reuse_guard = rng(4)
    plaintext = PrivateMessageContent(content.content, auth.auth, bytes(padding)).to_bytes()
    aad = PrivateContentAAD(
        content.group_id, content.epoch, content.content_type, content.authenticated_data
    ).to_bytes()
    ciphertext = suite.aead_seal(key, _guarded(nonce, reuse_guard), aad, plaintext)

    sd_key, sd_nonce = sender_data_key_nonce(suite, sender_data_secret, ciphertext)
    sd_aad = SenderDataAAD(content.group_id, content.epoch, content.content_type).to_bytes()
    sender_data = SenderData(leaf, generation, reuse_guard).to_bytes()
    encrypted_sender_data = suite.aead_seal(sd_key, sd_nonce, sd_aad, sender_data)
    return PrivateMessage(
        content.group_id,
        content.epoch,
        content.content_type,
        content.authenticated_data,
        encrypted_sender_data,
        ciphertext,
    )


@dataclass(frozen=True, slots=True)
class DecryptedContent:
    """A decrypted, not yet authenticated PrivateMessage.

    ``content`` is trustworthy only after the caller has verified its
    signature with the key of ``content.content.sender.leaf_index``; then
    :meth:`consume` moves the ratchet past the key that decrypted it.
    """

    content: AuthenticatedContent
    generation: int
    _tree: SecretTree

    def consume(self) -> None:
        leaf = self.content.content.sender.leaf_index
        assert leaf is not None
        self._tree.consume(leaf, _ratchet_type(self.content.content.content_type), self.generation)


def unprotect_private(
    suite: CipherSuite,
    message: PrivateMessage,
    context: GroupContext,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
) -> DecryptedContent:
    """Decrypt a PrivateMessage without changing any state (§6.3).

    Raises ``WrongEpoch``, ``CryptoError`` (AEAD failure), ``ReplayedMessage``,
    ``GenerationTooFar``, ``UnknownMember`` or ``InvalidMessage``.
    """
    if message.group_id != context.group_id:
        raise InvalidMessage("PrivateMessage for another group")
    if message.epoch != context.epoch:
        raise WrongEpoch(f"PrivateMessage for epoch {message.epoch}, group is at {context.epoch}")
    sd_key, sd_nonce = sender_data_key_nonce(suite, sender_data_secret, message.ciphertext)
    sd_aad = SenderDataAAD(message.group_id, message.epoch, message.content_type).to_bytes()
    raw_sender = suite.aead_open(sd_key, sd_nonce, sd_aad, message.encrypted_sender_data)
    try:
        sender_data = SenderData.from_bytes(raw_sender)
    except DecodeError as exc:
        raise InvalidMessage(f"malformed SenderData: {exc}") from exc

    kind = _ratchet_type(message.content_type)
    key, nonce = secret_tree.peek(sender_data.leaf_index, kind, sender_data.generation)
    aad = PrivateContentAAD(
        message.group_id, message.epoch, message.content_type, message.authenticated_data
    ).to_bytes()
    plaintext = suite.aead_open(
        key, _guarded(nonce, sender_data.reuse_guard), aad, message.ciphertext
    )
    try:
        inner = PrivateMessageContent.from_bytes(plaintext, message.content_type)
    except DecodeError as exc:
        raise InvalidMessage(f"malformed PrivateMessageContent: {exc}") from exc

    framed = FramedContent(
        message.group_id,
        message.epoch,
        Sender.member(sender_data.leaf_index),
        message.authenticated_data,
        message.content_type,
        inner.content,
    )
    auth = AuthenticatedContent(WireFormat.MLS_PRIVATE_MESSAGE, framed, inner.auth)
    return DecryptedContent(auth, sender_data.generation, secret_tree)


__all__ = [
    "DecryptedContent",
    "proposal_ref",
    "protect_private",
    "protect_public",
    "sign_content",
    "unprotect_private",
    "unprotect_public",
    "verify_content_signature",
    "content_signature",
]
