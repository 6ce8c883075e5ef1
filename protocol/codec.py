"""The TLS presentation-language codec of RFC 9420 §2.1, strict.

One reader and one writer serve every wire struct in Samizdat: MLS messages,
envelopes and relay frames.  Codecs come in pairs, ``pull_x(reader)`` /
``push_x(writer, x)`` or ``X.decode(reader)`` / ``x.encode(writer)``.

Strictness (the reason this module exists rather than ad hoc ``struct`` calls):

* variable-size vectors carry the MLS varint length header (RFC 9420 §2.1.2):
  the two high bits of the first byte give the header size (1, 2 or 4 bytes);
  the prefix ``0b11`` (an 8-byte header) is rejected, and so is any length
  that was not encoded in the fewest bytes possible;
* a length may never run past the end of the input, so no allocation is ever
  sized by an attacker-controlled number;
* :func:`decode_exact` rejects trailing bytes;
* anything malformed raises :class:`~protocol.errors.DecodeError` and nothing
  else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from protocol.errors import DecodeError

T = TypeVar("T")

# Largest length a varint header can carry: 30 bits (RFC 9420 §2.1.2).
MAX_VARINT = (1 << 30) - 1


class Reader:
    """A cursor over immutable bytes that reads TLS-PL values."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._end = len(self._data)

    @property
    def position(self) -> int:
        """Bytes consumed so far (for :meth:`bytes_since`)."""
        return self._pos

    def bytes_since(self, start: int) -> bytes:
        """The bytes consumed since :attr:`position` was ``start``."""
        return self._data[start : self._pos]

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def eof(self) -> bool:
        return self._pos >= self._end

    def finish(self) -> None:
        """Fail unless every byte was consumed."""
        if self._pos != self._end:
            raise DecodeError(f"{self._end - self._pos} trailing byte(s)")

    def pull_bytes(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        if n < 0 or end > self._end:
            raise DecodeError(f"need {n} byte(s), {self._end - pos} left")
        self._pos = end
        return self._data[pos:end]

    def _pull_int(self, n: int) -> int:
        return int.from_bytes(self.pull_bytes(n), "big")

    def pull_uint8(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise DecodeError(f"need 1 byte(s), {self._end - pos} left")
        self._pos = pos + 1
        return self._data[pos]

    def pull_uint16(self) -> int:
        return self._pull_int(2)

    def pull_uint32(self) -> int:
        return self._pull_int(4)

    def pull_uint64(self) -> int:
        return self._pull_int(8)

    def pull_bool(self) -> bool:
        v = self.pull_uint8()
        if v > 1:
            raise DecodeError(f"invalid boolean {v}")
        return v == 1

    def pull_varint(self) -> int:
        """A variable-length integer header (RFC 9420 §2.1.2), minimal only."""
        first = self.pull_uint8()
        prefix = first >> 6
        if prefix == 0:  # the common case: a length below 64
            return first
        if prefix == 3:
            raise DecodeError("8-byte varint prefix is not allowed in MLS")
        size = 1 << prefix
        value = first & 0x3F
        for _ in range(size - 1):
            value = (value << 8) | self.pull_uint8()
        if size > 1 and value < (1 << (8 * (size >> 1) - 2)):
            raise DecodeError("varint not minimally encoded")
        return value

    def pull_opaque(self) -> bytes:
        """``opaque data<V>``: a varint length, then that many bytes."""
        return self.pull_bytes(self.pull_varint())

    def pull_opaques(self) -> list[bytes]:
        """Every remaining byte as consecutive ``opaque<V>`` values.

        The same strictness as :meth:`pull_opaque` in a loop, with the common
        one-byte length header read inline: large vectors of small items (a
        path's ciphertexts for a whole group) decode several times faster."""
        data, end = self._data, self._end
        out: list[bytes] = []
        pos = self._pos
        while pos < end:
            n = data[pos]
            if n < 64:
                pos += 1
                stop = pos + n
                if stop > end:
                    self._pos = pos
                    raise DecodeError(f"need {n} byte(s), {end - pos} left")
                out.append(data[pos:stop])
                pos = stop
            else:
                self._pos = pos
                out.append(self.pull_opaque())
                pos = self._pos
        self._pos = pos
        return out

    def pull_vector(self, pull_item: Callable[[Reader], T]) -> list[T]:
        """``T items<V>``: a varint byte length, then items filling it exactly."""
        sub = Reader(self.pull_opaque())
        items: list[T] = []
        while not sub.eof():
            items.append(pull_item(sub))
        return items

    def pull_optional(self, pull_item: Callable[[Reader], T]) -> T | None:
        """``optional<T>``: a presence byte (0 or 1), then T if present."""
        if self.pull_bool():
            return pull_item(self)
        return None


class Writer:
    """Accumulates TLS-PL encoded values."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._parts)

    def push_bytes(self, data: bytes) -> None:
        self._parts += data

    def _push_int(self, value: int, n: int) -> None:
        if not 0 <= value < (1 << (8 * n)):
            raise ValueError(f"{value} does not fit in uint{8 * n}")
        self._parts += value.to_bytes(n, "big")

    def push_uint8(self, value: int) -> None:
        self._push_int(value, 1)

    def push_uint16(self, value: int) -> None:
        self._push_int(value, 2)

    def push_uint32(self, value: int) -> None:
        self._push_int(value, 4)

    def push_uint64(self, value: int) -> None:
        self._push_int(value, 8)

    def push_bool(self, value: bool) -> None:
        self._parts.append(1 if value else 0)

    def push_varint(self, value: int) -> None:
        self._parts += encode_varint(value)

    def push_opaque(self, data: bytes) -> None:
        n = len(data)
        if n < 64:
            self._parts.append(n)
        else:
            self._parts += encode_varint(n)
        self._parts += data

    def push_vector(self, items: Iterable[T], push_item: Callable[[Writer, T], None]) -> None:
        sub = Writer()
        for item in items:
            push_item(sub, item)
        self.push_opaque(sub.getvalue())

    def push_optional(self, item: T | None, push_item: Callable[[Writer, T], None]) -> None:
        if item is None:
            self.push_bool(False)
        else:
            self.push_bool(True)
            push_item(self, item)


def encode_varint(value: int) -> bytes:
    """Minimal MLS varint encoding (RFC 9420 §2.1.2)."""
    if value < 0 or value > MAX_VARINT:
        raise ValueError(f"varint out of range: {value}")
    if value < 1 << 6:
        return value.to_bytes(1, "big")
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    return (value | 0x8000_0000).to_bytes(4, "big")


def decode_exact(data: bytes, pull: Callable[[Reader], T]) -> T:
    """Decode one value that must span ``data`` exactly."""
    reader = Reader(data)
    value = pull(reader)
    reader.finish()
    return value


def encode_with(push: Callable[[Writer], None]) -> bytes:
    writer = Writer()
    push(writer)
    return writer.getvalue()


def opaque(data: bytes) -> bytes:
    """``data`` as a varint-prefixed ``opaque<V>`` (handy for label structs)."""
    return encode_varint(len(data)) + data
