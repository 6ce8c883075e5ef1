"""Attachments: files encrypted under a fresh key into fixed-size blob chunks.

Provides :func:`new_file_key`, :class:`FileEncryptor` (``encrypt_chunk`` /
``decrypt_chunk``), :func:`chunk_count`, :class:`CiphertextDigest` /
:func:`ciphertext_digest`, per-relay copies (:func:`copy_key`,
:func:`copy_chunk`, :func:`copy_chunks`), and the whole-file helpers :func:`encrypt_file` /
:func:`decrypt_file`.

Theory of operation
-------------------
BRIEF §2 item 4: the relay must not be able to recognise a file, not even a
file it has seen before.  So every file gets a fresh random 32-byte key
(never derived from its content, unlike convergent encryption), every chunk
is ChaCha20-Poly1305 ciphertext of exactly :data:`BLOB_CHUNK_SIZE` (256 KiB)
bytes, and the only hash that leaves the device is SHA-256 over *ciphertext*.
The same photo sent twice therefore yields unrelated chunks and digests of
the same (bucketed) length.

Chunk ``i`` is ``AEAD(key, nonce = uint32 last || uint64 i,
aad = "samizdat-file-chunk/v1", uint32 length || data || zeros)``, the
plaintext sized so the ciphertext is exactly 256 KiB: 262,144 - 16 (tag) - 4
(length) = :data:`CHUNK_PLAINTEXT_SIZE` = 262,124 bytes of file data.  The
index in the nonce stops reordering; the last-chunk flag stops truncation
(an earlier chunk does not decrypt as the last) and extension (a chunk after
the last does not decrypt as a non-last one).  Every chunk but the last holds
exactly CHUNK_PLAINTEXT_SIZE bytes; the zero fill is checked on decryption.

A key must encrypt one file once: :class:`FileEncryptor` refuses to encrypt
an index twice (which would reuse a nonce).  Keep the ciphertext for retries.

Per-relay copies (SPEC §8.7, issue 15 item 3): the chunks above are the
file's *canonical* ciphertext, which never leaves the device.  The copy
uploaded to a relay is the canonical chunk XORed with a ChaCha20 keystream
under :func:`copy_key` (HKDF of the file key and that copy's relay URL) with
the chunk index as nonce: :func:`copy_chunk`, its own inverse.  So the bytes
of one file differ on every relay, and two colluding relays cannot link
their mailboxes by comparing blobs.  The outer layer needs no tag: the inner
AEAD authenticates every chunk, and ``ciphertext_digest`` is over the
canonical chunks, so every copy is checked against the same digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.app import Rng, check_len, random_bytes
from protocol.app.messages import DIGEST_LEN, FILE_KEY_LEN, MAX_CHUNKS
from protocol.app.messages import chunk_count as _chunk_count
from protocol.errors import CryptoError, DecodeError, LocalError
from protocol.padding import BLOB_CHUNK_SIZE

TAG_LEN = 16
_LEN_HEADER = 4
#: File bytes per chunk: 262,144 - 16 - 4 = 262,124.
CHUNK_PLAINTEXT_SIZE = BLOB_CHUNK_SIZE - TAG_LEN - _LEN_HEADER
_AAD = b"samizdat-file-chunk/v1"


def new_file_key(rng: Rng) -> bytes:
    """A fresh 32-byte file key; never reuse one for a second file or send."""
    return random_bytes(rng, FILE_KEY_LEN, "file key")


def chunk_count(size: int) -> int:
    """Chunks a ``size``-byte file takes at :data:`CHUNK_PLAINTEXT_SIZE` (>= 1)."""
    if size < 0:
        raise LocalError("negative file size")
    return _chunk_count(size, CHUNK_PLAINTEXT_SIZE)


_COPY_INFO = b"samizdat-file-copy/v1 "


def copy_key(file_key: bytes, relay_url: str) -> bytes:
    """The key of a file's copy on one relay: HKDF-SHA256(ikm = file key,
    info = "samizdat-file-copy/v1 " || relay_url), 32 bytes.  ``relay_url``
    is the copy's ``BlobRef.relay_url`` byte for byte."""
    check_len(file_key, FILE_KEY_LEN, "file key")
    hkdf = HKDF(hashes.SHA256(), FILE_KEY_LEN, salt=None, info=_COPY_INFO + relay_url.encode())
    return hkdf.derive(file_key)


def copy_chunk(key: bytes, index: int, chunk: bytes) -> bytes:
    """Chunk ``index`` of a relay copy from its canonical ciphertext, or back
    (XOR with ChaCha20(key, counter 0, nonce = uint96 index): its own inverse)."""
    check_len(key, FILE_KEY_LEN, "copy key")
    if not 0 <= index < MAX_CHUNKS:
        raise LocalError(f"chunk index {index} out of range")
    nonce = bytes(4) + index.to_bytes(12, "big")  # 32-bit block counter 0, then the nonce
    enc = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    return enc.update(chunk) + enc.finalize()


def copy_chunks(file_key: bytes, relay_url: str, chunks: Iterable[bytes]) -> list[bytes]:
    """All the chunks of the copy for ``relay_url`` (in-memory files)."""
    key = copy_key(file_key, relay_url)
    return [copy_chunk(key, i, c) for i, c in enumerate(chunks)]


