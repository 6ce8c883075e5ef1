"""Schema 3 to 4: a relay database from before mailbox ids opens after the
upgrade and keeps every mailbox, message, de-duplication key and blob; a
migration that fails midway leaves schema 3 whole; and the state a post no
longer writes to its mailbox row (head seq, count, bytes, expiry) is
derived again after a restart, so no seq is reused and quotas still hold.

The old database is built with the exact SQL of schema 3 (messages
``WITHOUT ROWID`` keyed by the 32-byte mailbox key, and a mailbox row that
every post rewrote), as the relay before this change wrote it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from protocol.padding import BLOB_CHUNK_SIZE
from protocol.relay_frames import MODE_QUEUE, MODE_SHARED_LOG, QuotaExceeded, Unavailable
from relay.config import Limits
from relay.storage import sqlite_schema
from relay.storage.base import MAILBOX_ROW_COST, dedup_key, mailbox_key
from relay.storage.sqlite import SqliteStorage
from tests.relay_support import envelope

SCHEMA_3 = """
CREATE TABLE IF NOT EXISTS mailboxes (
    key BLOB PRIMARY KEY, read_key BLOB NOT NULL, write_key BLOB NOT NULL,
    ttl INTEGER NOT NULL, expires INTEGER NOT NULL, head_seq INTEGER NOT NULL,
    count INTEGER NOT NULL, bytes INTEGER NOT NULL, mode INTEGER NOT NULL DEFAULT 0)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    mbox BLOB NOT NULL, seq INTEGER NOT NULL, dkey BLOB NOT NULL,
    expires INTEGER NOT NULL, envelope BLOB NOT NULL, PRIMARY KEY (mbox, seq))
    WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_dkey ON messages (mbox, dkey);
CREATE INDEX IF NOT EXISTS messages_expires ON messages (expires);
CREATE TABLE IF NOT EXISTS blobs (
    key BLOB PRIMARY KEY, upload_hash BLOB NOT NULL, read_hash BLOB NOT NULL,
    expires INTEGER NOT NULL, chunks INTEGER NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 3;
"""
HOUR = 3600
NOW = 1_800_000_000

Box = tuple[bytes, int, list[bytes], list[tuple[int, bytes]]]


def _schema_3_database(path: Path) -> list[Box]:
    """Two mailboxes (a queue and a shared log) of three messages each; the
    queue's head is past its messages (two more were acked)."""
    expires = (NOW // HOUR + 24) * HOUR
    base = (NOW // HOUR) << 32
    boxes: list[Box] = []
    for mode in (MODE_QUEUE, MODE_SHARED_LOG):
        mid = os.urandom(32)
        rows = [(base + i + 1, envelope(b"v3 %d" % i)) for i in range(3)]
        boxes.append((mid, mode, [os.urandom(16) for _ in rows], rows))
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA_3)
        for mid, mode, msg_ids, rows in boxes:
            key = mailbox_key(mid)
            head = rows[-1][0] + (2 if mode == MODE_QUEUE else 0)
            db.execute(
                "INSERT INTO mailboxes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, b"r" * 32, b"w" * 32, 86400, expires, head, len(rows),
                 sum(len(e) for _, e in rows), mode),
            )  # fmt: skip
            for (seq, env), msg_id in zip(rows, msg_ids, strict=True):
                db.execute(
                    "INSERT INTO messages VALUES (?, ?, ?, ?, ?)",
                    (key, seq, dedup_key(mid, msg_id), expires, env),
                )
        db.execute(
            "INSERT INTO blobs VALUES (?, ?, ?, ?, ?)",
            (os.urandom(32), b"u" * 32, b"h" * 32, expires, 1),
        )
    finally:
        db.close()
    return boxes


def _dump(path: Path) -> dict[str, Any]:
    db = sqlite3.connect(path)
    try:
        return {
            "version": db.execute("PRAGMA user_version").fetchone(),
            "schema": sorted(db.execute("SELECT type, name, sql FROM sqlite_master").fetchall()),
            "rows": {
                t: sorted(db.execute(f"SELECT * FROM {t}").fetchall())
                for t in ("mailboxes", "messages", "blobs")
            },
        }
    finally:
        db.close()


async def test_schema_3_database_migrates_to_mailbox_ids(tmp_path: Path) -> None:
    boxes = _schema_3_database(tmp_path / "relay.sqlite3")
    store = SqliteStorage(tmp_path, Limits())
    await store.start()
    try:
        stored = sum(len(e) for *_, rows in boxes for _, e in rows)
        assert store.total == stored + 2 * MAILBOX_ROW_COST + BLOB_CHUNK_SIZE
        for mid, mode, msg_ids, rows in boxes:
            key = mailbox_key(mid)
            assert await store.fetch(key, 1, 100) == rows
            info = await store.get_mailbox(key)
            assert info is not None and info.mode == mode
            head = rows[-1][0] + (2 if mode == MODE_QUEUE else 0)
            assert info.head_seq == head  # the acked seqs are not handed out again
            # a retry of a message stored before the migration is a duplicate
            dup = await store.post(key, dedup_key(mid, msg_ids[1]), envelope(b"x"), NOW)
            assert dup == (rows[1][0], True)
            seq, was = await store.post(key, dedup_key(mid, os.urandom(16)), envelope(b"n"), NOW)
            assert not was and seq == head + 1
    finally:
        await store.close()
    db = sqlite3.connect(tmp_path / "relay.sqlite3")
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (4,)
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"mailboxes", "messages", "blobs"}
        columns = [row[1] for row in db.execute("PRAGMA table_info(mailboxes)")]
        assert "count" not in columns and "bytes" not in columns and "id" in columns
        ids = {k: i for k, i in db.execute("SELECT key, id FROM mailboxes")}
        assert all(isinstance(i, int) and 0 < i < 1 << 63 for i in ids.values())
        got = {m for (m,) in db.execute("SELECT DISTINCT mbox FROM messages")}
        assert got == set(ids.values())  # re-keyed by id: no 32-byte key per message
    finally:
        db.close()
    again = SqliteStorage(tmp_path, Limits())
    await again.start()
    try:
        for mid, mode, _, rows in boxes:
            got_rows = await again.fetch(mailbox_key(mid), 1, 100)
            head = rows[-1][0] + (2 if mode == MODE_QUEUE else 0)
            assert [s for s, _ in got_rows] == [s for s, _ in rows] + [head + 1]
    finally:
        await again.close()


