"""Disappearing messages: the expiry schedule and the sweep that enforces it.

Theory of operation
-------------------
Every history entry with a disappearing timer (``expires_at_ms``) is written
together with one record in the ``expiry`` namespace, keyed by conversation
id and log sequence number, that says when it is due and which attachment
(a store file id) and delivery status go with it.  The sweep reads only that
schedule, never the history itself, so its cost grows with the number of
expiring messages, not with the size of the history, and nothing due is
missed because it lies outside the page a front end happened to read.

A due entry is deleted in one store transaction with its attachment's key
row (crypto-shredding its blocks, which are unlinked when the transaction
commits), its delivery status and its schedule record; the store then
checkpoints, so the rows leave the WAL too (SPEC §9).  The sweep runs when
the store is opened, on a timer while connected (every ``expiry_interval``
seconds at most, sooner when the next entry is due sooner), before reading
history, and before writing a backup.  Time comes from ``clock`` so tests
can move it.

Stores written before the schedule existed are scanned once, when opened,
and their expiring entries scheduled (config flag ``expiry-scheduled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from client.core import EngineCore
from client.model import NS_CONFIG, NS_CONVS, NS_EXPIRY, NS_STATUS, HistoryEntry, history_ns
from client.store import UnknownFile
from protocol.errors import SamizdatError

log = logging.getLogger(__name__)

EXPIRY_INTERVAL = 10.0  # seconds between sweeps at most, while connected
_SCHEDULED_FLAG = b"expiry-scheduled"


class Expiry(EngineCore):
    """History appends that schedule expiry, and the sweep."""

    #: seconds since the Unix epoch, the engine's one clock (the delivery
    #: watch reads it too); replaced in tests to move time
    clock: Callable[[], float] = staticmethod(time.time)
    expiry_interval: float = EXPIRY_INTERVAL
    _expiry_task: asyncio.Task[None] | None = None

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _append_history(self, conv_id: bytes, entry: HistoryEntry) -> int:
        """Append ``entry`` to the conversation's history and, if it expires,
        schedule it, in one transaction.  Returns its sequence number."""
        with self.store.transaction():
            seq = self.store.append(history_ns(conv_id), entry.to_json())
            if entry.expires_at_ms:
                self._schedule(conv_id, seq, entry)
        return seq

    def _schedule(self, conv_id: bytes, seq: int, entry: HistoryEntry) -> None:
        item = {
            "at": entry.expires_at_ms,
            "message_id": entry.message_id.hex(),
            "file_id": str(entry.file.get("file_id", "")),
        }
        self.store.put(NS_EXPIRY, conv_id + seq.to_bytes(8, "big"), json.dumps(item).encode())

    def expire_due(self) -> int:
        """Delete every history entry that is due, with its attachment and
        delivery status; returns how many were deleted."""
        now = self._now_ms()
        due = []
        for key, raw in self.store.items(NS_EXPIRY):
            item = json.loads(raw)
            if int(item["at"]) <= now:
                due.append((key, item))
        touched = set()
        for key, item in due:
            conv_id, seq = key[:-8], int.from_bytes(key[-8:], "big")
            with self.store.transaction():
                self.store.delete_log_entry(history_ns(conv_id), seq)
                if item["file_id"]:
                    # already gone is fine: deleting is all that was asked
                    with contextlib.suppress(UnknownFile):
                        self.store.delete_file(item["file_id"])
                if item["message_id"]:
                    self.store.delete(NS_STATUS, bytes.fromhex(item["message_id"]))
                self.store.delete(NS_EXPIRY, key)
            touched.add(conv_id)
        for conv_id in touched:
            self._emit("expired", conv_id)
        return len(due)

    def _next_due_ms(self) -> int | None:
        ats = [int(json.loads(raw)["at"]) for _, raw in self.store.items(NS_EXPIRY)]
        return min(ats) if ats else None

    def _prepare_expiry(self) -> None:
        """On open: schedule what an older store left unscheduled, then sweep."""
        if self.store.get(NS_CONFIG, _SCHEDULED_FLAG) is None:
            with self.store.transaction():
                for conv_id, _ in self.store.items(NS_CONVS):
                    for seq, raw in self.store.read_log(history_ns(conv_id)):
                        entry = HistoryEntry.from_json(raw)
                        if entry.expires_at_ms:
                            self._schedule(conv_id, seq, entry)
                self.store.put(NS_CONFIG, _SCHEDULED_FLAG, b"1")
        self.expire_due()

    async def connect(self) -> None:
        await super().connect()
        if self._expiry_task is None or self._expiry_task.done():
            task = asyncio.get_running_loop().create_task(self._expiry_loop())
            self._expiry_task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _expiry_loop(self) -> None:
        while not self._closing:
            try:
                self.expire_due()
                next_due = self._next_due_ms()
            except SamizdatError:
                log.exception("expiring messages failed; retrying")
                next_due = None
            delay = self.expiry_interval
            if next_due is not None:
                delay = min(delay, max(0.0, (next_due - self._now_ms()) / 1000))
            await asyncio.sleep(max(0.05, delay))
