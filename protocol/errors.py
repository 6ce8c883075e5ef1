"""The one exception hierarchy of Samizdat.

``SamizdatError`` is the root.  ``LocalError`` means the caller misused an API
(a bug or bad user input on this side); ``RemoteError`` means a peer or a relay
sent something invalid.  Every error a layer raises carries a stable numeric
``code`` that is also the value it takes in error frames on the wire (SPEC.md,
"Error codes").
"""

from __future__ import annotations


class SamizdatError(Exception):
    """Root of every error Samizdat raises on purpose."""

    code: int = 1


class LocalError(SamizdatError):
    """The caller asked for something impossible or invalid."""

    code = 2


class RemoteError(SamizdatError):
    """Bytes from the network (a peer or a relay) were invalid or untrusted."""

    code = 3


class DecodeError(RemoteError):
    """Malformed TLS presentation-language bytes (RFC 9420 §2.1)."""

    code = 10


class CryptoError(RemoteError):
    """A signature, MAC, AEAD tag or HPKE ciphertext did not verify."""

    code = 11


class UnsupportedError(LocalError):
    """A cipher suite, extension or feature this implementation does not offer."""

    code = 12