async def test_migration_that_fails_midway_leaves_schema_3_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 3 to 4 migration is one transaction: an error after the tables
    were renamed and half the rows copied leaves the schema-3 file exactly as
    it was, and the next start migrates it."""
    path = tmp_path / "relay.sqlite3"
    boxes = _schema_3_database(path)
    before = _dump(path)
    broken = sqlite_schema.MIGRATE_3_TO_4_ROWS.replace(
        "DROP TABLE messages_v3;", "SELECT no_such_function();\nDROP TABLE messages_v3;"
    )
    assert broken != sqlite_schema.MIGRATE_3_TO_4_ROWS
    monkeypatch.setattr(sqlite_schema, "MIGRATE_3_TO_4_ROWS", broken)
    store = SqliteStorage(tmp_path, Limits())
    with pytest.raises(Unavailable, match="OperationalError"):
        await store.start()
    await store.close()
    assert _dump(path) == before
    monkeypatch.undo()
    store = SqliteStorage(tmp_path, Limits())
    await store.start()
    try:
        for mid, _, _, rows in boxes:
            assert await store.fetch(mailbox_key(mid), 1, 100) == rows
    finally:
        await store.close()


async def test_state_a_post_no_longer_writes_is_derived_after_restart(tmp_path: Path) -> None:
    """Posts write no mailbox row: after a restart (the first store is never
    closed, as after ``kill -9``) the head seq, count, bytes and quota come
    back from the messages, and an ack that emptied the mailbox kept the
    head in the row, so no seq is reused."""
    limits = Limits()
    limits.mailbox_max_messages = 8
    store = SqliteStorage(tmp_path, limits)
    await store.start()
    mid = os.urandom(32)
    key = mailbox_key(mid)
    seqs = []
    try:
        await store.create_mailbox(key, b"r" * 32, b"w" * 32, 86400, NOW)
        for i in range(6):
            seq, _ = await store.post(key, dedup_key(mid, b"%16d" % i), envelope(b"%d" % i), NOW)
            seqs.append(seq)
        total = store.total
        crashed = SqliteStorage(tmp_path, limits)  # as if the first had been killed
        await crashed.start()
        try:
            assert crashed.total == total
            info = await crashed.get_mailbox(key)
            assert info is not None and info.head_seq == seqs[-1]
            dup = await crashed.post(key, dedup_key(mid, b"%16d" % 2), envelope(b"2"), NOW)
            assert dup == (seqs[2], True)
            for i in (6, 7):
                seq, _ = await crashed.post(key, dedup_key(mid, b"%16d" % i), envelope(b"x"), NOW)
                seqs.append(seq)
            assert seqs == list(range(seqs[0], seqs[0] + 8))
            with pytest.raises(QuotaExceeded):  # the count came back from the messages
                await crashed.post(key, dedup_key(mid, b"%16d" % 8), envelope(b"x"), NOW)
            await crashed.ack(key, seqs[-1])  # empties the mailbox
            assert await crashed.fetch(key, 1, 100) == []
        finally:
            await crashed.close()
    finally:
        await store.close()
    again = SqliteStorage(tmp_path, limits)
    await again.start()
    try:
        assert again.total == MAILBOX_ROW_COST
        seq, was = await again.post(key, dedup_key(mid, b"%16d" % 9), envelope(b"y"), NOW)
        assert not was and seq == seqs[-1] + 1  # the head survived the empty mailbox
    finally:
        await again.close()
