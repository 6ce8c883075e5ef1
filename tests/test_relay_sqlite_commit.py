"""Group commit acknowledges nothing that its COMMIT did not make durable.

``test_acknowledged_posts_survive_kill_9`` (tests/test_relay_process.py) kills
a real relay with SIGKILL in the middle of traffic; it catches a relay that
answers ``Posted`` before its COMMIT only when the kill lands inside that
window, which a fast disk makes narrow.  Here the COMMIT of a batch fails
outright (a full or failing disk), deterministically: every post of the
batch must be refused ``Unavailable``, none published live, none stored.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

import pytest

from protocol.relay_frames import Unavailable
from relay.config import Limits
from relay.storage.base import dedup_key, mailbox_key
from relay.storage.sqlite import SqliteStorage
from tests.relay_support import envelope


class _FailingCommit:
    """The storage thread's connection, except that COMMIT fails."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_a_batch_whose_commit_fails_acknowledges_nothing(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path, Limits())
    await store.start()
    try:
        now = int(time.time())
        mid = os.urandom(32)
        key = mailbox_key(mid)
        await store.create_mailbox(key, b"r" * 32, b"w" * 32, 86400, now)
        live: list[int] = []
        store.hub.subscribe(key, mid, 1, lambda seq, frame: live.append(seq))
        total = store.total
        run_batch = store._run_batch
        failing = lambda db, batch: run_batch(cast(Any, _FailingCommit(db)), batch)  # noqa: E731
        setattr(store, "_run_batch", failing)  # noqa: B010
        posts = [
            store.post_nowait(key, dedup_key(mid, os.urandom(16)), envelope(b"%d" % i), now)
            for i in range(20)
        ]  # made in one loop iteration: one batch, one COMMIT
        results = await asyncio.gather(*posts, return_exceptions=True)
        assert all(isinstance(r, Unavailable) for r in results), results
        assert live == [] and store.total == total
        setattr(store, "_run_batch", run_batch)  # noqa: B010
        assert await store.fetch(key, 1, 100) == []
        # the storage works again once the disk does, from a clean state
        seq, dup = await store.post(key, dedup_key(mid, b"m" * 16), envelope(b"ok"), now)
        assert not dup and live == [seq]
        assert [s for s, _ in await store.fetch(key, 1, 100)] == [seq]
    finally:
        await store.close()


@pytest.mark.parametrize("duplicate_in_batch", [False, True])
async def test_retries_in_one_batch_store_once(tmp_path: Path, duplicate_in_batch: bool) -> None:
    """The dedup key folded into the log: a retry of a msg_id answers the
    first seq, whether it comes in the same batch or a later one."""
    store = SqliteStorage(tmp_path, Limits())
    await store.start()
    try:
        now = int(time.time())
        mid = os.urandom(32)
        key = mailbox_key(mid)
        await store.create_mailbox(key, b"r" * 32, b"w" * 32, 86400, now)
        dkey = dedup_key(mid, b"x" * 16)
        first = store.post_nowait(key, dkey, envelope(b"a"), now)
        if not duplicate_in_batch:
            await first
        again = store.post_nowait(key, dkey, envelope(b"a"), now)
        (seq, dup), (seq2, dup2) = await first, await again
        assert (dup, dup2) == (False, True) and seq2 == seq
        assert [s for s, _ in await store.fetch(key, 1, 100)] == [seq]
    finally:
        await store.close()
