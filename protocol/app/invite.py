"""Invite links and safety numbers.

Provides :class:`InboxAddress` (a relay mailbox plus the capability to post
to it), :class:`Invite` (signed, expiring, carrying the inviter's inboxes,
identity key and one KeyPackage), its link form
``samizdat:invite/<base64url>`` (:meth:`Invite.to_link`,
:func:`parse_invite_link`), and :func:`safety_number` /
:func:`safety_qr_payload` for comparing identity keys out of band.

Theory of operation
-------------------
An invite is everything a stranger needs to open a 1:1 conversation with the
inviter: where to post (``inboxes``: mailboxes the inviter made for this
invite alone, with each one's Ed25519 write seed as the posting capability;
the inviter deletes them once the invite is used up, expired or revoked, so
the capability does not outlive the invite, SPEC.md §8.5), what to post (a
Welcome built from ``key_package``), and whom to expect (``identity_key``, the
inviter's MLS signature key; the KeyPackage's leaf must carry the same key,
which the client checks when it builds the group). The invite is signed by
that key under the label ``"samizdat-invite/v1"``, so a link altered in
transit (a swapped inbox, a swapped KeyPackage) does not verify. No display
name travels in the link: a link is seen by whoever carries it, names travel
only inside encrypted messages (``Profile``).

Short links (SPEC.md §8.5, issue 15 item 5): the signed invite does not
travel in the link.  The inviter stores it on one of its relays as the only
message of a mailbox whose id, read key and encryption key all derive from a
16-byte *link secret*; the link names that relay and the secret, and nothing
else (:func:`short_invite_link`, :func:`parse_short_invite_link`,
:func:`seal_invite_blob`, :func:`open_invite_blob`).  The blob is padded to
a fixed bucket and AEAD-encrypted under a key the relay never sees, so the
relay holds an opaque 4 KiB envelope; the mailbox's write key stays with the
inviter, and the mailbox is deleted when the invite stops being active, so a
link seen after it was used reveals nothing.

Safety numbers follow Signal's construction (per-key fingerprints from
iterated SHA-512, 30 digits each, the two halves sorted so both parties see
the same 60 digits); SPEC.md §8 argues the parameters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.app import (
    check_len,
    check_range,
    pull_opaque_max,
    pull_url,
    pull_vector_max,
    push_fixed,
    push_opaque_max,
    push_url,
    push_vector_max,
)
from protocol.codec import Reader, Writer, decode_exact, opaque
from protocol.errors import DecodeError, LocalError
from protocol.mls.tree_structs import Struct
from protocol.padding import ENVELOPE_BUCKETS, pad, unpad

INVITE_VERSION = 1
MAILBOX_ID_LEN = 32
SEED_LEN = 32
IDENTITY_KEY_LEN = 32  # Ed25519 (cipher suites 1 and 3)
SIGNATURE_LEN = 64
MAX_INBOXES = 8
#: A suite-1 KeyPackage is ~300-400 B; 16 KiB leaves room for post-quantum keys.
MAX_KEY_PACKAGE_LEN = 16 * 1024

LINK_PREFIX = "samizdat:invite/"
_LINK_PREFIXES = ("samizdat://invite/", "samizdat:invite/")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_SIGN_LABEL = b"samizdat-invite/v1"


@dataclass(frozen=True, slots=True)
class InboxAddress(Struct):
    """A personal inbox: a mailbox on a relay and the seed of its write key.

    ``write_seed`` is the 32-byte Ed25519 seed whose public key the relay
    registered as the mailbox's write key; holding it is the capability to post.
    """

    relay_url: str
    mailbox_id: bytes
    write_seed: bytes

    def __post_init__(self) -> None:
        check_len(self.mailbox_id, MAILBOX_ID_LEN, "mailbox_id")
        check_len(self.write_seed, SEED_LEN, "write_seed")

    def encode(self, w: Writer) -> None:
        push_url(w, self.relay_url)
        push_fixed(w, self.mailbox_id, MAILBOX_ID_LEN, "mailbox_id")
        push_fixed(w, self.write_seed, SEED_LEN, "write_seed")

    @classmethod
    def decode(cls, r: Reader) -> Self:
        relay_url = pull_url(r)
        mailbox_id = r.pull_bytes(MAILBOX_ID_LEN)
        return cls(relay_url, mailbox_id, r.pull_bytes(SEED_LEN))

    def write_key(self) -> bytes:
        """The Ed25519 public key the relay knows as this inbox's write key."""
        return ed25519_public_key(self.write_seed)


