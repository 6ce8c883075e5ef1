"""The SQLite relay backend's schema and the migrations from older ones.

Theory of operation
-------------------
* Schema 4 (current): ``messages`` WITHOUT ROWID keyed ``(mbox, seq)``,
  where ``mbox`` is the mailbox's *id*: a random 63-bit integer drawn when
  the mailbox is created (:func:`new_mailbox_id`), mapped from the 32-byte
  mailbox key by the ``mailboxes`` row.  An 8-byte integer instead of a
  32-byte key in every message row and index entry makes each post cheaper
  to store; drawn at random, never counted, so the ids record nothing of
  the order mailboxes were created in (a counter would link a user's inbox
  to the group mailbox made the next moment, SPEC §7.12).
* Nothing in the table orders one mailbox's messages against another's:
  there is no rowid; the UNIQUE ``(mbox, dkey)`` de-duplication index maps
  to the key ``(mbox, seq)``.  There is no expiry index (schema 3 had one):
  each post wrote an entry at a random place in it, and the expiry pass
  finds expired messages per mailbox instead, where they come first in seq
  order.  The dedup key is a column of its message's row, so it goes with
  the message (SPEC §7.12).
* A ``mailboxes`` row holds only what the messages cannot tell: keys,
  TTL, mode, and the head seq and expiry *as of the last time messages were
  removed* (an ack or an expiry pass) or the mailbox was (re-)created.  The
  storage derives the live head, count, bytes and expiry from the row plus
  the mailbox's messages (``MAX(seq)``, ``COUNT``, ``SUM(length)``,
  ``MAX(expires)``), so a post writes its message row and nothing else.
* Each migration runs in one transaction: a crash midway leaves the old
  schema whole, and the next start migrates again.  Rows are copied in key
  order, so the new table's pages say nothing of the old order; the old
  table's pages are zeroed as they are freed (``secure_delete``).  Schemas 1
  and 2 go to 3 in one transaction, then 3 to 4 in another.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

SCHEMA_VERSION = 4
MESSAGES = """
CREATE TABLE IF NOT EXISTS messages (
    mbox INTEGER NOT NULL, seq INTEGER NOT NULL, dkey BLOB NOT NULL,
    expires INTEGER NOT NULL, envelope BLOB NOT NULL, PRIMARY KEY (mbox, seq))
    WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_dkey ON messages (mbox, dkey);
