"""The store's cryptography: Argon2id, subkeys, sealed boxes, padding, chunk blocks.

Everything here is a pure function of its arguments except the random nonces
and keys drawn from ``os.urandom``; no file or database is touched.  The exact
byte layouts are normative (SPEC.md §9), so that another implementation can
read a store or a backup.

Theory of operation
-------------------
* A passphrase becomes a 32-byte key-encryption key with Argon2id v1.3
  (libsodium ``crypto_pwhash``, alg ``ARGON2ID13``).  It only ever wraps a
  random master key, so changing the passphrase rewraps 32 bytes instead of
  re-encrypting the store.
* Subkeys are ``BLAKE2b-256(key=parent, person=16-byte domain, msg=label)``;
  each purpose (record AEAD, lookup ids, namespace ids, key check) has its own
  label, so no key is ever used for two things.
* A sealed box is ``nonce(24) || XChaCha20-Poly1305(key, nonce, pt, aad)``.
  Random 192-bit nonces make collisions negligible for any number of boxes
  one device can write (2^-96 at 2^48 boxes).
* Padded plaintexts are ``u32 len || field`` repeated, then zero fill up to a
  size class: powers of two from 64 B to 64 KiB, then multiples of 64 KiB.
  So a stored length reveals only the class, and the fill is checked to be
  zeros on the way back (strict decoding, no slack for tampering).
* Large objects (files, backups) are sequences of equal-sized blocks, each a
  sealed box of ``u32 len || data || zeros`` (``BLOCK_DATA`` bytes of data at
  most) whose AAD carries the block index and a final-block flag: blocks can
  be neither reordered, dropped, truncated away nor appended to (the STREAM
  construction of Hoang-Reyhanitabar-Rogaway-Vizár).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator

import nacl.bindings
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

#: Argon2id cost used by default: libsodium's MODERATE (3 passes over 256 MiB),
#: about 0.4 s on the 2-core reference machine.  OWASP's floor is 19 MiB x 2.
DEFAULT_OPSLIMIT: int = argon2id.OPSLIMIT_MODERATE
DEFAULT_MEMLIMIT: int = argon2id.MEMLIMIT_MODERATE
#: The cheapest parameters libsodium accepts (1 pass, 8 KiB): for tests only.
FAST_OPSLIMIT: int = argon2id.OPSLIMIT_MIN
FAST_MEMLIMIT: int = argon2id.MEMLIMIT_MIN
#: Bounds a header may name; anything outside is treated as corruption (a
#: doctored header must not make ``open`` allocate 1 TB or loop for hours).
MAX_OPSLIMIT = 64
MAX_MEMLIMIT = 4 << 30
#: Identifies the KDF in headers: Argon2id version 1.3 (libsodium ALG_ARGON2ID13).
KDF_ARGON2ID13 = 2

SALT_SIZE: int = argon2id.SALTBYTES  # 16
KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16
BOX_OVERHEAD = NONCE_SIZE + TAG_SIZE

#: Smallest and largest power-of-two size class; beyond it, multiples of it.
MIN_CLASS = 64
MAX_POW2_CLASS = 64 * 1024

#: Data bytes per block of a file or backup; every block on disk is
#: ``BLOCK_SIZE`` = 24 + 4 + 65,536 + 16 = 65,580 bytes.
BLOCK_DATA = 64 * 1024
BLOCK_SIZE = NONCE_SIZE + 4 + BLOCK_DATA + TAG_SIZE


class AuthFailed(Exception):
    """A box failed authentication or a padded plaintext is malformed.

    Internal: the store turns it into ``WrongPassphrase``, ``StoreCorrupt`` or
    ``BackupCorrupt`` depending on what was being opened.
    """


def kdf_params(fast: bool) -> tuple[int, int]:
    """``(opslimit, memlimit)`` for a new store or backup."""
    return (FAST_OPSLIMIT, FAST_MEMLIMIT) if fast else (DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT)


def params_ok(opslimit: int, memlimit: int) -> bool:
    """True if Argon2id parameters read from disk are sane enough to run."""
    return FAST_OPSLIMIT <= opslimit <= MAX_OPSLIMIT and FAST_MEMLIMIT <= memlimit <= MAX_MEMLIMIT


def passphrase_key(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    """Argon2id v1.3 of ``passphrase``: 32 bytes."""
    key: bytes = argon2id.kdf(KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
    return key


def subkey(parent: bytes, person: bytes, label: bytes) -> bytes:
    """``BLAKE2b-256(key=parent, person=person, msg=label)`` (salt all zeros)."""
    return hashlib.blake2b(label, digest_size=KEY_SIZE, key=parent, person=person).digest()


def keyed_hash(key: bytes, data: bytes) -> bytes:
    """``BLAKE2b-256(key=key, msg=data)``: lookup and namespace ids."""
    return hashlib.blake2b(data, digest_size=KEY_SIZE, key=key).digest()


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the OS CSPRNG."""
    return os.urandom(n)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """``nonce || XChaCha20-Poly1305(key, nonce, plaintext, aad)``, fresh nonce."""
    nonce = os.urandom(NONCE_SIZE)
    ct: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    return nonce + ct


