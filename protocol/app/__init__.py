"""Samizdat's application layer: what travels inside and around MLS.

Modules (SPEC.md §8 describes every struct in the TLS presentation language):

* :mod:`protocol.app.messages` — ``AppMessage``, the application payload of an
  MLS PrivateMessage (text, articles, files, receipts, profiles, ...);
* :mod:`protocol.app.group_meta` — ``GroupMeta``, the conversation's name and
  relay list, held in a private GroupContext extension;
* :mod:`protocol.app.envelope` — what a client posts to a relay mailbox:
  bucket-padded, fragmented above 64 KiB, and the bounded ``Reassembler``;
* :mod:`protocol.app.invite` — invite links and safety numbers;
* :mod:`protocol.app.attachments` — per-file keys and fixed-size encrypted
  blob chunks.

This package module itself holds only the small codec helpers the submodules
share (bounded opaque fields, UTF-8 strings, fixed-size ids, bounded struct
vectors); it imports none of its submodules, so any of them may import it.
Helpers named ``pull_*`` raise :class:`~protocol.errors.DecodeError` on bad
input; helpers named ``push_*`` raise :class:`~protocol.errors.LocalError`
when the caller hands them a value that could never be decoded again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from protocol.codec import Reader, Writer
from protocol.errors import DecodeError, LocalError

T = TypeVar("T")

#: Randomness source: ``rng(n)`` returns ``n`` uniformly random bytes.
Rng = Callable[[int], bytes]

#: Longest relay URL accepted anywhere in the application layer.
MAX_URL_LEN = 2048
#: Longest relay download/upload token in a blob reference (relay MAX_TOKEN_LEN).
MAX_TOKEN_LEN = 256


def pull_opaque_max(r: Reader, max_len: int, what: str) -> bytes:
    """``opaque x<V>`` with at most ``max_len`` bytes."""
    data = r.pull_opaque()
    if len(data) > max_len:
        raise DecodeError(f"{what} is {len(data)} bytes, the limit is {max_len}")
    return data


def push_opaque_max(w: Writer, data: bytes, max_len: int, what: str) -> None:
    if len(data) > max_len:
        raise LocalError(f"{what} is {len(data)} bytes, the limit is {max_len}")
    w.push_opaque(data)


def pull_text(r: Reader, max_len: int, what: str, *, allow_empty: bool = True) -> str:
    """``opaque x<V>`` holding strict UTF-8 of at most ``max_len`` bytes."""
    data = pull_opaque_max(r, max_len, what)
    if not data and not allow_empty:
        raise DecodeError(f"{what} is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{what} is not valid UTF-8") from None


def push_text(w: Writer, text: str, max_len: int, what: str, *, allow_empty: bool = True) -> None:
    if not text and not allow_empty:
        raise LocalError(f"{what} is empty")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalError(f"{what} cannot be encoded as UTF-8") from None
    push_opaque_max(w, data, max_len, what)


def pull_url(r: Reader, what: str = "relay_url") -> str:
    return pull_text(r, MAX_URL_LEN, what, allow_empty=False)


def push_url(w: Writer, url: str, what: str = "relay_url") -> None:
    push_text(w, url, MAX_URL_LEN, what, allow_empty=False)


def push_fixed(w: Writer, value: bytes, n: int, what: str) -> None:
    """``opaque x[n]``: exactly ``n`` raw bytes, no length header."""
    check_len(value, n, what)
    w.push_bytes(value)


def check_len(value: bytes, n: int, what: str) -> None:
    if len(value) != n:
        raise LocalError(f"{what} must be {n} bytes, got {len(value)}")


def check_range(value: int, low: int, high: int, what: str) -> None:
    """LocalError unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise LocalError(f"{what} must be in [{low}, {high}], got {value}")


def pull_vector_max(
    r: Reader, pull_item: Callable[[Reader], T], max_count: int, what: str, *, min_count: int = 0
) -> tuple[T, ...]:
    """``T items<V>`` with between ``min_count`` and ``max_count`` items.

    The vector's byte length is bounded by the input, and every item consumes
    at least one byte, so decoding costs at most O(input) before the count
    check rejects an over-long vector.
    """
    items = tuple(r.pull_vector(pull_item))
    if not min_count <= len(items) <= max_count:
        raise DecodeError(f"{what} has {len(items)} item(s), allowed {min_count}..{max_count}")
    return items


def push_vector_max(
    w: Writer,
    items: Sequence[T],
    push_item: Callable[[Writer, T], None],
    max_count: int,
    what: str,
    *,
    min_count: int = 0,
) -> None:
    if not min_count <= len(items) <= max_count:
        raise LocalError(f"{what} has {len(items)} item(s), allowed {min_count}..{max_count}")
    w.push_vector(items, push_item)


def pull_fixed_ids(r: Reader, n: int, max_count: int, what: str) -> tuple[bytes, ...]:
    """``opaque ids[n]<V>``: a vector of ``n``-byte ids, at most ``max_count``."""
    data = r.pull_opaque()
    if len(data) % n:
        raise DecodeError(f"{what}: {len(data)} bytes is not a whole number of {n}-byte ids")
    if len(data) // n > max_count:
        raise DecodeError(f"{what} has {len(data) // n} ids, the limit is {max_count}")
    return tuple(data[i : i + n] for i in range(0, len(data), n))


def push_fixed_ids(w: Writer, ids: Iterable[bytes], n: int, max_count: int, what: str) -> None:
    ids = tuple(ids)
    if len(ids) > max_count:
        raise LocalError(f"{what} has {len(ids)} ids, the limit is {max_count}")
    for value in ids:
        check_len(value, n, what)
    w.push_opaque(b"".join(ids))


def random_bytes(rng: Rng, n: int, what: str) -> bytes:
    """``rng(n)``, checked: a short rng is a caller bug, never silent."""
    value = rng(n)
    if not isinstance(value, bytes) or len(value) != n:
        raise LocalError(f"rng returned the wrong number of bytes for {what}")
    return value
