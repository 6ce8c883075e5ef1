"""Private routing: a post that reaches its relay through another relay.

Sans-I/O (randomness is passed in).  SPEC.md §7.14 describes every struct in
the presentation language.

Theory of operation
-------------------
A client that wants relay D (the *destination*, which holds the mailbox) not
to see its address for a post sends the post to relay F (the *forwarder*,
one of its own relays) instead, and F posts it to D over F's own connection.

* The client fetches D's forwarding key (an HPKE X25519 public key, RFC 9180
  DHKEM(X25519, HKDF-SHA256), AES-128-GCM) from ``D/relay-key``, then seals a
  :class:`ForwardedPost` to it: a one-shot ``PostSigned`` frame (no
  connection nonce, so it can travel through anyone) and a fresh
  ``answer_key``.  F sees only the :class:`ForwardRequest`: D's URL and the
  sealed bytes, never the mailbox id, the message id or the signature.
* D opens the request, handles the ``PostSigned`` as on a WebSocket, and
  answers with its ``Posted`` or ``Error`` frame padded to :data:`ANSWER_SIZE`
  and sealed under ``answer_key`` (AES-128-GCM; the key is used once, so a
  zero nonce is safe).  F returns those bytes unchanged: every answer it
  relays has the same size, and it cannot read any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codec import Reader, Writer, decode_exact
from protocol.errors import CryptoError, DecodeError, LocalError
from protocol.mls.crypto import Rng, get_suite
from protocol.relay_frames import (
    Error,
    Posted,
    PostSigned,
    decode_client_frame,
    decode_server_frame,
)

# HPKE of cipher suite 1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM
_SUITE = get_suite(1)
RELAY_KEY_LEN = 32  # an X25519 public key (RFC 9180 §7.1.1 SerializePublicKey)
ENC_LEN = 32  # HPKE enc of DHKEM(X25519)
ANSWER_KEY_LEN = 16  # AES-128-GCM
AEAD_TAG = 16
MAX_DESTINATION_LEN = 1024
# Every answer (Posted: 14 B, Error: up to 265 B) is padded to this many
# bytes before sealing, so the forwarder cannot tell them apart by size.
ANSWER_SIZE = 320
_INFO = b"samizdat-relay/v1 forward"
_ANSWER_AAD = b"samizdat-relay/v1 forward-answer"
_ZERO_NONCE = bytes(12)


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """The body of ``POST F/forward``: all the forwarder learns of a post."""

    destination: str  # D's URL with its secret prefix, e.g. https://d.example/k3y
    sealed: bytes  # enc || HPKE ciphertext of a ForwardedPost

    def encode(self) -> bytes:
        dest = self.destination.encode("utf-8")
        if not 0 < len(dest) <= MAX_DESTINATION_LEN:
            raise LocalError(f"destination URL must be 1..{MAX_DESTINATION_LEN} bytes")
        w = Writer()
        w.push_opaque(dest)
        w.push_opaque(self.sealed)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> ForwardRequest:
        def pull(r: Reader) -> ForwardRequest:
            dest = r.pull_opaque()
            if not 0 < len(dest) <= MAX_DESTINATION_LEN:
                raise DecodeError("destination URL length out of range")
            try:
                text = dest.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecodeError("destination URL is not UTF-8") from exc
            sealed = r.pull_opaque()
            if len(sealed) <= ENC_LEN + AEAD_TAG:
                raise DecodeError("sealed request too short")
            return cls(text, sealed)

        return decode_exact(data, pull)


@dataclass(frozen=True, slots=True)
class ForwardedPost:
    """What only the destination relay reads: the post and the answer key."""

    answer_key: bytes
    post: PostSigned

    def encode(self) -> bytes:
        if len(self.answer_key) != ANSWER_KEY_LEN:
            raise LocalError(f"answer_key must be {ANSWER_KEY_LEN} bytes")
        w = Writer()
        w.push_bytes(self.answer_key)
        w.push_opaque(self.post.encode())
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> ForwardedPost:
        def pull(r: Reader) -> ForwardedPost:
            key = r.pull_bytes(ANSWER_KEY_LEN)
            frame = decode_client_frame(r.pull_opaque())
            if not isinstance(frame, PostSigned):
                raise DecodeError("a forwarded request must be a PostSigned frame")
            return cls(key, frame)

        return decode_exact(data, pull)


def relay_key_pair(rng: Rng) -> tuple[bytes, bytes]:
    """A fresh (private, public) forwarding key pair for a relay."""
    return _SUITE.hpke_key_pair(rng)


def relay_public_key(private: bytes) -> bytes:
    return _SUITE.hpke_public_key(private)


def seal_request(relay_key: bytes, inner: ForwardedPost, rng: Rng) -> bytes:
    """``enc || ciphertext``: HPKE SealBase (RFC 9180 §6.1) to the destination's key."""
    if len(relay_key) != RELAY_KEY_LEN:
        raise LocalError(f"a relay key is {RELAY_KEY_LEN} bytes")
    enc, ct = _SUITE.hpke_seal(relay_key, _INFO, b"", inner.encode(), rng)
    return enc + ct


def open_request(private: bytes, sealed: bytes) -> ForwardedPost:
    """The destination's side; ``CryptoError`` if it was sealed to another key,
    ``DecodeError`` if what it holds is not a ForwardedPost."""
    if len(sealed) <= ENC_LEN + AEAD_TAG:
        raise DecodeError("sealed request too short")
    plain = _SUITE.hpke_open(private, sealed[:ENC_LEN], _INFO, b"", sealed[ENC_LEN:])
    return ForwardedPost.decode(plain)


def seal_answer(answer_key: bytes, frame: Posted | Error) -> bytes:
    """The destination's answer: ``uint16 length || frame || zeros`` to
    :data:`ANSWER_SIZE`, sealed under the single-use ``answer_key``."""
    data = frame.encode()
    if len(data) > ANSWER_SIZE - 2:
        raise LocalError("answer frame too long")
    padded = len(data).to_bytes(2, "big") + data + bytes(ANSWER_SIZE - 2 - len(data))
    return _SUITE.aead_seal(answer_key, _ZERO_NONCE, _ANSWER_AAD, padded)


def open_answer(answer_key: bytes, sealed: bytes) -> Posted | Error:
    """The client's side; ``CryptoError`` if the forwarder (or anyone) altered it."""
    if len(sealed) != ANSWER_SIZE + AEAD_TAG:
        raise CryptoError("forwarded answer has the wrong size")
    padded = _SUITE.aead_open(answer_key, _ZERO_NONCE, _ANSWER_AAD, sealed)
    n = int.from_bytes(padded[:2], "big")
    if n > ANSWER_SIZE - 2 or any(padded[2 + n :]):
        raise DecodeError("malformed answer padding")
    frame = decode_server_frame(padded[2 : 2 + n])
    if not isinstance(frame, Posted | Error):
        raise DecodeError(f"a forwarded answer cannot be {type(frame).__name__}")
    return frame
