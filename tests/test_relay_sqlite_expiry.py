"""The SQLite expiry pass without an expiry index (schema 4).

Each post used to write an entry in a ``messages (expires)`` index too; the
pass now walks the mailboxes in slices and deletes, per mailbox, the
messages whose expiry has passed (they come first in seq order).  These
tests pin what it must still do exactly: delete every expired message and
nothing else, across more mailboxes than one slice, keep the head so seqs
are not reused, keep the byte accounting, and let an idle mailbox go only
when its own expiry has passed and it holds no message.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from relay.config import Limits
from relay.storage import sqlite as sqlite_backend
from relay.storage.base import MAILBOX_ROW_COST, dedup_key, expiry_bucket, mailbox_key
from relay.storage.sqlite import SqliteStorage
from tests.relay_support import envelope

HOUR = 3600
NOW = 1_800_000_000 // HOUR * HOUR  # the start of an hour
TTL = 2 * HOUR


async def test_expiry_pass_deletes_exactly_what_expired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "SWEEP", 3)  # 10 mailboxes: four slices
    store = SqliteStorage(tmp_path, Limits())
    await store.start()
    try:
        boxes = [os.urandom(32) for _ in range(10)]
        heads: dict[bytes, int] = {}
        for i, mid in enumerate(boxes):
            key = mailbox_key(mid)
            await store.create_mailbox(key, b"r" * 32, b"w" * 32, TTL, NOW)
            # even mailboxes: two posts an hour apart; odd ones: idle, or
            # (i == 9) one post three hours later
            times = [NOW, NOW + HOUR] if i % 2 == 0 else ([NOW + 3 * HOUR] if i == 9 else [])
            for t in times:
                seq, _ = await store.post(key, dedup_key(mid, os.urandom(16)), envelope(), t)
                heads[key] = seq
        total = store.total
        first = expiry_bucket(NOW, TTL)  # the NOW posts and the idle mailboxes
        assert await store.expire(first - 1) == 0
        # five first messages, four idle mailboxes (not 9: its post is later)
        assert await store.expire(first) == 5 + 4
        assert store.total == total - 5 * len(envelope()) - 4 * MAILBOX_ROW_COST
        for i, mid in enumerate(boxes):
            key = mailbox_key(mid)
            info = await store.get_mailbox(key)
            if i % 2 == 1 and i != 9:
                assert info is None
                continue
            assert info is not None and info.head_seq == heads[key]
            got = await store.fetch(key, 1, 100)
            assert [s for s, _ in got] == [heads[key]]
        second = expiry_bucket(NOW + HOUR, TTL)
        assert await store.expire(second) == 5 + 5  # the last messages, then their mailboxes
        assert await store.expire(expiry_bucket(NOW + 3 * HOUR, TTL)) == 2  # box 9, then itself
        assert store.mailboxes == 0 and store.total == 0
    finally:
        await store.close()


async def test_expired_messages_leave_the_head_in_the_row(tmp_path: Path) -> None:
    """A mailbox kept alive by a re-create loses its expired messages; the
    next post (after a restart, in the same hour's numbering) follows the
    old head instead of reusing its seqs."""
    store = SqliteStorage(tmp_path, Limits())
    await store.start()
    mid = os.urandom(32)
    key = mailbox_key(mid)
    try:
        await store.create_mailbox(key, b"r" * 32, b"w" * 32, TTL, NOW)
        seqs = [
            (await store.post(key, dedup_key(mid, os.urandom(16)), envelope(), NOW))[0]
            for _ in range(3)
        ]
        # re-created at the end of its life: the mailbox outlives its messages
        later = expiry_bucket(NOW, TTL)
        await store.create_mailbox(key, b"r" * 32, b"w" * 32, TTL, later)
        assert await store.expire(later) == 3
        assert await store.fetch(key, 1, 100) == []
    finally:
        await store.close()
    again = SqliteStorage(tmp_path, Limits())
    await again.start()
    try:
        # a clock still in NOW's hour would hand out seqs[0] again without the row
        seq, dup = await again.post(key, dedup_key(mid, os.urandom(16)), envelope(), NOW)
        assert not dup and seq == seqs[-1] + 1
    finally:
        await again.close()


async def test_no_expiry_index(tmp_path: Path) -> None:
    """Schema 4 keeps no ``messages (expires)`` index: nothing for a post to
    write beyond its row and its dedup entry."""
    store = SqliteStorage(tmp_path, Limits())
    await store.start()
    await store.close()
    db = sqlite3.connect(tmp_path / "relay.sqlite3")
    try:
        indexed = {
            (table, name)
            for (table, name) in db.execute(
                "SELECT tbl_name, name FROM sqlite_master WHERE type='index'"
            )
        }
    finally:
        db.close()
    on_messages = {name for table, name in indexed if table == "messages"}
    assert on_messages == {"messages_dkey"}, on_messages