"""
MAILBOXES = """
CREATE TABLE IF NOT EXISTS mailboxes (
    key BLOB PRIMARY KEY, id INTEGER NOT NULL UNIQUE, read_key BLOB NOT NULL,
    write_key BLOB NOT NULL, ttl INTEGER NOT NULL, expires INTEGER NOT NULL,
    head_seq INTEGER NOT NULL, mode INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
"""
SCHEMA = (
    MAILBOXES
    + MESSAGES
    + """
CREATE TABLE IF NOT EXISTS blobs (
    key BLOB PRIMARY KEY, upload_hash BLOB NOT NULL, read_hash BLOB NOT NULL,
    expires INTEGER NOT NULL, chunks INTEGER NOT NULL) WITHOUT ROWID;
"""
)

# Schema 3's messages table: keyed by the 32-byte mailbox key.
MESSAGES_V3 = """
CREATE TABLE IF NOT EXISTS messages (
    mbox BLOB NOT NULL, seq INTEGER NOT NULL, dkey BLOB NOT NULL,
    expires INTEGER NOT NULL, envelope BLOB NOT NULL, PRIMARY KEY (mbox, seq))
    WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_dkey ON messages (mbox, dkey);
CREATE INDEX IF NOT EXISTS messages_expires ON messages (expires);
"""
# Schema 1: messages WITHOUT ROWID keyed (mbox, seq) with a size column, and
# a separate dedup table whose key each message takes along.
MIGRATE_1_TO_3 = (
    """
BEGIN IMMEDIATE;
ALTER TABLE messages RENAME TO messages_v1;
DROP INDEX IF EXISTS messages_expires;
DROP INDEX IF EXISTS dedup_expires;
CREATE TABLE IF NOT EXISTS dedup (
    mbox BLOB NOT NULL, dkey BLOB NOT NULL, seq INTEGER NOT NULL,
    expires INTEGER NOT NULL, PRIMARY KEY (mbox, dkey)) WITHOUT ROWID;
CREATE INDEX dedup_v1_seq ON dedup (mbox, seq);
"""
    + MESSAGES_V3
    + """
INSERT INTO messages (mbox, seq, dkey, expires, envelope)
    SELECT m.mbox, m.seq, COALESCE(
        (SELECT d.dkey FROM dedup d WHERE d.mbox = m.mbox AND d.seq = m.seq LIMIT 1),
        randomblob(16)), m.expires, m.envelope
    FROM messages_v1 m ORDER BY m.mbox, m.seq;
DROP TABLE messages_v1;
DROP TABLE dedup;
PRAGMA user_version = 3;
COMMIT;
"""
)
# Schema 2 (never released; main ran it): the log, `id INTEGER PRIMARY KEY`
# with UNIQUE indexes messages_seq (mbox, seq) and messages_dkey (mbox, dkey)
# and messages_expires.  The ids are dropped with the table.
MIGRATE_2_TO_3 = (
    """
BEGIN IMMEDIATE;
ALTER TABLE messages RENAME TO messages_v2;
DROP INDEX IF EXISTS messages_seq;
DROP INDEX IF EXISTS messages_dkey;
DROP INDEX IF EXISTS messages_expires;
"""
    + MESSAGES_V3
    + """
INSERT INTO messages (mbox, seq, dkey, expires, envelope)
    SELECT mbox, seq, dkey, expires, envelope FROM messages_v2 ORDER BY mbox, seq;
DROP TABLE messages_v2;
PRAGMA user_version = 3;
COMMIT;
"""
)
# Schema 3 to 4: mailboxes get a random id (drawn here, in Python) and lose
# count and bytes (derived from the messages now); messages are re-keyed by
# that id.  The temporary key map is dropped inside the same transaction.
MIGRATE_3_TO_4_TABLES = (
    """
ALTER TABLE mailboxes RENAME TO mailboxes_v3;
ALTER TABLE messages RENAME TO messages_v3;
DROP INDEX IF EXISTS messages_dkey;
DROP INDEX IF EXISTS messages_expires;
"""
    + MAILBOXES
    + MESSAGES
)
MIGRATE_3_TO_4_ROWS = """
INSERT INTO mailboxes (key, id, read_key, write_key, ttl, expires, head_seq, mode)
    SELECT o.key, n.id, o.read_key, o.write_key, o.ttl, o.expires, o.head_seq, o.mode
    FROM mailboxes_v3 o JOIN temp.mailbox_ids n ON n.key = o.key ORDER BY o.key;
INSERT INTO messages (mbox, seq, dkey, expires, envelope)
    SELECT b.id, m.seq, m.dkey, m.expires, m.envelope
    FROM messages_v3 m JOIN mailboxes b ON b.key = m.mbox ORDER BY b.id, m.seq;
DROP TABLE messages_v3;
DROP TABLE mailboxes_v3;
DROP TABLE temp.mailbox_ids;
PRAGMA user_version = 4;
"""


def new_mailbox_id(taken: set[int] | None = None) -> int:
    """A random 63-bit mailbox id (never 0), not in ``taken``.  Random, not
    counted: a seized database must not tell which mailbox was created
    first (SPEC §7.12).  The caller retries if the database already holds
    it (one chance in 2**63 per mailbox)."""
    while True:
        mid = int.from_bytes(os.urandom(8), "big") >> 1
        if mid and (taken is None or mid not in taken):
            return mid


def migrate(db: sqlite3.Connection) -> None:
    """Bring an existing database up to :data:`SCHEMA_VERSION`, keeping every
    mailbox, message and blob (an operator's data dir opens after upgrade)."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "mailboxes" in tables:
        columns = {row[1] for row in db.execute("PRAGMA table_info(mailboxes)")}
        if "mode" not in columns:  # a database from before mailbox modes: all queues
            db.execute("ALTER TABLE mailboxes ADD COLUMN mode INTEGER NOT NULL DEFAULT 0")
    if "messages" in tables:
        columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
        script = None
        if "dkey" not in columns:  # schema 1
            script = MIGRATE_1_TO_3
        elif "id" in columns:  # schema 2: the rowid log
            script = MIGRATE_2_TO_3
        if script is not None:
            _in_transaction(db, lambda: db.executescript(script))
    if "mailboxes" in tables:
        columns = {row[1] for row in db.execute("PRAGMA table_info(mailboxes)")}
        if "id" not in columns:  # schema 3: mailboxes keyed only by their 32-byte key
            _in_transaction(db, lambda: _migrate_3_to_4(db))


def _migrate_3_to_4(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    keys = [k for (k,) in db.execute("SELECT key FROM mailboxes")]
    db.execute("CREATE TEMP TABLE mailbox_ids (key BLOB PRIMARY KEY, id INTEGER) WITHOUT ROWID")
    taken: set[int] = set()
    rows = []
    for key in keys:
        mid = new_mailbox_id(taken)
        taken.add(mid)
        rows.append((key, mid))
    db.executemany("INSERT INTO temp.mailbox_ids VALUES (?, ?)", rows)
    for statement in _statements(MIGRATE_3_TO_4_TABLES + MIGRATE_3_TO_4_ROWS):
        db.execute(statement)
    db.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """A script's statements, to run one by one inside the open transaction
    (``executescript`` would COMMIT it first)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def _in_transaction(db: sqlite3.Connection, step: Callable[[], object]) -> None:
    """Run ``step`` (which opens and commits its transaction); on any error
    roll back, so the old schema stays whole."""
    try:
        step()
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