def pull_inboxes(r: Reader, *, min_count: int = 0) -> tuple[InboxAddress, ...]:
    return pull_vector_max(r, InboxAddress.decode, MAX_INBOXES, "inboxes", min_count=min_count)


def push_inboxes(w: Writer, inboxes: Sequence[InboxAddress], *, min_count: int = 0) -> None:
    push_vector_max(w, inboxes, _push_inbox, MAX_INBOXES, "inboxes", min_count=min_count)


def _push_inbox(w: Writer, inbox: InboxAddress) -> None:
    inbox.encode(w)


@dataclass(frozen=True, slots=True)
class Invite(Struct):
    """A signed invitation to open a 1:1 conversation (SPEC.md §8.5)."""

    inboxes: tuple[InboxAddress, ...]
    identity_key: bytes
    key_package: bytes
    expires_at_ms: int
    signature: bytes
    version: int = INVITE_VERSION

    def __post_init__(self) -> None:
        if self.version != INVITE_VERSION:
            raise LocalError(f"unsupported invite version {self.version}")
        check_range(len(self.inboxes), 1, MAX_INBOXES, "number of inboxes")
        check_len(self.identity_key, IDENTITY_KEY_LEN, "identity_key")
        check_range(len(self.key_package), 1, MAX_KEY_PACKAGE_LEN, "key_package length")
        check_range(self.expires_at_ms, 0, (1 << 64) - 1, "expires_at_ms")
        check_len(self.signature, SIGNATURE_LEN, "signature")

    @classmethod
    def create(
        cls,
        inboxes: Sequence[InboxAddress],
        identity_seed: bytes,
        key_package: bytes,
        expires_at_ms: int,
    ) -> Invite:
        """Build and sign an invite with the inviter's Ed25519 identity seed."""
        check_len(identity_seed, SEED_LEN, "identity_seed")
        pk, sk = nacl.bindings.crypto_sign_seed_keypair(identity_seed)
        unsigned = cls(tuple(inboxes), bytes(pk), key_package, expires_at_ms, bytes(64))
        signature = bytes(nacl.bindings.crypto_sign(unsigned.to_be_signed(), sk)[:SIGNATURE_LEN])
        return cls(unsigned.inboxes, unsigned.identity_key, key_package, expires_at_ms, signature)

    def _encode_tbs(self, w: Writer) -> None:
        w.push_uint16(self.version)
        push_inboxes(w, self.inboxes, min_count=1)
        push_opaque_max(w, self.identity_key, IDENTITY_KEY_LEN, "identity_key")
        push_opaque_max(w, self.key_package, MAX_KEY_PACKAGE_LEN, "key_package")
        w.push_uint64(self.expires_at_ms)

    def to_be_signed(self) -> bytes:
        """``opaque label<V> || InviteTBS``: the bytes the signature covers."""
        w = Writer()
        self._encode_tbs(w)
        return opaque(_SIGN_LABEL) + w.getvalue()

    def encode(self, w: Writer) -> None:
        self._encode_tbs(w)
        push_opaque_max(w, self.signature, SIGNATURE_LEN, "signature")

    @classmethod
    def decode(cls, r: Reader) -> Self:
        version = r.pull_uint16()
        if version != INVITE_VERSION:
            raise DecodeError(f"unsupported invite version {version}")
        inboxes = pull_inboxes(r, min_count=1)
        identity_key = pull_opaque_max(r, IDENTITY_KEY_LEN, "identity_key")
        if len(identity_key) != IDENTITY_KEY_LEN:
            raise DecodeError("identity_key is not an Ed25519 public key")
        key_package = pull_opaque_max(r, MAX_KEY_PACKAGE_LEN, "key_package")
        if not key_package:
            raise DecodeError("invite carries no key_package")
        expires_at_ms = r.pull_uint64()
        signature = pull_opaque_max(r, SIGNATURE_LEN, "signature")
        if len(signature) != SIGNATURE_LEN:
            raise DecodeError("invite signature has the wrong length")
        return cls(inboxes, identity_key, key_package, expires_at_ms, signature)

    def verify(self, now_ms: int) -> None:
        """DecodeError unless the signature verifies and the invite is unexpired."""
        try:
            nacl.bindings.crypto_sign_open(self.signature + self.to_be_signed(), self.identity_key)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise DecodeError("invite signature does not verify") from None
        if now_ms >= self.expires_at_ms:
            raise DecodeError("invite expired")

    def to_link(self) -> str:
        """``samizdat:invite/`` + the signed invite in unpadded base64url."""
        return LINK_PREFIX + base64.urlsafe_b64encode(self.to_bytes()).rstrip(b"=").decode()


