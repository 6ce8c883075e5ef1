"""Size buckets and pad/unpad for everything a relay can see.

Every envelope a client posts and every blob chunk it uploads has one of the
sizes in :data:`BUCKETS`; a relay refuses anything else, so a careless client
cannot leak the exact length of a message.

Theory of operation
-------------------
Envelope buckets are the powers of two from 256 B to 64 KiB (nine sizes);
blob chunks have one fixed size, :data:`BLOB_CHUNK_SIZE` (256 KiB), so a file
leaks only its chunk count.  Against the anchors (BRIEF §4):

* SimpleX pads every block to 16,384 B: zero bits of length leak, but a
  200-byte chat line costs 80x its size and a 20 KiB message cannot fit a
  block at all.  Our 256 B floor covers a short MLS application message
  (≈ 150-250 B of framing and ciphertext) at 1-2x.
* Signal pads content to 80 B blocks: cheap (<= 79 B waste) but the block
  count reveals length at 80 B resolution (hundreds of distinguishable sizes
  for a long message).  Its 1.05^n attachment buckets waste <= 5 % yet leave
  ~240 distinguishable sizes between 1 KiB and 100 MiB.
* Powers of two cost at most 2x (about 1.4x on average for uniformly spread
  lengths) and reveal at most log2(9) ≈ 3.2 bits per envelope: short text,
  long text, MLS handshake (Commit/Welcome grows with the group), article.
  Envelopes above 64 KiB (a Welcome for a very large group, a long article)
  are split by the client or sent as blobs.

The padded layout is ``uint32 length || data || fill`` where ``fill`` is
zeros or random bytes from a caller-supplied rng; it is meant to be applied
to plaintext *before* encryption, with ``overhead`` set to the number of bytes
encryption and framing add, so that the final envelope lands exactly on a
bucket.  protocol/ takes no randomness of its own: pass ``rng`` or get zeros.
"""

from __future__ import annotations

from collections.abc import Callable

from protocol.errors import DecodeError, LocalError

#: Envelope sizes the relay accepts: 256 B .. 64 KiB, powers of two.
ENVELOPE_BUCKETS: tuple[int, ...] = tuple(1 << k for k in range(8, 17))
#: The fixed size of every uploaded blob chunk (SimpleX's middle file chunk).
BLOB_CHUNK_SIZE = 256 * 1024
#: Every size a relay-visible object may have.
BUCKETS: tuple[int, ...] = (*ENVELOPE_BUCKETS, BLOB_CHUNK_SIZE)
MAX_ENVELOPE_SIZE = ENVELOPE_BUCKETS[-1]

_HEADER = 4

Rng = Callable[[int], bytes]


def is_bucket_size(n: int) -> bool:
    """True if ``n`` is one of :data:`BUCKETS`."""
    return n in _BUCKET_SET


def is_envelope_size(n: int) -> bool:
    """True if ``n`` is one of :data:`ENVELOPE_BUCKETS`."""
    return n in _ENVELOPE_SET


def bucket_for(n: int, buckets: tuple[int, ...] = ENVELOPE_BUCKETS) -> int:
    """The smallest bucket that holds ``n`` bytes."""
    if n < 0:
        raise LocalError(f"negative size {n}")
    for size in buckets:
        if n <= size:
            return size
    raise LocalError(f"{n} bytes exceed the largest bucket ({buckets[-1]})")


def pad(
    data: bytes,
    rng: Rng | None = None,
    *,
    overhead: int = 0,
    buckets: tuple[int, ...] = ENVELOPE_BUCKETS,
) -> bytes:
    """Pad ``data`` so that ``len(result) + overhead`` is a bucket size.

    ``rng(n)`` supplies the fill bytes; ``None`` fills with zeros.
    """
    if overhead < 0:
        raise LocalError("overhead must be >= 0")
    total = bucket_for(_HEADER + len(data) + overhead, buckets) - overhead
    fill_len = total - _HEADER - len(data)
    fill = rng(fill_len) if rng is not None else bytes(fill_len)
    if len(fill) != fill_len:
        raise LocalError("rng returned the wrong number of bytes")
    return len(data).to_bytes(_HEADER, "big") + data + fill


def unpad(padded: bytes) -> bytes:
    """Inverse of :func:`pad`; raises :class:`DecodeError` on a bad header."""
    if len(padded) < _HEADER:
        raise DecodeError("padded data shorter than its header")
    n = int.from_bytes(padded[:_HEADER], "big")
    if n > len(padded) - _HEADER:
        raise DecodeError("padding length header exceeds the data")
    return padded[_HEADER : _HEADER + n]


_BUCKET_SET = frozenset(BUCKETS)
_ENVELOPE_SET = frozenset(ENVELOPE_BUCKETS)
