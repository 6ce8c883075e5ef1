"""The encrypted local store: records, ordered logs and files under one passphrase.

:class:`Store` keeps everything a client holds on the device -- identity keys,
contacts, MLS group states, chat history, attachments -- so that a seized,
powered-off device yields no plaintext content, name, key or file hash.  It is
synchronous and every call is one short SQLite transaction; the asyncio engine
calls it directly.

Theory of operation
-------------------
* ``home/store.db`` is SQLite in WAL mode with ``synchronous=FULL`` (a commit
  is on disk before the call returns), ``secure_delete=ON`` (freed cells are
  zeroed), ``temp_store=MEMORY`` and ``locking_mode=EXCLUSIVE``: the one
  connection holds the file lock for its lifetime, so a second opener gets
  :class:`StoreLocked`, and no ``-shm`` file is made.  Files are 0600, dirs 0700.
* The header row holds the Argon2id salt and cost, the random 32-byte master
  key wrapped under the passphrase key, and a key-check box.  Every other byte
  the database holds is a keyed BLAKE2b id, a sequence number or a sealed box.
* A namespace ``ns`` is stored as ``ns_id = H(K_ns, utf8(ns))``; a record as
  ``lookup = H(K_lookup, ns_id || key)`` and a box of ``(key, value)``, padded
  to a size class, with ``ns_id || lookup`` as AAD -- so a box moved to another
  row, namespace or log position fails to open (:class:`StoreCorrupt`).
* Logs are ``(ns_id, seq, box)`` rows; ``seq`` comes from a per-namespace
  counter that never goes back, so a deleted entry's number is never reused.
* A file is ``home/files/<random id>`` of equal-sized blocks under a random
  per-file key; that key lives only in the ``files`` table.  Deleting a file
  deletes its key row first (crypto-shredding), then the blocks.
* Explicit deletions and passphrase changes end with a WAL checkpoint
  (TRUNCATE), so the freed (zeroed) pages reach the main file and old frames
  leave the WAL at once rather than at the next automatic checkpoint.
* Nested :meth:`transaction` blocks are savepoints.  File creation and
  unlinking ride on them: a rolled-back ``write_file`` unlinks its blocks, a
  ``delete_file`` unlinks only when the outermost transaction commits.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from client.store import crypto, database
from client.store.backup import (
    BackupReader,
    BackupWriter,
    FileDataItem,
    FileEndItem,
    FileItem,
    Item,
    LogItem,
    NamespaceItem,
    RecordItem,
)
from client.store.crypto import AuthFailed
from client.store.database import DB_NAME, Keys, db_error, fsync_dir
from client.store.errors import (
    BackupCorrupt,
    StoreClosed,
    StoreCorrupt,
    StoreExists,
    StoreNotFound,
    UnknownFile,
)
from protocol.errors import LocalError

FILES_DIR = "files"
FILE_ID_SIZE = 16
_NS_AAD = b"samizdat-store-v1 namespace\x00"
_RECORD_AAD = b"samizdat-store-v1 record\x00"
_LOG_AAD = b"samizdat-store-v1 log\x00"
_FILE_KEY_AAD = b"samizdat-store-v1 file-key\x00"
_FILE_BLOCK_PREFIX = b"samizdat-store-v1 file\x00"
_MAX_NS = 0xFFFF  # bytes of UTF-8; the backup codes the length as u16


@dataclass
class _Level:
    """One open transaction or savepoint and what to do when it ends."""

    on_commit: list[Callable[[], None]] = field(default_factory=list)
    on_rollback: list[Callable[[], None]] = field(default_factory=list)
    deleted: bool = False


def _as_bytes(data: bytes, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LocalError(f"{what} must be bytes, not {type(data).__name__}")
    return bytes(data)


class Store:
    """An open, unlocked store.  Make one with :meth:`create`, :meth:`open` or
    :meth:`import_backup`; use it as a context manager or call :meth:`close`.
    Safe to share between threads (calls are serialized)."""

    def __init__(self, home: Path, conn: sqlite3.Connection, master: bytes) -> None:
        self.home = home
        self._conn: sqlite3.Connection | None = conn
        self._master = master
        self._keys = Keys.derive(master)
        self._lock = threading.RLock()
        self._levels: list[_Level] = []
        #: False when :meth:`open` took the key from the local key agent
        self.unlocked_by_passphrase = True

    # -- lifecycle ---------------------------------------------------------

    @staticmethod
    def exists(home: Path) -> bool:
        """True if ``home`` holds a store."""
        return (Path(home) / DB_NAME).is_file()

    @classmethod
    def create(cls, home: Path, passphrase: bytes, *, fast_kdf: bool = False) -> Store:
        """Make a new empty store in ``home`` (created 0700 if missing).

        ``fast_kdf`` picks libsodium's minimum Argon2id cost: for tests only.
        """
        home = Path(home)
        passphrase = _as_bytes(passphrase, "passphrase")
        if not passphrase:
            raise LocalError("the passphrase must not be empty")
        if cls.exists(home):
            raise StoreExists(f"a store already exists in {home}")
        if not home.exists():
            home.mkdir(mode=0o700, parents=True)
            os.chmod(home, 0o700)
        files = home / FILES_DIR
        if not files.exists():
            files.mkdir(mode=0o700)
            os.chmod(files, 0o700)
        db = home / DB_NAME
        try:
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise StoreExists(f"a store already exists in {home}") from None
        os.chmod(db, 0o600)
        master = crypto.random_bytes(crypto.KEY_SIZE)
        try:
            conn = database.connect(db)
        except BaseException:
            db.unlink()
            raise
        try:
            database.initialise(conn, master, passphrase, fast_kdf)
        except BaseException:
            conn.close()
            db.unlink()
            raise
        return cls(home, conn, master)

    @classmethod
    def open(
        cls,
        home: Path,
        passphrase: bytes | Callable[[], bytes],
        *,
        cached_key: Callable[[bytes], bytes | None] | None = None,
    ) -> Store:
        """Unlock the store in ``home``.

        ``cached_key``, if given, is asked first for the master key of the
        store whose header salt it is passed (the local key agent,
        client/agent.py); a key it returns is used only if it passes the
        store's key check.  Otherwise ``passphrase`` (or what it returns, if
        it is a function: it is called only then) unlocks it with Argon2id,
        and :attr:`unlocked_by_passphrase` is True.

        Raises :class:`StoreNotFound`, :class:`StoreLocked` (open elsewhere),
        :class:`WrongPassphrase` or :class:`StoreCorrupt`.
        """
        home = Path(home)
        if not callable(passphrase):
            passphrase = _as_bytes(passphrase, "passphrase")
        if not cls.exists(home):
            raise StoreNotFound(f"no store in {home}")
        conn = database.connect(home / DB_NAME)
        try:
            master = None
            by_passphrase = True
            if cached_key is not None:
                header = database.read_header(conn)
                offered = cached_key(header.salt)
                if offered is not None and database.key_matches(header, offered):
                    master, by_passphrase = bytes(offered), False
            if master is None:
                secret = passphrase() if callable(passphrase) else passphrase
                master = database.unlock(conn, _as_bytes(secret, "passphrase"))
        except BaseException:
            conn.close()
            raise
        store = cls(home, conn, master)
        store.unlocked_by_passphrase = by_passphrase
        store._collect_garbage()
        return store

    def cacheable_key(self) -> tuple[bytes, bytes]:
        """``(header salt, master key)``: what the local key agent holds
        (client/agent.py, SPEC.md §9, "Local key agent") and nothing else may use."""
        with self._lock:
            header = database.read_header(self._require_open())
            return header.salt, self._master

    def close(self) -> None:
        """Checkpoint and close; further calls raise :class:`StoreClosed`."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                if self._levels:
                    conn.execute("ROLLBACK")
                    self._levels.clear()
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transactions --------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Make every put/delete/append/file call inside atomic.

        An exception leaving the block rolls all of it back (and unlinks files
        written inside it).  Blocks nest as savepoints.
        """
        with self._lock:
            depth = len(self._levels)
            self._exec("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT sp{depth}")
            level = _Level()
            self._levels.append(level)
            try:
                yield
            except BaseException:
                self._levels.pop()
                self._rollback(depth, level)
                raise
            self._levels.pop()
            if depth:
                self._exec(f"RELEASE sp{depth}")
                parent = self._levels[-1]
                parent.on_commit += level.on_commit
                parent.on_rollback += level.on_rollback
                parent.deleted |= level.deleted
                return
            try:
                self._exec("COMMIT")
            except BaseException:
                self._rollback(0, level)
                raise
            for action in level.on_commit:
                action()
            if level.deleted:
                self._exec("PRAGMA wal_checkpoint(TRUNCATE)")

    def _rollback(self, depth: int, level: _Level) -> None:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                if depth:
                    conn.execute(f"ROLLBACK TO sp{depth}")
                    conn.execute(f"RELEASE sp{depth}")
                else:
                    conn.execute("ROLLBACK")
        for action in level.on_rollback:
            action()

    # -- records -------------------------------------------------------------

    def put(self, ns: str, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``(ns, key)``, replacing any previous value."""
        key = _as_bytes(key, "key")
        value = _as_bytes(value, "value")
        ns_id = self._ns_id(ns)
        lookup = crypto.keyed_hash(self._keys.lookup, ns_id + key)
        box = crypto.seal(
            self._keys.record, crypto.pad_fields(key, value), _RECORD_AAD + ns_id + lookup
        )
        with self.transaction():
            self._ensure_ns(ns, ns_id)
            self._exec("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (ns_id, lookup, box))

    def get(self, ns: str, key: bytes) -> bytes | None:
        """The value under ``(ns, key)``, or None."""
        key = _as_bytes(key, "key")
        ns_id = self._ns_id(ns)
        lookup = crypto.keyed_hash(self._keys.lookup, ns_id + key)
        with self._lock:
            row = self._exec(
                "SELECT box FROM records WHERE ns = ? AND lookup = ?", (ns_id, lookup)
            ).fetchone()
        if row is None:
            return None
        stored_key, value = self._open_record(ns_id, lookup, row[0])
        if stored_key != key:
            raise StoreCorrupt("a record holds a different key than its lookup id")
        return value

    def delete(self, ns: str, key: bytes) -> None:
        """Remove ``(ns, key)`` if present."""
        key = _as_bytes(key, "key")
        ns_id = self._ns_id(ns)
        lookup = crypto.keyed_hash(self._keys.lookup, ns_id + key)
        with self.transaction():
            cur = self._exec("DELETE FROM records WHERE ns = ? AND lookup = ?", (ns_id, lookup))
            self._levels[-1].deleted |= cur.rowcount > 0

    def items(self, ns: str) -> list[tuple[bytes, bytes]]:
        """Every ``(key, value)`` of ``ns``, sorted by key."""
        ns_id = self._ns_id(ns)
        with self._lock:
            rows = self._exec("SELECT lookup, box FROM records WHERE ns = ?", (ns_id,)).fetchall()
        out = []
        for lookup, box in rows:
            key, value = self._open_record(ns_id, lookup, box)
            if crypto.keyed_hash(self._keys.lookup, ns_id + key) != lookup:
                raise StoreCorrupt("a record holds a different key than its lookup id")
            out.append((key, value))
        out.sort()
        return out

    # -- logs ----------------------------------------------------------------

    def append(self, ns: str, value: bytes) -> int:
        """Append ``value`` to the log ``ns``; returns its sequence number (from 1)."""
        value = _as_bytes(value, "value")
        ns_id = self._ns_id(ns)
        with self.transaction():
            self._ensure_ns(ns, ns_id)
            (last,) = self._exec(
                "SELECT log_last FROM namespaces WHERE ns = ?", (ns_id,)
            ).fetchone()
            seq = int(last) + 1
            self._exec("UPDATE namespaces SET log_last = ? WHERE ns = ?", (seq, ns_id))
            box = crypto.seal(self._keys.record, crypto.pad_fields(value), _log_aad(ns_id, seq))
            self._exec("INSERT INTO log VALUES (?, ?, ?)", (ns_id, seq, box))
        return seq

    def read_log(
        self, ns: str, *, after: int = 0, limit: int | None = None, newest_first: bool = False
    ) -> list[tuple[int, bytes]]:
        """Entries of ``ns`` with ``seq > after`` as ``(seq, value)``, oldest
        first (or newest first), at most ``limit`` of them."""
        if limit is not None and limit < 0:
            raise LocalError("limit must be >= 0")
        ns_id = self._ns_id(ns)
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            rows = self._exec(
                f"SELECT seq, box FROM log WHERE ns = ? AND seq > ? ORDER BY seq {order} LIMIT ?",
                (ns_id, after, -1 if limit is None else limit),
            ).fetchall()
        return [(seq, self._open_log(ns_id, seq, box)) for seq, box in rows]

    def delete_log_entry(self, ns: str, seq: int) -> None:
        """Remove entry ``seq`` of ``ns`` if present; its number is not reused."""
        ns_id = self._ns_id(ns)
        with self.transaction():
            cur = self._exec("DELETE FROM log WHERE ns = ? AND seq = ?", (ns_id, seq))
            self._levels[-1].deleted |= cur.rowcount > 0

    def log_count(self, ns: str) -> int:
        """How many entries the log ``ns`` holds now."""
        ns_id = self._ns_id(ns)
        with self._lock:
            (n,) = self._exec("SELECT count(*) FROM log WHERE ns = ?", (ns_id,)).fetchone()
        return int(n)

    # -- files ---------------------------------------------------------------

    def write_file(self, data_iter: Iterable[bytes]) -> str:
        """Encrypt the concatenation of ``data_iter`` into a new file, streaming;
        returns its random id (32 hex digits)."""
        return self._write_file_as(crypto.random_bytes(FILE_ID_SIZE), data_iter).hex()

    def read_file(self, file_id: str) -> Iterator[bytes]:
        """The plaintext of a file, block by block (64 KiB each).

        A :class:`StoreCorrupt` raised during iteration means the file was
        tampered with: discard whatever was yielded before it.
        """
        fid = _parse_file_id(file_id)
        key = self._file_key(fid)
        path = self._files / fid.hex()
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise StoreCorrupt(f"file {file_id} is missing from {self._files}") from None
        size = os.fstat(f.fileno()).st_size
        if size == 0 or size % crypto.BLOCK_SIZE:
            f.close()
            raise StoreCorrupt(f"file {file_id} is truncated or extended")
        return _file_blocks(f, key, fid, size // crypto.BLOCK_SIZE)

    def delete_file(self, file_id: str) -> None:
        """Remove a file: its key row now, its blocks when the transaction commits."""
        fid = _parse_file_id(file_id)
        path = self._files / fid.hex()
        with self.transaction():
            cur = self._exec("DELETE FROM files WHERE id = ?", (fid,))
            if cur.rowcount == 0:
                raise UnknownFile(f"no file {file_id}")
            level = self._levels[-1]
            level.deleted = True
            level.on_commit.append(lambda: path.unlink(missing_ok=True))

    # -- passphrase and backup -------------------------------------------------

    def change_passphrase(self, old: bytes, new: bytes) -> None:
        """Rewrap the master key under ``new`` (fresh salt, same cost).

        The master key itself stays; a backup import rotates it.
        """
        old = _as_bytes(old, "passphrase")
        new = _as_bytes(new, "passphrase")
        if not new:
            raise LocalError("the passphrase must not be empty")
        with self._lock:
            conn = self._require_open()
            if database.unlock(conn, old) != self._master:
                raise StoreCorrupt("the header's master key changed under an open store")
            with self.transaction():
                database.rewrap(conn, self._master, new)
                self._levels[-1].deleted = True
        # whoever changes a passphrase expects the old unlock to end: the
        # agent holding this store's key (SPEC.md §9, "Local key agent") is stopped
        from client import agent

        agent.stop(self.home)

    def export_backup(self, path: Path, backup_passphrase: bytes) -> None:
        """Write every namespace, record, log entry and file to one encrypted
        file at ``path`` (0600), streaming, under ``backup_passphrase``.

        The backup uses this store's Argon2id cost and a fresh salt.
        """
        path = Path(path)
        backup_passphrase = _as_bytes(backup_passphrase, "backup passphrase")
        if not backup_passphrase:
            raise LocalError("the backup passphrase must not be empty")
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
        with self._lock:
            conn = self._require_open()
            header = database.read_header(conn)
            try:
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                    writer = BackupWriter(out, backup_passphrase, header.opslimit, header.memlimit)
                    self._dump(writer)
                    writer.finish()
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        fsync_dir(path.parent)

    @classmethod
    def import_backup(
        cls,
        path: Path,
        backup_passphrase: bytes,
        home: Path,
        new_passphrase: bytes,
        *,
        fast_kdf: bool = False,
    ) -> Store:
        """Restore a backup into ``home`` (missing or empty) under a new
        passphrase and a fresh master key; returns the opened store.

        The restore is staged in a sibling directory and renamed into place
        only once the whole backup has verified: a wrong passphrase
        (:class:`WrongPassphrase`) or any damage (:class:`BackupCorrupt`)
        leaves ``home`` untouched.
        """
        path, home = Path(path), Path(home)
        if home.exists() and (not home.is_dir() or any(home.iterdir())):
            raise StoreExists(f"{home} is not empty")
        with path.open("rb") as src:
            reader = BackupReader(src, os.fstat(src.fileno()).st_size, backup_passphrase)
            home.parent.mkdir(parents=True, exist_ok=True)
            staging = home.parent / f".{home.name}.import-{secrets.token_hex(8)}"
            try:
                with cls.create(staging, new_passphrase, fast_kdf=fast_kdf) as staged:
                    staged._restore(reader.items())
                if home.exists():
                    home.rmdir()
                os.rename(staging, home)
            except StoreCorrupt as exc:
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(exc, BackupCorrupt):
                    raise
                raise BackupCorrupt(f"backup content is inconsistent: {exc}") from exc
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        fsync_dir(home.parent)
        return cls.open(home, new_passphrase)

    # -- internals -----------------------------------------------------------

    @property
    def _files(self) -> Path:
        return self.home / FILES_DIR

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreClosed("the store is closed")
        return self._conn

    def _exec(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        conn = self._require_open()
        try:
            return conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise db_error(exc) from exc

    def _ns_id(self, ns: str) -> bytes:
        if not isinstance(ns, str):
            raise LocalError(f"namespace must be str, not {type(ns).__name__}")
        raw = ns.encode()
        if len(raw) > _MAX_NS:
            raise LocalError("namespace name longer than 65,535 bytes")
        return crypto.keyed_hash(self._keys.namespace, raw)

    def _ensure_ns(self, ns: str, ns_id: bytes, log_last: int = 0) -> None:
        box = crypto.seal(self._keys.record, crypto.pad_fields(ns.encode()), _NS_AAD + ns_id)
        self._exec("INSERT OR IGNORE INTO namespaces VALUES (?, ?, ?)", (ns_id, box, log_last))

    def _open_record(self, ns_id: bytes, lookup: bytes, box: bytes) -> tuple[bytes, bytes]:
        try:
            pt = crypto.unseal(self._keys.record, box, _RECORD_AAD + ns_id + lookup)
            key, value = crypto.unpad_fields(pt, 2)
        except AuthFailed:
            raise StoreCorrupt("a record failed authentication") from None
        return key, value

    def _open_log(self, ns_id: bytes, seq: int, box: bytes) -> bytes:
        try:
            pt = crypto.unseal(self._keys.record, box, _log_aad(ns_id, seq))
            (value,) = crypto.unpad_fields(pt, 1)
        except AuthFailed:
            raise StoreCorrupt(f"log entry {seq} failed authentication") from None
        return value

    def _open_ns(self, ns_id: bytes, box: bytes) -> str:
        try:
            pt = crypto.unseal(self._keys.record, box, _NS_AAD + ns_id)
            (raw,) = crypto.unpad_fields(pt, 1)
            name = raw.decode()
        except (AuthFailed, UnicodeDecodeError):
            raise StoreCorrupt("a namespace name failed authentication") from None
        if self._ns_id(name) != ns_id:
            raise StoreCorrupt("a namespace name does not match its id")
        return name

    def _file_key(self, fid: bytes) -> bytes:
        with self._lock:
            row = self._exec("SELECT box FROM files WHERE id = ?", (fid,)).fetchone()
        if row is None:
            raise UnknownFile(f"no file {fid.hex()}")
        try:
            key = crypto.unseal(self._keys.record, row[0], _FILE_KEY_AAD + fid)
        except AuthFailed:
            raise StoreCorrupt(f"the key of file {fid.hex()} failed authentication") from None
        if len(key) != crypto.KEY_SIZE:
            raise StoreCorrupt(f"the key of file {fid.hex()} has the wrong size")
        return key

    def _write_file_as(self, fid: bytes, data_iter: Iterable[bytes]) -> bytes:
        self._require_open()
        key = crypto.random_bytes(crypto.KEY_SIZE)
        path = self._files / fid.hex()
        tmp = self._files / f"{fid.hex()}.tmp"
        prefix = _FILE_BLOCK_PREFIX + fid
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                for index, (chunk, final) in enumerate(crypto.rechunk(data_iter)):
                    f.write(crypto.seal_block(key, prefix, index, final, chunk))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self._files)
        try:
            with self.transaction():
                box = crypto.seal(self._keys.record, key, _FILE_KEY_AAD + fid)
                self._exec("INSERT INTO files VALUES (?, ?)", (fid, box))
                self._levels[-1].on_rollback.append(lambda: path.unlink(missing_ok=True))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return fid

    def _collect_garbage(self) -> None:
        """Unlink leftovers of a crash: partial files, and files whose key row
        never committed (unreadable anyway)."""
        with self._lock:
            known = {bytes(r[0]).hex() for r in self._exec("SELECT id FROM files").fetchall()}
        for entry in self._files.iterdir():
            name = entry.name
            if name.endswith(".tmp") or (_is_file_name(name) and name not in known):
                entry.unlink(missing_ok=True)

    def _dump(self, writer: BackupWriter) -> None:
        try:
            namespaces = self._exec("SELECT ns, box, log_last FROM namespaces ORDER BY ns")
            for ns_id, ns_box, log_last in namespaces.fetchall():
                writer.namespace(self._open_ns(ns_id, ns_box), log_last)
                records = self._exec("SELECT lookup, box FROM records WHERE ns = ?", (ns_id,))
                for lookup, box in records:
                    writer.record(*self._open_record(ns_id, lookup, box))
                entries = self._exec("SELECT seq, box FROM log WHERE ns = ? ORDER BY seq", (ns_id,))
                for seq, box in entries:
                    writer.log(seq, self._open_log(ns_id, seq, box))
            for (fid,) in self._exec("SELECT id FROM files ORDER BY id").fetchall():
                writer.file(fid)
                for data in self.read_file(bytes(fid).hex()):
                    writer.file_data(data)
                writer.file_end()
        except sqlite3.Error as exc:
            raise db_error(exc) from exc

    def _restore(self, items: Iterator[Item]) -> None:
        ns_id: bytes | None = None
        log_last = 0
        with self.transaction():
            for item in items:
                if isinstance(item, NamespaceItem):
                    ns_id, log_last = self._ns_id(item.name), item.log_last
                    box = crypto.seal(
                        self._keys.record, crypto.pad_fields(item.name.encode()), _NS_AAD + ns_id
                    )
                    self._exec("INSERT INTO namespaces VALUES (?, ?, ?)", (ns_id, box, log_last))
                elif isinstance(item, RecordItem) and ns_id is not None:
                    lookup = crypto.keyed_hash(self._keys.lookup, ns_id + item.key)
                    pt = crypto.pad_fields(item.key, item.value)
                    box = crypto.seal(self._keys.record, pt, _RECORD_AAD + ns_id + lookup)
                    self._exec("INSERT INTO records VALUES (?, ?, ?)", (ns_id, lookup, box))
                elif isinstance(item, LogItem) and ns_id is not None and 0 < item.seq <= log_last:
                    pt = crypto.pad_fields(item.value)
                    box = crypto.seal(self._keys.record, pt, _log_aad(ns_id, item.seq))
                    self._exec("INSERT INTO log VALUES (?, ?, ?)", (ns_id, item.seq, box))
                elif isinstance(item, FileItem) and len(item.file_id) == FILE_ID_SIZE:
                    self._write_file_as(item.file_id, _file_items(items))
                else:
                    raise BackupCorrupt(f"unexpected {type(item).__name__} in backup stream")


def _log_aad(ns_id: bytes, seq: int) -> bytes:
    return _LOG_AAD + ns_id + struct.pack(">Q", seq)


def _is_file_name(name: str) -> bool:
    return len(name) == 2 * FILE_ID_SIZE and all(c in "0123456789abcdef" for c in name)


def _parse_file_id(file_id: str) -> bytes:
    if not isinstance(file_id, str) or not _is_file_name(file_id):
        raise UnknownFile(f"not a file id: {file_id!r}")
    return bytes.fromhex(file_id)


def _file_blocks(f: BinaryIO, key: bytes, fid: bytes, count: int) -> Iterator[bytes]:
    prefix = _FILE_BLOCK_PREFIX + fid
    with f:
        for index in range(count):
            final = index == count - 1
            try:
                data = crypto.open_block(key, prefix, index, final, f.read(crypto.BLOCK_SIZE))
            except AuthFailed:
                raise StoreCorrupt(f"block {index} of file {fid.hex()} is corrupt") from None
            if not final and len(data) != crypto.BLOCK_DATA:
                raise StoreCorrupt(f"short block {index} in file {fid.hex()}")
            yield data


def _file_items(items: Iterator[Item]) -> Iterator[bytes]:
    """The data of one file in a backup stream, up to its FileEndItem."""
    for item in items:
        if isinstance(item, FileDataItem):
            yield item.data
        elif isinstance(item, FileEndItem):
            return
        else:
            raise BackupCorrupt(f"unexpected {type(item).__name__} inside a backup file")
    raise BackupCorrupt("backup ends inside a file")