def parse_invite_link(text: str, now_ms: int) -> Invite:
    """Parse, verify and check the expiry of an invite link.

    Accepts ``samizdat:invite/`` or ``samizdat://invite/`` (any case in the
    scheme) with surrounding whitespace.  Every failure is a DecodeError whose
    message is fit to show a user.
    """
    text = text.strip()
    body: str | None = None
    for prefix in _LINK_PREFIXES:
        if text[: len(prefix)].lower() == prefix:
            body = text[len(prefix) :]
            break
    if body is None or not body:
        raise DecodeError("not a Samizdat invite link")
    raw = b64url_decode(body)
    try:
        invite = decode_exact(raw, Invite.decode)
    except DecodeError as exc:
        raise DecodeError(f"damaged Samizdat invite link ({exc})") from None
    invite.verify(now_ms)
    return invite


# ---------------------------------------------------------------- short links

SHORT_LINK_PREFIX = "samizdat:i/"
LINK_SECRET_LEN = 16
#: The smallest envelope an invite blob is padded to: every suite-1 invite
#: (~520 B) and a post-quantum one (~2.5 KiB) look the same to the relay.
INVITE_BLOB_MIN = 4096
_BLOB_TAG = 16
_BLOB_INFO = b"samizdat-invite-blob/v1 "
_BLOB_AAD = b"samizdat-invite-blob/v1"


@dataclass(frozen=True, slots=True)
class InviteBlobKeys:
    """What a link secret gives: the mailbox holding the invite, the seed of
    its read key (proves the right to read it), and the blob's AEAD key."""

    mailbox_id: bytes
    read_seed: bytes
    key: bytes


def invite_blob_keys(secret: bytes) -> InviteBlobKeys:
    """HKDF-SHA256(ikm = secret, info = "samizdat-invite-blob/v1 " || label)."""
    check_len(secret, LINK_SECRET_LEN, "link secret")

    def derive(label: bytes, n: int) -> bytes:
        return HKDF(hashes.SHA256(), n, salt=None, info=_BLOB_INFO + label).derive(secret)

    return InviteBlobKeys(
        derive(b"mailbox", MAILBOX_ID_LEN), derive(b"read", SEED_LEN), derive(b"key", 32)
    )


def seal_invite_blob(invite: Invite, secret: bytes) -> bytes:
    """The envelope that holds ``invite`` on the relay: ChaCha20-Poly1305
    under the secret's key (used for this one message only, so a zero nonce),
    aad = label || mailbox_id, over the padded encoded invite."""
    keys = invite_blob_keys(secret)
    data = invite.to_bytes()
    buckets = tuple(b for b in ENVELOPE_BUCKETS if b >= INVITE_BLOB_MIN)
    padded = pad(data, None, overhead=_BLOB_TAG, buckets=buckets)
    return ChaCha20Poly1305(keys.key).encrypt(bytes(12), padded, _BLOB_AAD + keys.mailbox_id)


def open_invite_blob(envelope: bytes, secret: bytes, now_ms: int) -> Invite:
    """Decrypt, decode and verify an invite blob (DecodeError fit to show)."""
    keys = invite_blob_keys(secret)
    try:
        padded = ChaCha20Poly1305(keys.key).decrypt(
            bytes(12), envelope, _BLOB_AAD + keys.mailbox_id
        )
    except InvalidTag:
        raise DecodeError("the stored invite does not match the link") from None
    try:
        invite = decode_exact(unpad(padded), Invite.decode)
    except (DecodeError, LocalError) as exc:
        raise DecodeError(f"damaged Samizdat invite ({exc})") from None
    invite.verify(now_ms)
    return invite


def short_invite_link(secret: bytes, relay_url: str) -> str:
    """``samizdat:i/`` || base64url(secret) || ``/`` || the relay URL, whose
    ``https://`` is left out (``http://`` is kept)."""
    check_len(secret, LINK_SECRET_LEN, "link secret")
    where = relay_url.rstrip("/")
    if where.startswith("https://"):
        where = where[len("https://") :]
    elif not where.startswith("http://"):
        raise LocalError(f"not a relay URL: {relay_url!r}")
    return SHORT_LINK_PREFIX + base64.urlsafe_b64encode(secret).rstrip(b"=").decode() + "/" + where


