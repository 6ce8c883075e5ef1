"""Giving memory back to the system after a burst of connections.

Theory of operation
-------------------
Thousands of connections (idle WebSockets, slow uploads: bench/abuse.py
scenario c) cost about 30 KB each.  When they closed, the relay's RSS
stayed at its peak (50 → 110 MB) although nothing used the memory any
more, for three reasons, measured on a relay process:

* aiohttp's protocol, transport and WebSocket objects of a closed
  connection refer to each other: they are freed only when the cyclic
  garbage collector's oldest generation runs, which may be much later;
* Python's small-object allocator (pymalloc) keeps each 1 MiB arena mapped
  while one object in it lives: after the burst, 58 arenas stayed mapped
  for about 2,000 more live objects than before it (module state created
  on first use, limiter entries);
* glibc keeps freed pages mapped unless they are at the top of a heap.

So ``samizdat-relay serve`` runs on the C allocator (``PYTHONMALLOC=malloc``,
relay/cli.py) and :class:`Trimmer` frees both of the others.

:class:`Trimmer` watches the open-socket gauge; once it has fallen by
``drop`` sockets and to at most half of its peak since the last trim (a
burst ended: not while thousands of connections are still open), it
collects Python's cyclic garbage and calls glibc's
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


#: The young generation's threshold of the cyclic garbage collector in the
#: relay process (Python's default: 700).  A full collection walks every live
#: object: with 2,000 connections open it paused the event loop for 0.24 to
#: 1.04 s, five times in the first 11 s of a connection flood, and every
#: reader's deliveries waited (bench/abuse.py scenario c).  With 10,000 (and
#: the default 10, 10 above it) the same flood caused two young-generation
#: collections of ~0.2 s and no full one; a full collection comes after
#: about a million more container objects than were freed, or from the
#: :class:`Trimmer` once a burst of sockets closed.
GC_THRESHOLD0 = 10_000


def tune_gc() -> None:
    """Collect cyclic garbage less often in the relay process (see
    :data:`GC_THRESHOLD0`); called by ``samizdat-relay serve`` only."""
    _, t1, t2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD0, t1, t2)


def collect_and_trim() -> bool:
    """Free the cyclic garbage closed connections leave (aiohttp's protocol,
    transport and WebSocket objects refer to each other), then trim."""
    gc.collect()
    return malloc_trim()


class Trimmer:
    """Trims the heap once the open sockets fell by ``drop`` and to at most
    half of their peak, and again at the next ``after`` looks: a closed socket's objects (its
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
        # a burst that ended (at most half of the peak left), not a level that
        # wobbles: a collection with thousands of connections open would
        # stall the event loop for nothing while they still hold their memory
        if self.peak - now >= self.drop and now <= self.peak / 2:
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
