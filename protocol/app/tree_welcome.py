"""A Welcome whose ratchet tree travels once, as an encrypted blob (SPEC §4.1.1).

Theory of operation
-------------------
Posting the whole Welcome (ratchet tree in its GroupInfo) to each joiner's
inbox costs N times the tree for N joiners: 2.6 GB for a 1,000-member
post-quantum add-all.  Instead the committer builds the Welcome without the
tree (``Group.commit(..., welcome_tree=False)``), cuts it into one
single-entry Welcome per joiner (``split_welcome``), encrypts the new
epoch's ratchet tree once under ``MLS-Exporter("samizdat ratchet tree", "",
32)`` (:func:`tree_key`) with the attachment chunk format (SPEC §8.7),
uploads it as a blob, and posts to each joiner a :class:`TreeWelcome`: its
Welcome plus where the blob is.  A joiner derives the same key from its own
Welcome before it has the tree (``welcome_export``), downloads, checks the
ciphertext digest, decrypts, and joins with ``Group.join(...,
ratchet_tree=)``, which checks the tree against the GroupContext's tree hash
and the GroupInfo signature (RFC 9420 §12.4.3.1), so a wrong or stale tree
is refused.  No key travels: the blob is useless to the relay and to
anyone without a Welcome of that commit.

No I/O here: encoding, the key, chunk encryption and decryption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from protocol.app import (
    check_len,
    check_range,
    pull_opaque_max,
    pull_vector_max,
    push_fixed,
    push_opaque_max,
    push_vector_max,
)
from protocol.app.attachments import (
    CHUNK_PLAINTEXT_SIZE,
    FileEncryptor,
    chunk_count,
    ciphertext_digest,
    decrypt_file,
)
from protocol.app.messages import DIGEST_LEN, FILE_KEY_LEN, ChunkRef
from protocol.codec import Reader, Writer
from protocol.errors import DecodeError, LocalError
from protocol.mls.tree_structs import Struct

TREE_LABEL = "samizdat ratchet tree"
#: The exporter output's length: the attachment key size (SPEC §8.7).
TREE_KEY_LEN = FILE_KEY_LEN
#: A Welcome with one entry is a few KB; 1 MiB leaves room for any suite.
MAX_WELCOME_LEN = 1024 * 1024
#: The largest tree accepted: 16 MiB, about 6,000 post-quantum members.
MAX_TREE_SIZE = 16 * 1024 * 1024
MAX_TREE_CHUNKS = chunk_count(MAX_TREE_SIZE)


@dataclass(frozen=True, slots=True)
class TreeWelcome(Struct):
    """``struct { opaque welcome<V>; uint32 tree_size; ChunkRef chunks<V>;
    opaque ciphertext_digest[32]; } TreeWelcome;``"""

    welcome: bytes  # MLSMessage(Welcome), its GroupInfo without the ratchet tree
    tree_size: int  # bytes of the encoded ratchet tree (RFC 9420 §12.4.3.3)
    chunks: tuple[ChunkRef, ...]
    ciphertext_digest: bytes

    def __post_init__(self) -> None:
        check_range(len(self.welcome), 1, MAX_WELCOME_LEN, "welcome length")
        check_range(self.tree_size, 1, MAX_TREE_SIZE, "tree_size")
        check_len(self.ciphertext_digest, DIGEST_LEN, "ciphertext_digest")
        if len(self.chunks) != chunk_count(self.tree_size):
            raise LocalError("the number of chunks does not match tree_size")

    def encode(self, w: Writer) -> None:
        push_opaque_max(w, self.welcome, MAX_WELCOME_LEN, "welcome")
        w.push_uint32(self.tree_size)
        push_vector_max(w, self.chunks, _push_struct, MAX_TREE_CHUNKS, "chunks", min_count=1)
        push_fixed(w, self.ciphertext_digest, DIGEST_LEN, "ciphertext_digest")

    @classmethod
    def decode(cls, r: Reader) -> Self:
        welcome = pull_opaque_max(r, MAX_WELCOME_LEN, "welcome")
        size = r.pull_uint32()
        if not 1 <= size <= MAX_TREE_SIZE:
            raise DecodeError(f"tree_size {size} out of range")
        chunks = pull_vector_max(r, ChunkRef.decode, MAX_TREE_CHUNKS, "chunks", min_count=1)
        if len(chunks) != chunk_count(size):
            raise DecodeError("the number of chunks does not match tree_size")
        return cls(welcome, size, chunks, r.pull_bytes(DIGEST_LEN))


def _push_struct(w: Writer, item: ChunkRef) -> None:
    item.encode(w)


def encrypt_tree(key: bytes, tree: bytes) -> tuple[tuple[bytes, ...], bytes]:
    """The canonical ciphertext chunks of ``tree`` under ``key`` (attachment
    format, SPEC §8.7) and their digest.  ``key`` is used for this tree only."""
    check_len(key, TREE_KEY_LEN, "tree key")
    check_range(len(tree), 1, MAX_TREE_SIZE, "tree size")
    enc = FileEncryptor(key)
    n = chunk_count(len(tree))
    chunks = tuple(
        enc.encrypt_chunk(
            i, tree[i * CHUNK_PLAINTEXT_SIZE : (i + 1) * CHUNK_PLAINTEXT_SIZE], i == n - 1
        )
        for i in range(n)
    )
    return chunks, ciphertext_digest(chunks)


def decrypt_tree(key: bytes, body: TreeWelcome, chunks: Sequence[bytes]) -> bytes:
    """The ratchet tree from its canonical chunks: CryptoError if the digest,
    a chunk's tag or the chunk count is wrong; DecodeError on a wrong size."""
    return decrypt_file(key, chunks, body.tree_size, body.ciphertext_digest)
