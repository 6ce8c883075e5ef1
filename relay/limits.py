"""Token buckets, per-IP limiters and the bounded per-connection send queue.

Theory of operation
-------------------
* A :class:`TokenBucket` holds at most ``burst`` tokens and refills at
  ``rate`` per second; ``take()`` succeeds while a token is left.  Time comes
  from an injected clock so tests need no sleeps.
* :class:`PerIpLimiter` keeps one bucket per client address in an LRU map of
  at most ``max_entries`` addresses (65,536 x ~200 B ≈ 13 MB worst case), so a
  flood of spoofed-looking sources cannot grow memory without bound; an
  evicted address simply starts again with a full bucket.
* :class:`SendQueue` bounds what a connection may owe its peer in both frames
  and bytes.  ``put()`` never blocks and never drops silently: it returns
  False when the bound would be exceeded, and the caller disconnects the slow
  consumer with a ``SlowConsumer`` error.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp", "_clock")

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self.stamp = clock()

    def take(self, n: float = 1.0) -> bool:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class PerIpLimiter:
    """One token bucket per address, in a bounded LRU map."""

    def __init__(
        self, rate: float, burst: int, clock: Clock = time.monotonic, max_entries: int = 65_536
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max = max_entries
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, ip: str, n: float = 1.0) -> bool:
        bucket = self._buckets.get(ip)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self._clock)
            self._buckets[ip] = bucket
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(ip)
        return bucket.take(n)

    def bucket(self, ip: str) -> TokenBucket:
        """The (shared) bucket of ``ip``, e.g. for a connection's frame budget."""
        self.take(ip, 0.0)
        return self._buckets[ip]


class ConnectionCounter:
    """Concurrent connections, in total and per address."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._per_ip: dict[str, int] = {}

    def acquire(self, ip: str) -> bool:
        if self.total >= self.max_total or self._per_ip.get(ip, 0) >= self.max_per_ip:
            return False
        self.total += 1
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        left = self._per_ip.get(ip, 1) - 1
        if left:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)


class Slots:
    """Concurrent holders of something scarce: in total, per address and,
    optionally, per key (e.g. one blob's upload capability).

    ``acquire`` answers which bound refused (``"total"``, ``"ip"`` or
    ``"key"``) or None when a slot was taken; every taken slot must be given
    back with ``release`` (same arguments).  The maps only hold addresses
    and keys that currently hold slots, so they are bounded by ``max_total``.
    """

    def __init__(self, max_total: int, max_per_ip: int, max_per_key: int | None = None) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.max_per_key = max_per_key
        self.total = 0
        self._per_ip: dict[str, int] = {}
        self._per_key: dict[bytes, int] = {}

    def acquire(self, ip: str, key: bytes | None = None) -> str | None:
        if self.total >= self.max_total:
            return "total"
        if self._per_ip.get(ip, 0) >= self.max_per_ip:
            return "ip"
        if key is not None and self.max_per_key is not None:
            if self._per_key.get(key, 0) >= self.max_per_key:
                return "key"
            self._per_key[key] = self._per_key.get(key, 0) + 1
        self.total += 1
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return None

    def release(self, ip: str, key: bytes | None = None) -> None:
        self.total -= 1
        _drop(self._per_ip, ip)
        if key is not None and self.max_per_key is not None:
            _drop(self._per_key, key)


def _drop(counts: dict[Any, int], k: Any) -> None:
    left = counts.get(k, 1) - 1
    if left > 0:
        counts[k] = left
    else:
        counts.pop(k, None)


class SendQueue:
    """A bounded FIFO of encoded frames owed to one peer."""

    __slots__ = ("max_frames", "max_bytes", "_items", "_bytes", "_ready", "_room", "closed")

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._items: deque[bytes] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put(self, data: bytes) -> bool:
        """Queue ``data``; False (nothing queued) when a bound would be exceeded."""
        if self.closed:
            return True
        if len(self._items) >= self.max_frames or self._bytes + len(data) > self.max_bytes:
            return False
        self._items.append(data)
        self._bytes += len(data)
        self._ready.set()
        if len(self._items) * 2 >= self.max_frames or self._bytes * 2 >= self.max_bytes:
            self._room.clear()
        return True

    def has_room_for(self, n_frames: int, n_bytes: int) -> bool:
        return (
            len(self._items) + n_frames <= self.max_frames
            and self._bytes + n_bytes <= self.max_bytes
        )

    async def wait_room(self) -> None:
        """Wait until the queue is at most half full."""
        await self._room.wait()

    async def get_batch(self) -> list[bytes]:
        """Everything queued (at least one frame), or [] once closed and empty."""
        while not self._items:
            if self.closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        batch = list(self._items)
        self._items.clear()
        self._bytes = 0
        self._room.set()
        return batch

    def abort(self, final: bytes) -> None:
        """Drop everything queued, queue ``final`` alone and close."""
        self._items.clear()
        self._items.append(final)
        self._bytes = len(final)
        self.close()

    def close(self) -> None:
        self.closed = True
        self._ready.set()
        self._room.set()
