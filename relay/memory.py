"""Giving memory back to the system after a burst of connections.

Theory of operation
-------------------
Thousands of connections (idle WebSockets, slow uploads: bench/abuse.py
scenario c) allocate their buffers, tasks and protocol objects from glibc's
heap, in the main arena and in the arenas of the worker threads
(``asyncio.to_thread``: spool files, SQLite).  When they close, Python frees
every object, but glibc keeps the freed pages mapped: the top of a heap is
returned only when it is free, and a single live allocation above the freed
region (a later connection's buffer) pins all of it.  The relay's RSS then
stayed at its peak (50 → 110 MB) although nothing held the memory.

:class:`Trimmer` watches the open-socket gauge; once it has fallen by
``drop`` sockets from its peak since the last trim, it calls glibc's
``malloc_trim(0)``, which releases the free pages of every arena
(``madvise(MADV_DONTNEED)``) wherever they lie.  It costs a walk of the
heap's free lists (milliseconds at 100 MB) at most once per ``interval``,
and only after a burst ended.  On a C library without ``malloc_trim`` (musl,
macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger("relay.memory")

SOCKETS_GAUGE = "samizdat_relay_sockets"


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def malloc_trim() -> bool:
    """Return free heap pages to the system; False where unsupported."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


def collect_and_trim() -> bool:
    """Free the cyclic garbage closed connections leave (aiohttp's protocol,
    transport and WebSocket objects refer to each other), then trim."""
    gc.collect()
    return malloc_trim()


class Trimmer:
    """Trims the heap once the open sockets fell by ``drop`` from their peak,
    and again at the next ``after`` looks: a closed socket's objects (its
    handler task, buffers, the WebSocket's closing handshake) are freed
    seconds after its descriptor."""

    def __init__(
        self,
        open_sockets: Callable[[], float],
        *,
        interval: float = 2.0,
        drop: int = 256,
        after: int = 5,
        trim: Callable[[], bool] = collect_and_trim,
    ) -> None:
        self.open_sockets = open_sockets
        self.interval = interval
        self.drop = drop
        self.after = after
        self.trim = trim
        self.peak = 0.0
        self.due = 0  # looks that still trim after the last drop
        self.trims = 0

    def check(self) -> bool:
        """One look at the gauge; True if it trimmed."""
        now = self.open_sockets()
        self.peak = max(self.peak, now)
        if self.peak - now >= self.drop:
            self.peak = now
            self.due = 1 + self.after
        if not self.due:
            return False
        self.due -= 1
        if self.trim():
            self.trims += 1
            return True
        return False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:  # never let housekeeping end the relay
                log.exception("malloc_trim failed")