def is_short_invite_link(text: str) -> bool:
    return text.strip()[: len(SHORT_LINK_PREFIX)].lower() == SHORT_LINK_PREFIX


def parse_short_invite_link(text: str) -> tuple[str, bytes]:
    """(relay URL, link secret) of a short link; DecodeError fit to show."""
    text = text.strip()
    if not is_short_invite_link(text):
        raise DecodeError("not a Samizdat invite link")
    body = text[len(SHORT_LINK_PREFIX) :]
    secret_text, slash, where = body.partition("/")
    if not slash or not where or any(c.isspace() for c in where):
        raise DecodeError("not a Samizdat invite link")
    secret = b64url_decode(secret_text)
    if len(secret) != LINK_SECRET_LEN:
        raise DecodeError("damaged Samizdat invite link (bad secret)")
    url = where if where.startswith("http://") else "https://" + where
    host = url.split("://", 1)[1].split("/", 1)[0]
    if not host:
        raise DecodeError("damaged Samizdat invite link (no relay)")
    return url, secret


def b64url_decode(body: str) -> bytes:
    """Strict unpadded base64url: alphabet, length and canonical trailing bits."""
    if not _B64URL.fullmatch(body) or len(body) % 4 == 1:
        raise DecodeError("not a Samizdat invite link")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("not a Samizdat invite link") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != body:
        raise DecodeError("not a Samizdat invite link (non-canonical base64)")
    return raw


def ed25519_public_key(seed: bytes) -> bytes:
    """The Ed25519 public key of a 32-byte seed (libsodium)."""
    check_len(seed, SEED_LEN, "Ed25519 seed")
    pk, _ = nacl.bindings.crypto_sign_seed_keypair(seed)
    return bytes(pk)


# ---------------------------------------------------------------- safety numbers

#: Signal's iteration count for its numeric fingerprints: ~3 ms per key here.
SAFETY_ITERATIONS = 5200
SAFETY_DIGITS = 60
SAFETY_QR_VERSION = 1
_SAFETY_LABEL = b"samizdat-safety-number/v1"
_FINGERPRINT_LEN = 32


def key_fingerprint(identity_key: bytes) -> bytes:
    """A 32-byte iterated-SHA-512 fingerprint of one identity key.

    ``h_0 = label || key``; ``h_{i+1} = SHA-512(h_i || key)`` for
    :data:`SAFETY_ITERATIONS` rounds; the first 32 bytes of the last hash.
    """
    if not identity_key:
        raise LocalError("identity key is empty")
    digest = opaque(_SAFETY_LABEL) + identity_key
    for _ in range(SAFETY_ITERATIONS):
        digest = hashlib.sha512(digest + identity_key).digest()
    return digest[:_FINGERPRINT_LEN]


def _digits(fingerprint: bytes) -> str:
    """30 digits: six 5-byte big-endian chunks, each reduced mod 10^5."""
    return "".join(
        f"{int.from_bytes(fingerprint[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5)
    )


def _sorted_fingerprints(key_a: bytes, key_b: bytes) -> tuple[bytes, bytes]:
    fa, fb = key_fingerprint(key_a), key_fingerprint(key_b)
    return (fa, fb) if fa <= fb else (fb, fa)


def safety_number(key_a: bytes, key_b: bytes) -> str:
    """60 digits in 12 groups of 5, the same whichever key is passed first."""
    low, high = _sorted_fingerprints(key_a, key_b)
    digits = _digits(low) + _digits(high)
    return " ".join(digits[i : i + 5] for i in range(0, SAFETY_DIGITS, 5))


def safety_qr_payload(key_a: bytes, key_b: bytes) -> bytes:
    """``uint8 version || opaque low[32] || opaque high[32]`` (65 bytes).

    Symmetric like :func:`safety_number`: both devices render the same QR
    code, and a scan is compared with :func:`safety_qr_matches`.
    """
    low, high = _sorted_fingerprints(key_a, key_b)
    return bytes([SAFETY_QR_VERSION]) + low + high


def safety_qr_matches(scanned: bytes, key_a: bytes, key_b: bytes) -> bool:
    """True if a scanned payload equals ours; DecodeError if it is not one."""
    if len(scanned) != 1 + 2 * _FINGERPRINT_LEN:
        raise DecodeError("not a Samizdat safety-number code")
    if scanned[0] != SAFETY_QR_VERSION:
        raise DecodeError(f"unsupported safety-number code version {scanned[0]}")
    return hmac.compare_digest(scanned, safety_qr_payload(key_a, key_b))
