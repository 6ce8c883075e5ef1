"""Samizdat's sans-I/O protocol core.

Nothing in this package performs I/O, reads a clock or uses global randomness:
time and a random source are passed in by the caller.  It holds the TLS
presentation-language codec, the MLS implementation (RFC 9420) in
``protocol.mls``, envelopes, padding and relay frames.
"""

from protocol.errors import (
    CryptoError,
    DecodeError,
    LocalError,
    RemoteError,
    SamizdatError,
    UnsupportedError,
)

__all__ = [
    "CryptoError",
    "DecodeError",
    "LocalError",
    "RemoteError",
    "SamizdatError",
    "UnsupportedError",
]
