"""The embedded default backend: SQLite in WAL mode, plus blob chunk files.

Theory of operation
-------------------
* One dedicated thread owns the one SQLite connection; the event loop never
  blocks on SQLite.  Requests go to the thread through a queue; the thread
  takes every request waiting (up to :data:`BATCH`) and commits them in one
  transaction: group commit, one fsync for the whole batch.  Only after that
  COMMIT returns does any caller get its result, so a ``Posted`` frame is
  never sent for a message that a crash could lose.
* Invariant: an operation that raises a relay error (a refusal) leaves the
  database as it found it, so a refusal never half-applies.  Any other error
  rolls back the whole batch, and every request in it is answered
  ``Unavailable``.
* The thread caches each mailbox's state (TTL, head seq, count, bytes,
  expiry, write key, id, mode; :meth:`_load`), derived from its row and its
  messages, so a post writes its message row and no mailbox row.  A row is
  written only for what the messages cannot tell: create, a refresh, a
  rotated write key, and the head and expiry before an ack or an expiry
  pass removes the messages that told them.  A run of posts costs two
  statements whatever its length (:meth:`_run_posts`).
* Messages are keyed by mailbox id (schema 4, :mod:`relay.storage.sqlite_schema`):
  a random 63-bit integer per mailbox, with no rowid, so nothing in the
  table orders one mailbox's messages against another's, nor one mailbox's
  creation against another's.  The dedup key is a column of the message
  row (no second table to write), and there is no expiry index: the expiry
  pass walks the mailboxes (:meth:`_sweep`).
  A second thread checkpoints the WAL into the database with its own
  connection (PASSIVE, never blocking the writer), so a COMMIT writes and
  fsyncs only the WAL.
* ``journal_mode=WAL`` with ``synchronous=FULL`` (the default) fsyncs the WAL
  at every commit, so an acknowledged post survives ``kill -9`` and power
  loss.  ``NORMAL`` survives a process kill but not power loss; it is offered
  for operators who accept that (SPEC.md §7, "Durability").
* Results come back to the loop in one ``call_soon_threadsafe`` per batch, in
  commit order, and new messages are published to the hub there, so live
  pushes are in sequence order.
* ``total`` tracks the bytes of envelopes and blob chunks held, plus
  :data:`MAILBOX_ROW_COST` per mailbox, checked against ``total_max_bytes``
  before every write; ``mailboxes`` counts mailbox rows against
  ``max_mailboxes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.padding import BLOB_CHUNK_SIZE
from protocol.relay_frames import (
    MODE_QUEUE,
    MODE_SHARED_LOG,
    MailboxExists,
    NotAuthorized,
    QuotaExceeded,
    RelayError,
    StorageFull,
    Unavailable,
    UnknownMailbox,
)
from relay.config import Limits
from relay.storage.base import (
    MAILBOX_ROW_COST,
    BlobMeta,
    LiveHub,
    MailboxInfo,
    Storage,
    blob_key,
    expiry_bucket,
    next_seq,
)
from relay.storage.sqlite_schema import SCHEMA, SCHEMA_VERSION, migrate, new_mailbox_id

BATCH = 512
LOOKUP = 128
SWEEP = 4096  # mailboxes per request of an expiry pass
MAX_CACHED = 50_000
CACHE_KIB = 32 * 1024  # SQLite page cache: the indexes' hot pages stay in memory
CHECKPOINT_INTERVAL = 0.25  # seconds between the checkpointer's passes
BACKSTOP_PAGES = 16_384  # WAL pages (64 MiB) past which the writer checkpoints itself


@dataclass(frozen=True, slots=True)
class _PostOp:
    key: bytes
    dkey: bytes
    envelope: bytes
    now: int
    write_key: bytes | None


_Done = tuple[asyncio.Future[Any], Any, BaseException | None, Callable[[Any], None] | None]


class SqliteStorage(Storage):
    def __init__(self, data_dir: Path, limits: Limits, synchronous: str = "FULL") -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / "relay.sqlite3"
        self.blob_dir = self.data_dir / "blobs"
        self.spool_dir = self.data_dir / "spool"
        self.limits = limits
        self.synchronous = synchronous
        self.hub = LiveHub()
        self.total = 0
        self.mailboxes = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outbox: list[Any] = []
        # Owned by the SQLite thread: each cached mailbox's state (_load).
        self._mbx: dict[bytes, list[Any]] = {}
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db: sqlite3.Connection | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        for d in (self.data_dir, self.blob_dir, self.spool_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in self.spool_dir.iterdir():
            stale.unlink(missing_ok=True)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="relay-sqlite", daemon=True)
        self._thread.start()
        await self._call(self._open)
        self._stop.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint, name="relay-sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()

    async def close(self) -> None:
        if self._thread is None:
            return
        self._submit()
        self._queue.put(None)
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 10)
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join, 10)
            self._checkpointer = None
        self._thread = None

    def _open(self, db: sqlite3.Connection | None) -> None:
        db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute("PRAGMA secure_delete=ON")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        # The checkpointer thread copies the WAL into the database off the
        # commit path; the writer checkpoints itself only if it falls far behind.
        db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={BACKSTOP_PAGES * 4096}")
        migrate(db)
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db = db
        (msgs,) = db.execute("SELECT COALESCE(SUM(length(envelope)), 0) FROM messages").fetchone()
        (chunks,) = db.execute("SELECT COALESCE(SUM(chunks), 0) FROM blobs").fetchone()
        (self.mailboxes,) = db.execute("SELECT COUNT(*) FROM mailboxes").fetchone()
        self.total = msgs + chunks * BLOB_CHUNK_SIZE + self.mailboxes * MAILBOX_ROW_COST

    def _checkpoint(self) -> None:
        """Checkpoint the WAL from a second connection every
        :data:`CHECKPOINT_INTERVAL` seconds.  A PASSIVE checkpoint never blocks
        the writer, so copying pages into the database (and its fsync) no
        longer lengthens the COMMIT that acknowledges a batch of posts."""
        try:
            db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return  # the writer's backstop auto-checkpoint still runs
        try:
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            while not self._stop.wait(CHECKPOINT_INTERVAL):
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.close()

    # ------------------------------------------------------------ the thread

    def _call(
        self,
        fn: Callable[[sqlite3.Connection], Any] | _PostOp,
        after: Callable[[Any], None] | None = None,
    ) -> asyncio.Future[Any]:
        assert self._loop is not None
        if self._thread is None:
            raise Unavailable("storage closed")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._outbox.append((fn, fut, after))
        if len(self._outbox) == 1:
            self._loop.call_soon(self._submit)
        return fut

    def _submit(self) -> None:
        """Hand every request made in this loop iteration to the thread at once."""
        items, self._outbox = self._outbox, []
        if items:
            self._queue.put(items)

    def _run(self) -> None:
        first = self._queue.get()
        if first is None:
            return
        fn, fut, after = first[0]
        try:
            fn(None)
            self._deliver([(fut, None, None, after)])
        except BaseException as exc:
            self._deliver([(fut, None, exc, after)])
            return
        db = self._db
        assert db is not None
        while True:
            item = self._queue.get()
            if item is None:
                db.close()
                return
            batch = list(item)
            while len(batch) < BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.extend(nxt)
            self._deliver(self._run_batch(db, batch))

    def _run_batch(self, db: sqlite3.Connection, batch: list[Any]) -> list[_Done]:
        done: list[_Done] = []
        total_before, mailboxes_before = self.total, self.mailboxes
        try:
            db.execute("BEGIN IMMEDIATE")
            run: list[Any] = []
            for item in batch:
                if isinstance(item[0], _PostOp):
                    run.append(item)
                    continue
                if run:
                    self._run_posts(db, run, done)
                    run = []
                fn, fut, after = item
                try:
                    result = fn(db)
                except RelayError as exc:  # leaves no change (module invariant)
                    done.append((fut, None, exc, after))
                else:
                    done.append((fut, result, None, after))
            if run:
                self._run_posts(db, run, done)
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self.total, self.mailboxes = total_before, mailboxes_before
            self._mbx.clear()
            err = Unavailable(f"storage error: {type(exc).__name__}")
            return [(fut, None, err, after) for fn, fut, after in batch]
        if len(self._mbx) > MAX_CACHED:
            self._mbx.clear()
        return done

    def _load(self, db: sqlite3.Connection, key: bytes) -> list[Any] | None:
        """A mailbox's cached ``[ttl, head, count, bytes, expires, write_key,
        id, mode]``, or None if there is no such mailbox.

        Loaded from its row and its messages: the head is the later of the
        row's (the head when messages were last removed) and the newest
        message's seq, the expiry likewise; count and bytes are what its
        messages hold.  So a post changes no mailbox row (sqlite_schema)."""
        entry = self._mbx.get(key)
        if entry is None:
            row = db.execute(
                "SELECT ttl, head_seq, expires, write_key, id, mode FROM mailboxes WHERE key=?",
                (key,),
            ).fetchone()
            if row is None:
                return None
            ttl, head, expires, write_key, mid, mode = row
            n, nbytes, last, latest = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(envelope)), 0), MAX(seq), MAX(expires) "
                "FROM messages WHERE mbox=?",
                (mid,),
            ).fetchone()
            head = max(head, last or 0)
            expires = max(expires, latest or 0)
            entry = self._mbx[key] = [ttl, head, n, nbytes, expires, write_key, mid, mode]
        return entry

    def _save(self, db: sqlite3.Connection, entry: list[Any]) -> None:
        """Write what a mailbox's messages may no longer tell: its head seq
        and expiry (before messages are removed), and its write key."""
        db.execute(
            "UPDATE mailboxes SET head_seq=?, expires=?, write_key=? WHERE id=?",
            (entry[1], entry[4], entry[5], entry[6]),
        )

    def _deliver(self, done: list[_Done]) -> None:
        assert self._loop is not None
        # RuntimeError: the loop is gone (shutdown); nobody awaits these futures.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_complete, done)

    # ------------------------------------------------------------ mailboxes

    async def create_mailbox(
        self,
        key: bytes,
        read_key: bytes,
        write_key: bytes,
        ttl: int,
        now: int,
        mode: int = MODE_QUEUE,
    ) -> None:
        def op(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT read_key FROM mailboxes WHERE key=?", (key,))
            found = row.fetchone()
            if found is not None:
                entry = self._load(db, key)
                assert entry is not None
                if found[0] != read_key or entry[5] != write_key or entry[7] != mode:
                    raise MailboxExists("mailbox exists")
                # an identical re-create refreshes
                expires = expiry_bucket(now, entry[0], self.limits.time_bucket)
                if expires > entry[4]:
                    entry[4] = expires
                    self._save(db, entry)
                return
            if self.mailboxes >= self.limits.max_mailboxes:
                raise StorageFull("relay holds its maximum number of mailboxes")
            if self.total + MAILBOX_ROW_COST > self.limits.total_max_bytes:
                raise StorageFull("relay storage full")
            # a random id, never a counter: ids must not order mailboxes by
            # creation (SPEC §7.12); drawn again on the rare collision
            mid = new_mailbox_id()
            while db.execute("SELECT 1 FROM mailboxes WHERE id=?", (mid,)).fetchone():
                mid = new_mailbox_id()
            expires = expiry_bucket(now, ttl, self.limits.time_bucket)
            db.execute(
                "INSERT INTO mailboxes (key, id, read_key, write_key, ttl, expires, head_seq, "
                "mode) VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                (key, mid, read_key, write_key, ttl, expires, mode),
            )
            self._mbx[key] = [ttl, 0, 0, 0, expires, write_key, mid, mode]
            self.mailboxes += 1
            self.total += MAILBOX_ROW_COST

        await self._call(op)

    async def get_mailbox(self, key: bytes) -> MailboxInfo | None:
        def op(db: sqlite3.Connection) -> MailboxInfo | None:
            entry = self._load(db, key)
            if entry is None:
                return None
            (read_key,) = db.execute(
                "SELECT read_key FROM mailboxes WHERE key=?", (key,)
            ).fetchone()
            return MailboxInfo(read_key, entry[5], entry[0], entry[1], entry[7])

        result: MailboxInfo | None = await self._call(op)
        return result

    async def rotate_write_key(self, key: bytes, new_key: bytes) -> None:
        def op(db: sqlite3.Connection) -> None:
            entry = self._load(db, key)
            if entry is None:
                raise UnknownMailbox("unknown mailbox")
            entry[5] = new_key
            self._save(db, entry)

        await self._call(op)

    async def delete_mailbox(self, key: bytes) -> None:
        def op(db: sqlite3.Connection) -> None:
            entry = self._load(db, key)
            if entry is None:
                raise UnknownMailbox("unknown mailbox")
            db.execute("DELETE FROM messages WHERE mbox=?", (entry[6],))
            db.execute("DELETE FROM mailboxes WHERE key=?", (key,))
            self.total -= entry[3]
            self._mbx.pop(key, None)

        await self._call(op)

    def post_nowait(
        self, key: bytes, dkey: bytes, envelope: bytes, now: int, write_key: bytes | None = None
    ) -> asyncio.Future[tuple[int, bool]]:
        """:meth:`post` without a coroutine: the future of the queued request."""

        def publish(result: tuple[int, bool]) -> None:
            if not result[1]:
                self.hub.publish(key, result[0], envelope)

        return self._call(_PostOp(key, dkey, envelope, now, write_key), publish)

    def _run_posts(self, db: sqlite3.Connection, run: list[Any], done: list[_Done]) -> None:
        """A run of consecutive posts in two statements, whatever its length.

        Each statement releases the GIL and may wait to get it back, so the
        per-post work stays in Python: one dedup lookup for the run, then
        the messages inserted with one ``executemany`` (each row carries its
        dedup key: there is no second table to write).  No mailbox row is
        written: head, count, bytes and expiry follow from the messages
        (:meth:`_load`).
        """
        lim = self.limits
        entries = [self._load(db, op.key) for op, _, _ in run]
        # OR of primary-key equalities: SQLite's OR optimisation does one index
        # lookup per term (a row-value IN over VALUES scanned the table).  At
        # most LOOKUP terms per statement keep the expression tree shallow.
        wanted = [(e[6], op.dkey) for (op, _, _), e in zip(run, entries, strict=True) if e]
        known: dict[tuple[int, bytes], int] = {}
        for i in range(0, len(wanted), LOOKUP):
            part = wanted[i : i + LOOKUP]
            terms = " OR ".join(["(mbox=? AND dkey=?)"] * len(part))
            params: list[Any] = []
            for pair in part:
                params += pair
            for m, d, seq in db.execute(
                f"SELECT mbox, dkey, seq FROM messages WHERE {terms}", params
            ):
                known[(m, d)] = seq
        messages: list[tuple[Any, ...]] = []
        for (op, fut, after), entry in zip(run, entries, strict=True):
            size = len(op.envelope)
            if entry is None:
                done.append((fut, None, UnknownMailbox("unknown mailbox"), after))
                continue
            old = known.get((entry[6], op.dkey))
            if op.write_key is not None and op.write_key != entry[5]:
                done.append((fut, None, NotAuthorized("the write key was rotated"), after))
            elif old is not None:
                done.append((fut, (old, True), None, after))
            elif self.total + size > lim.total_max_bytes:
                done.append((fut, None, StorageFull("relay storage full"), after))
            elif entry[2] >= lim.mailbox_max_messages or entry[3] + size > lim.mailbox_max_bytes:
                done.append((fut, None, QuotaExceeded("mailbox quota exceeded"), after))
            else:
                seq = next_seq(entry[1], op.now)
                expires = expiry_bucket(op.now, entry[0], lim.time_bucket)
                entry[1:5] = [seq, entry[2] + 1, entry[3] + size, max(entry[4], expires)]
                self.total += size
                known[(entry[6], op.dkey)] = seq
                messages.append((entry[6], seq, op.dkey, expires, op.envelope))
                done.append((fut, (seq, False), None, after))
        if messages:
            db.executemany(
                "INSERT INTO messages (mbox, seq, dkey, expires, envelope) VALUES (?, ?, ?, ?, ?)",
                messages,
            )

    async def post(
        self, key: bytes, dkey: bytes, envelope: bytes, now: int, write_key: bytes | None = None
    ) -> tuple[int, bool]:
        return await self.post_nowait(key, dkey, envelope, now, write_key)

    async def fetch(
        self, key: bytes, from_seq: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        def op(db: sqlite3.Connection) -> list[tuple[int, bytes]]:
            entry = self._load(db, key)
            if entry is None:
                return []
            cursor = db.execute(
                "SELECT seq, envelope FROM messages WHERE mbox=? AND seq>=? ORDER BY seq LIMIT ?",
                (entry[6], from_seq, limit),
            )
            if max_bytes is None:
                return cursor.fetchall()
            rows: list[tuple[int, bytes]] = []
            total = 0
            for row in cursor:  # stepped lazily: rows past the budget are never read
                rows.append(row)
                total += len(row[1])
                if total >= max_bytes:
                    break
            cursor.close()
            return rows

        result: list[tuple[int, bytes]] = await self._call(op)
        return result

    async def ack(self, key: bytes, up_to_seq: int) -> None:
        def op(db: sqlite3.Connection) -> None:
            entry = self._load(db, key)
            if entry is None:
                raise UnknownMailbox("unknown mailbox")
            if entry[7] == MODE_SHARED_LOG:
                return  # a shared log: the reader's cursor is its own (SPEC.md §7.7)
            n, nbytes, latest = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(envelope)), 0), MAX(expires) "
                "FROM messages WHERE mbox=? AND seq<=?",
                (entry[6], up_to_seq),
            ).fetchone()
            if n:
                if up_to_seq >= entry[1] or latest >= entry[4]:
                    # the messages that told the head or the expiry go: the
                    # row keeps them, so a seq is never reused (SPEC §7.7)
                    self._save(db, entry)
                # the dedup keys go with the rows (SPEC §7.12): once acked, a
                # msg_id is not kept to link a later post to it
                db.execute("DELETE FROM messages WHERE mbox=? AND seq<=?", (entry[6], up_to_seq))
                entry[2] -= n
                entry[3] -= nbytes
                self.total -= nbytes

        await self._call(op)

    async def expire(self, now: int) -> int:
        """Delete what expired by ``now``: messages, idle mailboxes, blobs.

        There is no expiry index (each post would write one more, scattered
        index entry): the pass walks the mailboxes in key order,
        :data:`SWEEP` at a time, each slice a request of its own so posts
        are not held up behind the whole pass.  A mailbox's messages expire
        in seq order (one TTL, expiry from the post's time), so a mailbox
        has something to delete when its oldest message has expired."""
        removed = 0
        after = b""
        while True:
            n: int
            n, after = await self._call(functools.partial(self._sweep, after=after, now=now))
            removed += n
            if not after:
                break
        blob_files: list[Path] = []

        def blobs(db: sqlite3.Connection) -> int:
            n = 0
            for bkey, chunks in db.execute(
                "SELECT key, chunks FROM blobs WHERE expires<=?", (now,)
            ).fetchall():
                blob_files.extend(self._chunk_paths(bkey))
                self.total -= chunks * BLOB_CHUNK_SIZE
                n += 1
            db.execute("DELETE FROM blobs WHERE expires<=?", (now,))
            return n

        expired_blobs: int = await self._call(blobs)
        removed += expired_blobs
        await asyncio.to_thread(_unlink_all, blob_files)
        return removed

    def _sweep(self, db: sqlite3.Connection, after: bytes, now: int) -> tuple[int, bytes]:
        """Expire the messages and mailboxes of the next :data:`SWEEP`
        mailboxes past key ``after``; the count and the last key (b"" at
        the end)."""
        rows = db.execute(
            "SELECT key, id, expires, (SELECT expires FROM messages WHERE mbox=mailboxes.id "
            "ORDER BY seq LIMIT 1) FROM mailboxes WHERE key>? ORDER BY key LIMIT ?",
            (after, SWEEP),
        ).fetchall()
        removed = 0
        for key, mid, expires, oldest in rows:
            if oldest is not None and oldest <= now:
                self._mbx.pop(key, None)
                n, nbytes, last, latest = db.execute(
                    "SELECT COUNT(*), SUM(length(envelope)), MAX(seq), MAX(expires) "
                    "FROM messages WHERE mbox=? AND expires<=?",
                    (mid, now),
                ).fetchone()
                # the row keeps the head and expiry these messages told
                expires = max(expires, latest)
                db.execute(
                    "UPDATE mailboxes SET head_seq=MAX(head_seq, ?), expires=? WHERE id=?",
                    (last, expires, mid),
                )
                db.execute("DELETE FROM messages WHERE mbox=? AND expires<=?", (mid, now))
                self.total -= nbytes
                removed += n
            # a mailbox expires with its last message, or without one after
            # its (re-)create's TTL: its row's expiry has passed and no
            # message holds a later one
            if (
                expires <= now
                and not db.execute("SELECT 1 FROM messages WHERE mbox=? LIMIT 1", (mid,)).fetchone()
            ):
                db.execute("DELETE FROM mailboxes WHERE id=?", (mid,))
                self._mbx.pop(key, None)
                self.mailboxes -= 1
                self.total -= MAILBOX_ROW_COST
                removed += 1
        return removed, rows[-1][0] if len(rows) == SWEEP else b""

    # ------------------------------------------------------------ blobs

    def _chunk_dir(self, bkey: bytes) -> Path:
        return self.blob_dir / bkey.hex()[:2]

    def _chunk_path(self, bkey: bytes, index: int) -> Path:
        return self._chunk_dir(bkey) / f"{bkey.hex()}.{index}"

    def _chunk_paths(self, bkey: bytes) -> list[Path]:
        d = self._chunk_dir(bkey)
        return list(d.glob(f"{bkey.hex()}.*")) if d.is_dir() else []

    async def blob_create(
        self, blob_id: bytes, upload_hash: bytes, read_hash: bytes, expires: int
    ) -> None:
        bkey = blob_key(blob_id)

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO blobs VALUES (?, ?, ?, ?, 0)", (bkey, upload_hash, read_hash, expires)
            )

        await self._call(op)

    async def blob_meta(self, blob_id: bytes) -> BlobMeta | None:
        bkey = blob_key(blob_id)

        def op(db: sqlite3.Connection) -> BlobMeta | None:
            row = db.execute(
                "SELECT upload_hash, read_hash, expires, chunks FROM blobs WHERE key=?", (bkey,)
            ).fetchone()
            return BlobMeta(*row) if row else None

        result: BlobMeta | None = await self._call(op)
        return result

    async def blob_put_chunk(self, blob_id: bytes, index: int, spool: Path) -> bool:
        bkey = blob_key(blob_id)
        path = self._chunk_path(bkey, index)
        if path.exists():
            spool.unlink(missing_ok=True)
            return False

        def reserve(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT chunks FROM blobs WHERE key=?", (bkey,)).fetchone()
            if row is None:
                raise UnknownMailbox("unknown blob")
            if row[0] >= self.limits.blob_max_chunks:
                raise QuotaExceeded("blob has its maximum number of chunks")
            if self.total + BLOB_CHUNK_SIZE > self.limits.total_max_bytes:
                raise StorageFull("relay storage full")
            db.execute("UPDATE blobs SET chunks=chunks+1 WHERE key=?", (bkey,))
            self.total += BLOB_CHUNK_SIZE

        try:
            await self._call(reserve)
        except RelayError:
            spool.unlink(missing_ok=True)
            raise
        await asyncio.to_thread(_install, spool, path)
        return True

    async def blob_open_chunk(self, blob_id: bytes, index: int) -> AsyncIterator[bytes] | None:
        path = self._chunk_path(blob_key(blob_id), index)
        try:
            fh = await asyncio.to_thread(open, path, "rb")
        except OSError:
            return None
        return _iter_file(fh)

    async def blob_delete(self, blob_id: bytes) -> None:
        bkey = blob_key(blob_id)

        def op(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT chunks FROM blobs WHERE key=?", (bkey,)).fetchone()
            if row is not None:
                self.total -= row[0] * BLOB_CHUNK_SIZE
                db.execute("DELETE FROM blobs WHERE key=?", (bkey,))

        await self._call(op)
        await asyncio.to_thread(_unlink_all, self._chunk_paths(bkey))


def _complete(done: list[_Done]) -> None:
    for fut, result, exc, after in done:
        if fut.cancelled():
            if exc is None and after is not None:
                after(result)
            continue
        if exc is not None:
            if not isinstance(exc, RelayError):
                exc = Unavailable(f"storage error: {type(exc).__name__}")
            fut.set_exception(exc)
        else:
            if after is not None:
                after(result)
            fut.set_result(result)


def _install(spool: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(spool, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_all(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


async def _iter_file(fh: Any) -> AsyncIterator[bytes]:
    try:
        while True:
            piece = await asyncio.to_thread(fh.read, 64 * 1024)
            if not piece:
                return
            yield piece
    finally:
        fh.close()
