"""The listening socket: a cap on open client sockets, and never a crash or a
log storm when file descriptors run out.

Theory of operation
-------------------
aiohttp is handed a listening socket whose ``accept()`` is ours; asyncio's
event loop calls it for every pending connection.

* Every accepted socket holds a slot of a :class:`~relay.limits.Slots`
  (in total and per address) until it is closed.  Beyond the socket budget
  the pending connection is accepted and closed at once: a clean refusal
  (the client sees the connection end before any byte) that costs no task,
  no buffer and no log line.  Half-sent requests therefore count: they hold
  a socket, and sockets are bounded.
* The budget is ``max_connections + max_requests`` sockets (WebSockets plus
  plain HTTP requests); per address ``max_connections_per_ip +
  max_requests_per_ip``, not enforced behind a proxy (``forwarded_for``),
  where every socket comes from the proxy.
* If ``accept()`` still fails for lack of descriptors (EMFILE/ENFILE, e.g.
  files opened elsewhere), a spare descriptor kept for that purpose is
  closed, the pending connection is accepted and closed, and the spare is
  taken again, so the backlog drains instead of spinning.  That is logged
  once, then at most once a minute with a count; never as a traceback
  (asyncio's own handler logged one per pending connection per loop turn).
* At start-up :func:`fit_descriptor_limit` raises the soft RLIMIT_NOFILE
  towards what the limits need (up to the hard limit); if that is not
  enough it lowers the limits to fit and says so in one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

from relay.config import Limits
from relay.limits import Slots
from relay.metrics import Metrics

log = logging.getLogger("relay")

# Descriptors the process needs besides client sockets and blob files: the
# interpreter, SQLite (database, WAL, shared memory), the log, the listener,
# the event loop, the spare, thread wake-up pipes; measured at about 12.
FD_RESERVE = 32
BACKLOG = 128
# A refused connection is closed inside accept(); at most this many per call.
REFUSE_BATCH = 64
# New connections admitted per turn of the event loop: asyncio accepts up to
# BACKLOG in one turn and runs every handshake's first steps before anything
# else, so a connection flood (2,000 WebSockets) stalled established readers
# for a second and more; a smaller batch lets their frames run in between.
ACCEPT_PER_TURN = 16
OUT_OF_FDS_LOG_INTERVAL = 60.0
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def descriptors_needed(lim: Limits) -> int:
    """Client sockets (WebSockets + HTTP requests), blob files, the reserve."""
    return lim.max_connections + 2 * lim.max_requests + FD_RESERVE


def fit_descriptor_limit(lim: Limits) -> str | None:
    """Make RLIMIT_NOFILE and ``lim`` agree; a one-line warning if the limits
    had to be lowered (the caller logs it), else None."""
    need = descriptors_needed(lim)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    room = max(2, soft - FD_RESERVE)
    before = (lim.max_connections, lim.max_requests)
    lim.max_requests = max(1, min(lim.max_requests, room // 8))
    lim.max_connections = max(1, min(lim.max_connections, room - 2 * lim.max_requests))
    lim.max_uploads = min(lim.max_uploads, lim.max_requests)
    lim.max_requests_per_ip = min(lim.max_requests_per_ip, lim.max_requests)
    lim.max_uploads_per_ip = min(lim.max_uploads_per_ip, lim.max_uploads)
    lim.max_connections_per_ip = min(lim.max_connections_per_ip, lim.max_connections)
    return (
        f"file descriptor limit {soft} is below the {need} the limits need: serving at most "
        f"{lim.max_connections} connections (was {before[0]}) and {lim.max_requests} "
        f"HTTP requests (was {before[1]}); raise 'ulimit -n' (LimitNOFILE=) to lift this"
    )


class _OutOfFds:
    """One log line when descriptors run out, then one a minute with a count."""

    def __init__(self) -> None:
        self.count = 0
        self._last = -OUT_OF_FDS_LOG_INTERVAL

    def note(self) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._last >= OUT_OF_FDS_LOG_INTERVAL:
            self._last = now
            log.error(
                "out of file descriptors: refusing new connections (%d so far); "
                "raise 'ulimit -n' or lower max_connections",
                self.count,
            )


class _ClientSocket(socket.socket):
    """An accepted socket that gives its slot back when closed."""

    __slots__ = ("_on_close",)

    _on_close: Callable[[], None] | None

    def close(self) -> None:
        self._release()
        super().close()

    def detach(self) -> int:
        self._release()
        return super().detach()

    def _release(self) -> None:
        on_close, self._on_close = getattr(self, "_on_close", None), None
        if on_close is not None:
            on_close()


class GuardedListener(socket.socket):
    """A listening socket whose ``accept()`` enforces the socket budget."""

    __slots__ = ("slots", "metrics", "spare", "out_of_fds", "turn_accepts")

    slots: Slots
    metrics: Metrics | None
    spare: int | None
    out_of_fds: _OutOfFds
    turn_accepts: int  # admitted in this turn of the event loop

    def accept(self) -> tuple[socket.socket, Any]:
        if self.turn_accepts >= ACCEPT_PER_TURN:
            # asyncio stops this turn's accept loop; the listener stays
            # readable, so the rest are accepted next turn, after the
            # callbacks already waiting (established connections' frames)
            raise BlockingIOError(errno.EAGAIN, "accept paced: next turn")
        for _ in range(REFUSE_BATCH):
            try:
                fd, addr = self._accept()  # type: ignore[attr-defined]
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self._shed(exc)
                raise
            ip = str(addr[0]) if isinstance(addr, tuple) and addr else "?"
            if self.slots.acquire(ip) is None:
                if not self.turn_accepts:
                    with contextlib.suppress(RuntimeError):  # no loop: not paced
                        asyncio.get_running_loop().call_soon(self._next_turn)
                        self.turn_accepts = 1
                else:
                    self.turn_accepts += 1
                sock = _ClientSocket(self.family, self.type, self.proto, fileno=fd)
                sock._on_close = _releaser(self.slots, ip, self.metrics)
                if self.metrics is not None:
                    self.metrics.inc("samizdat_relay_sockets")
                return sock, addr
            os.close(fd)  # over the budget: a clean refusal
            if self.metrics is not None:
                self.metrics.inc("samizdat_relay_sockets_refused_total")
        raise ConnectionAbortedError(errno.ECONNABORTED, "refused: over the socket budget")

    def _next_turn(self) -> None:
        self.turn_accepts = 0

    def _shed(self, exc: OSError) -> None:
        """Out of descriptors: refuse one pending connection using the spare.

        Raises ``ConnectionAbortedError`` when one was refused,
        ``BlockingIOError`` when none is pending, and ``exc`` itself when no
        spare could be had (asyncio then pauses accepting for a second; its
        report goes to :func:`quiet_accept_errors`)."""
        if self.spare is None:
            self.spare = _open_spare()
            if self.spare is None:
                raise exc
        os.close(self.spare)
        self.spare = None
        try:
            fd, _ = self._accept()  # type: ignore[attr-defined]
        except OSError:
            self.spare = _open_spare()
            raise
        os.close(fd)
        self.spare = _open_spare()
        self.out_of_fds.note()
        if self.metrics is not None:
            self.metrics.inc("samizdat_relay_sockets_refused_total")
        raise ConnectionAbortedError(errno.ECONNABORTED, "refused: out of descriptors") from exc

    def close(self) -> None:
        if getattr(self, "spare", None) is not None:
            assert self.spare is not None
            os.close(self.spare)
            self.spare = None
        super().close()


def _releaser(slots: Slots, key: str, metrics: Metrics | None) -> Callable[[], None]:
    def release() -> None:
        slots.release(key)
        if metrics is not None:
            metrics.dec("samizdat_relay_sockets")

    return release


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


def listen(
    host: str, port: int, lim: Limits, *, per_ip: bool = True, metrics: Metrics | None = None
) -> GuardedListener:
    """Bind and listen on ``host:port`` (its first address) with the budget of ``lim``."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = GuardedListener(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    total = lim.max_connections + lim.max_requests
    per_address = lim.max_connections_per_ip + lim.max_requests_per_ip
    sock.slots = Slots(total, per_address if per_ip else total)
    sock.metrics = metrics
    sock.spare = _open_spare()
    sock.out_of_fds = _OutOfFds()
    sock.turn_accepts = 0
    return sock


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, out_of_fds: _OutOfFds) -> None:
    """Route asyncio's "accept() out of system resource" reports (one traceback
    per pending connection per loop turn) to the rate-limited log line."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_FDS:
            out_of_fds.note()
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
