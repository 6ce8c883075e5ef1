"""An operator's existing relay database opens after the upgrade to the log
schema and keeps every mailbox, message, de-duplication key and blob.

The old database is built here with the exact SQL of schema 1 (messages
``WITHOUT ROWID`` keyed by ``(mbox, seq)`` with a size column, and a separate
``dedup`` table), as a relay before this change wrote it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from protocol.padding import BLOB_CHUNK_SIZE
from protocol.relay_frames import MODE_QUEUE
from relay.config import Limits
from relay.storage.base import MAILBOX_ROW_COST, dedup_key, mailbox_key
from relay.storage.sqlite import SqliteStorage
from tests.relay_support import envelope

SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS mailboxes (
    key BLOB PRIMARY KEY, read_key BLOB NOT NULL, write_key BLOB NOT NULL,
    ttl INTEGER NOT NULL, expires INTEGER NOT NULL, head_seq INTEGER NOT NULL,
    count INTEGER NOT NULL, bytes INTEGER NOT NULL, mode INTEGER NOT NULL DEFAULT 0)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    mbox BLOB NOT NULL, seq INTEGER NOT NULL, expires INTEGER NOT NULL,
    size INTEGER NOT NULL, envelope BLOB NOT NULL, PRIMARY KEY (mbox, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_expires ON messages (expires);
CREATE TABLE IF NOT EXISTS dedup (
    mbox BLOB NOT NULL, dkey BLOB NOT NULL, seq INTEGER NOT NULL,
    expires INTEGER NOT NULL, PRIMARY KEY (mbox, dkey)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_expires ON dedup (expires);
CREATE TABLE IF NOT EXISTS blobs (
    key BLOB PRIMARY KEY, upload_hash BLOB NOT NULL, read_hash BLOB NOT NULL,
    expires INTEGER NOT NULL, chunks INTEGER NOT NULL) WITHOUT ROWID;
"""
HOUR = 3600


def _old_database(path: Path, now: int) -> tuple[bytes, list[bytes], list[tuple[int, bytes]]]:
    """A schema-1 database with a queue of three messages (two more were
    acked, so their dedup rows are gone), as a relay before the log left it."""
    mid = os.urandom(32)
    key = mailbox_key(mid)
    expires = (now // HOUR + 24) * HOUR
    base = (now // HOUR) << 32
    msg_ids = [os.urandom(16) for _ in range(5)]
    rows = [(base + i + 1, envelope(b"old %d" % i)) for i in range(5)]
    kept = rows[2:]
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA_1)
        db.execute(
            "INSERT INTO mailboxes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                b"r" * 32,
                b"w" * 32,
                86400,
                expires,
                rows[-1][0],
                len(kept),
                sum(len(e) for _, e in kept),
                MODE_QUEUE,
            ),
        )
        for (seq, env), msg_id in zip(kept, msg_ids[2:], strict=True):
            db.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?)", (key, seq, expires, len(env), env)
            )
            db.execute(
                "INSERT INTO dedup VALUES (?, ?, ?, ?)", (key, dedup_key(mid, msg_id), seq, expires)
            )
        db.execute(
            "INSERT INTO blobs VALUES (?, ?, ?, ?, ?)",
            (os.urandom(32), b"u" * 32, b"h" * 32, expires, 1),
        )
    finally:
        db.close()
    return mid, msg_ids, kept


async def test_schema_1_database_opens_and_keeps_its_messages(tmp_path: Path) -> None:
    now = 1_800_000_000
    mid, msg_ids, kept = _old_database(tmp_path / "relay.sqlite3", now)
    key = mailbox_key(mid)
    store = SqliteStorage(tmp_path, Limits())
    await store.start()
    try:
        # every message is still there, in order, with its seq
        assert await store.fetch(key, 1, 100) == kept
        info = await store.get_mailbox(key)
        assert info is not None and info.head_seq == kept[-1][0]
        # the byte accounting counts what the old database held
        stored = sum(len(e) for _, e in kept)
        assert store.total == stored + MAILBOX_ROW_COST + BLOB_CHUNK_SIZE
        # a retry of a message stored before the upgrade is still a duplicate
        seq, dup = await store.post(key, dedup_key(mid, msg_ids[3]), envelope(b"x"), now)
        assert (seq, dup) == (kept[1][0], True)
        # the seqs of acked messages are not reused; new posts follow the head
        seq, dup = await store.post(key, dedup_key(mid, os.urandom(16)), envelope(b"new"), now)
        assert not dup and seq == kept[-1][0] + 1
        # acking still takes a message's dedup key with it (SPEC §7.12)
        await store.ack(key, kept[0][0])
        seq, dup = await store.post(key, dedup_key(mid, msg_ids[2]), envelope(b"again"), now)
        assert not dup and seq == kept[-1][0] + 2
    finally:
        await store.close()
    db = sqlite3.connect(tmp_path / "relay.sqlite3")
    try:
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"mailboxes", "messages", "blobs"}
        assert db.execute("PRAGMA user_version").fetchone() == (4,)  # keyed by mailbox id
    finally:
        db.close()
    # and the migrated database opens again as it is
    again = SqliteStorage(tmp_path, Limits())
    await again.start()
    try:
        got = await again.fetch(key, 1, 100)
        assert [s for s, _ in got] == [kept[1][0], kept[2][0], kept[2][0] + 1, kept[2][0] + 2]
    finally:
        await again.close()