def _nonce(index: int, last: bool) -> bytes:
    if not 0 <= index < MAX_CHUNKS:
        raise LocalError(f"chunk index {index} out of range")
    return (1 if last else 0).to_bytes(4, "big") + index.to_bytes(8, "big")


class FileEncryptor:
    """Encrypts and decrypts the chunks of one file under one key."""

    __slots__ = ("_aead", "_used")

    def __init__(self, key: bytes) -> None:
        check_len(key, FILE_KEY_LEN, "file key")
        self._aead = ChaCha20Poly1305(key)
        self._used: set[int] = set()

    def encrypt_chunk(self, index: int, plaintext: bytes, last: bool) -> bytes:
        """Exactly :data:`BLOB_CHUNK_SIZE` bytes of ciphertext for chunk ``index``."""
        if len(plaintext) > CHUNK_PLAINTEXT_SIZE:
            raise LocalError(f"chunk of {len(plaintext)} bytes exceeds {CHUNK_PLAINTEXT_SIZE}")
        if not last and len(plaintext) != CHUNK_PLAINTEXT_SIZE:
            raise LocalError("every chunk but the last must be full")
        nonce = _nonce(index, last)
        if index in self._used:
            raise LocalError(f"chunk {index} already encrypted under this key (nonce reuse)")
        self._used.add(index)
        body = (
            len(plaintext).to_bytes(_LEN_HEADER, "big")
            + plaintext
            + bytes(CHUNK_PLAINTEXT_SIZE - len(plaintext))
        )
        return self._aead.encrypt(nonce, body, _AAD)

    def decrypt_chunk(self, index: int, ciphertext: bytes, last: bool) -> bytes:
        """The file bytes of chunk ``index``.

        CryptoError if the chunk was altered, moved to another index, or its
        last-chunk flag does not match; DecodeError if an authentic chunk is
        malformed (a buggy sender).
        """
        if len(ciphertext) != BLOB_CHUNK_SIZE:
            raise CryptoError(f"chunk of {len(ciphertext)} bytes, expected {BLOB_CHUNK_SIZE}")
        try:
            body = self._aead.decrypt(_nonce(index, last), ciphertext, _AAD)
        except InvalidTag:
            raise CryptoError(f"chunk {index} does not decrypt (tampered or misplaced)") from None
        n = int.from_bytes(body[:_LEN_HEADER], "big")
        if n > CHUNK_PLAINTEXT_SIZE or (not last and n != CHUNK_PLAINTEXT_SIZE):
            raise DecodeError(f"chunk {index} has an invalid length {n}")
        if body[_LEN_HEADER + n :].count(0) != CHUNK_PLAINTEXT_SIZE - n:
            raise DecodeError(f"chunk {index} has non-zero fill")
        return body[_LEN_HEADER : _LEN_HEADER + n]


class CiphertextDigest:
    """Streaming SHA-256 over the encrypted chunks, in index order."""

    __slots__ = ("_chunks", "_hash")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._chunks = 0

    def update(self, chunk: bytes) -> None:
        if len(chunk) != BLOB_CHUNK_SIZE:
            raise LocalError("digest input must be whole encrypted chunks")
        self._hash.update(chunk)
        self._chunks += 1

    @property
    def chunks(self) -> int:
        return self._chunks

    def digest(self) -> bytes:
        return self._hash.digest()


def ciphertext_digest(chunks: Iterable[bytes]) -> bytes:
    """SHA-256 over the concatenated encrypted chunks (``File.ciphertext_digest``)."""
    d = CiphertextDigest()
    for chunk in chunks:
        d.update(chunk)
    return d.digest()


@dataclass(frozen=True, slots=True)
class EncryptedFile:
    key: bytes
    size: int
    chunks: tuple[bytes, ...]
    ciphertext_digest: bytes


def encrypt_file(data: bytes, rng: Rng) -> EncryptedFile:
    """Encrypt a whole in-memory file under a fresh key from ``rng``.

    Large files should be streamed with :class:`FileEncryptor` instead.
    """
    key = new_file_key(rng)
    enc = FileEncryptor(key)
    n = chunk_count(len(data))
    chunks = tuple(
        enc.encrypt_chunk(
            i, data[i * CHUNK_PLAINTEXT_SIZE : (i + 1) * CHUNK_PLAINTEXT_SIZE], i == n - 1
        )
        for i in range(n)
    )
    return EncryptedFile(key, len(data), chunks, ciphertext_digest(chunks))


def decrypt_file(key: bytes, chunks: Sequence[bytes], size: int, digest: bytes) -> bytes:
    """Check the digest, decrypt every chunk, and check the total size.

    CryptoError on a wrong digest, chunk count or any tampered chunk.
    """
    check_len(digest, DIGEST_LEN, "digest")
    if len(chunks) != chunk_count(size):
        raise CryptoError(f"{len(chunks)} chunks for a {size}-byte file")
    if ciphertext_digest(chunks) != digest:
        raise CryptoError("ciphertext digest does not match")
    enc = FileEncryptor(key)
    out = b"".join(enc.decrypt_chunk(i, c, i == len(chunks) - 1) for i, c in enumerate(chunks))
    if len(out) != size:
        raise DecodeError(f"decrypted {len(out)} bytes, expected {size}")
    return out