def unseal(key: bytes, box: bytes, aad: bytes) -> bytes:
    """Open a :func:`seal` box; :class:`AuthFailed` if it does not verify."""
    if len(box) < BOX_OVERHEAD:
        raise AuthFailed("box too short")
    try:
        pt: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            box[NONCE_SIZE:], aad, box[:NONCE_SIZE], key
        )
    except nacl.exceptions.CryptoError as exc:
        raise AuthFailed("authentication failed") from exc
    return pt


def size_class(n: int) -> int:
    """The padded size for an ``n``-byte encoded plaintext."""
    if n <= MAX_POW2_CLASS:
        size = MIN_CLASS
        while size < n:
            size <<= 1
        return size
    return -(-n // MAX_POW2_CLASS) * MAX_POW2_CLASS


def pad_fields(*fields: bytes) -> bytes:
    """``(u32 len || field)*`` followed by zeros up to its :func:`size_class`."""
    body = b"".join(struct.pack(">I", len(f)) + f for f in fields)
    return body + bytes(size_class(len(body)) - len(body))


def unpad_fields(padded: bytes, count: int) -> list[bytes]:
    """Inverse of :func:`pad_fields` for exactly ``count`` fields; strict."""
    fields: list[bytes] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(padded):
            raise AuthFailed("truncated field length")
        (n,) = struct.unpack_from(">I", padded, pos)
        pos += 4
        if pos + n > len(padded):
            raise AuthFailed("truncated field")
        fields.append(padded[pos : pos + n])
        pos += n
    if len(padded) != size_class(pos) or any(padded[pos:]):
        raise AuthFailed("bad padding")
    return fields


def block_aad(prefix: bytes, index: int, final: bool) -> bytes:
    """AAD of block ``index``: ``prefix || u64 index || u8 final``."""
    return prefix + struct.pack(">QB", index, 1 if final else 0)


def seal_block(key: bytes, prefix: bytes, index: int, final: bool, data: bytes) -> bytes:
    """One ``BLOCK_SIZE``-byte block holding up to ``BLOCK_DATA`` bytes."""
    if len(data) > BLOCK_DATA:
        raise ValueError("block data too long")
    pt = struct.pack(">I", len(data)) + data + bytes(BLOCK_DATA - len(data))
    return seal(key, pt, block_aad(prefix, index, final))


def open_block(key: bytes, prefix: bytes, index: int, final: bool, block: bytes) -> bytes:
    """Inverse of :func:`seal_block`; :class:`AuthFailed` on any mismatch."""
    if len(block) != BLOCK_SIZE:
        raise AuthFailed("short block")
    pt = unseal(key, block, block_aad(prefix, index, final))
    (n,) = struct.unpack_from(">I", pt, 0)
    if n > BLOCK_DATA or any(pt[4 + n :]):
        raise AuthFailed("bad block padding")
    return pt[4 : 4 + n]


def rechunk(pieces: Iterable[bytes], size: int = BLOCK_DATA) -> Iterator[tuple[bytes, bool]]:
    """Regroup ``pieces`` into ``(chunk, final)`` of exactly ``size`` bytes
    (the final one shorter, possibly empty).  Holds at most one chunk plus one
    piece in memory, and always yields at least one (final) chunk.
    """
    buf = bytearray()
    for piece in pieces:
        buf += piece
        # Strictly more than one chunk buffered: the first cannot be the last.
        while len(buf) > size:
            yield bytes(buf[:size]), False
            del buf[:size]
    yield bytes(buf), True