# Schema 2, exactly as the relayperf branch (on main, never released) wrote
# it: the messages table was a rowid log whose id grew with every post.
SCHEMA_2 = """
CREATE TABLE IF NOT EXISTS mailboxes (
    key BLOB PRIMARY KEY, read_key BLOB NOT NULL, write_key BLOB NOT NULL,
    ttl INTEGER NOT NULL, expires INTEGER NOT NULL, head_seq INTEGER NOT NULL,
    count INTEGER NOT NULL, bytes INTEGER NOT NULL, mode INTEGER NOT NULL DEFAULT 0)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, mbox BLOB NOT NULL, seq INTEGER NOT NULL,
    dkey BLOB NOT NULL, expires INTEGER NOT NULL, envelope BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS messages_seq ON messages (mbox, seq);
CREATE UNIQUE INDEX IF NOT EXISTS messages_dkey ON messages (mbox, dkey);
CREATE INDEX IF NOT EXISTS messages_expires ON messages (expires);
CREATE TABLE IF NOT EXISTS blobs (
    key BLOB PRIMARY KEY, upload_hash BLOB NOT NULL, read_hash BLOB NOT NULL,
    expires INTEGER NOT NULL, chunks INTEGER NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 2;
"""


def _log_database(path: Path, now: int) -> list[tuple[bytes, list[bytes], list[tuple[int, bytes]]]]:
    """A schema-2 database with two queues of three messages each, posted
    interleaved (so the log's ids alternate between the mailboxes)."""
    expires = (now // HOUR + 24) * HOUR
    base = (now // HOUR) << 32
    boxes = []
    for _ in range(2):
        mid = os.urandom(32)
        rows = [(base + i + 1, envelope(b"log %d" % i)) for i in range(3)]
        boxes.append((mid, [os.urandom(16) for _ in rows], rows))
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA_2)
        for mid, _, rows in boxes:
            db.execute(
                "INSERT INTO mailboxes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    mailbox_key(mid),
                    b"r" * 32,
                    b"w" * 32,
                    86400,
                    expires,
                    rows[-1][0],
                    len(rows),
                    sum(len(e) for _, e in rows),
                    MODE_QUEUE,
                ),
            )
        for i in range(3):
            for mid, msg_ids, rows in boxes:
                seq, env = rows[i]
                db.execute(
                    "INSERT INTO messages (mbox, seq, dkey, expires, envelope) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (mailbox_key(mid), seq, dedup_key(mid, msg_ids[i]), expires, env),
                )
    finally:
        db.close()
    return boxes


async def test_schema_2_log_database_migrates_and_drops_its_order(tmp_path: Path) -> None:
    """A database main wrote with the rowid log (schema 2) opens, keeps every
    message and dedup key, and loses the ids that ordered mailboxes."""
    now = 1_800_000_000
    boxes = _log_database(tmp_path / "relay.sqlite3", now)
    store = SqliteStorage(tmp_path, Limits())
    await store.start()
    try:
        for mid, msg_ids, rows in boxes:
            key = mailbox_key(mid)
            assert await store.fetch(key, 1, 100) == rows
            # a retry of a message stored before the migration is a duplicate
            assert await store.post(key, dedup_key(mid, msg_ids[1]), envelope(b"x"), now) == (
                rows[1][0],
                True,
            )
            seq, dup = await store.post(key, dedup_key(mid, os.urandom(16)), envelope(b"n"), now)
            assert not dup and seq == rows[-1][0] + 1
        stored = sum(len(e) for _, _, rows in boxes for _, e in rows)
        assert store.total == stored + 2 * (len(envelope(b"n")) + MAILBOX_ROW_COST)
    finally:
        await store.close()
    db = sqlite3.connect(tmp_path / "relay.sqlite3")
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (4,)
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"mailboxes", "messages", "blobs"}
        indexes = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "messages_seq" not in indexes
        columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
        assert columns == ["mbox", "seq", "dkey", "expires", "envelope"]
        with pytest.raises(sqlite3.OperationalError):
            db.execute("SELECT rowid FROM messages").fetchall()
    finally:
        db.close()
    again = SqliteStorage(tmp_path, Limits())
    await again.start()
    try:
        for mid, _, rows in boxes:
            got = await again.fetch(mailbox_key(mid), 1, 100)
            assert [s for s, _ in got] == [s for s, _ in rows] + [rows[-1][0] + 1]
    finally:
        await again.close()
