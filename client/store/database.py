"""The store's SQLite layer: connection settings, schema, and the header row.

The header row is the only place the passphrase matters: it holds the Argon2id
salt and cost, the master key wrapped under the passphrase key, and a
key-check box.  Everything below it is keyed off the master key's subkeys
(:class:`Keys`).  SPEC.md §9, "Header" and "Key derivation", is normative.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

from client.store import crypto
from client.store.crypto import AuthFailed
from client.store.errors import StoreCorrupt, StoreError, StoreLocked, WrongPassphrase

DB_NAME = "store.db"
FORMAT = 1
CHECK_CONSTANT = b"samizdat store key check v1"
PERSON = b"samizdat.store.1"
WRAP_AAD = b"samizdat-store-v1 wrap\x00"
CHECK_AAD = b"samizdat-store-v1 check\x00"

SCHEMA = (
    "CREATE TABLE header (id INTEGER PRIMARY KEY CHECK (id = 1), format INTEGER NOT NULL,"
    " kdf INTEGER NOT NULL, opslimit INTEGER NOT NULL, memlimit INTEGER NOT NULL,"
    " salt BLOB NOT NULL, wrapped_key BLOB NOT NULL, key_check BLOB NOT NULL)",
    "CREATE TABLE namespaces (ns BLOB PRIMARY KEY, box BLOB NOT NULL,"
    " log_last INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE records (ns BLOB NOT NULL, lookup BLOB NOT NULL, box BLOB NOT NULL,"
    " PRIMARY KEY (ns, lookup)) WITHOUT ROWID",
    "CREATE TABLE log (ns BLOB NOT NULL, seq INTEGER NOT NULL, box BLOB NOT NULL,"
    " PRIMARY KEY (ns, seq)) WITHOUT ROWID",
    "CREATE TABLE files (id BLOB PRIMARY KEY, box BLOB NOT NULL) WITHOUT ROWID",
)


@dataclass(frozen=True)
class Keys:
    """The subkeys of one master key (SPEC.md §9, "Key derivation")."""

    record: bytes
    lookup: bytes
    namespace: bytes
    check: bytes

    @classmethod
    def derive(cls, master: bytes) -> Keys:
        return cls(
            record=crypto.subkey(master, PERSON, b"record-aead"),
            lookup=crypto.subkey(master, PERSON, b"lookup-id"),
            namespace=crypto.subkey(master, PERSON, b"namespace-id"),
            check=crypto.subkey(master, PERSON, b"key-check"),
        )


@dataclass(frozen=True)
class Header:
    """The header row."""

    kdf: int
    opslimit: int
    memlimit: int
    salt: bytes
    wrapped_key: bytes
    key_check: bytes


def wrap_aad(kdf: int, opslimit: int, memlimit: int, salt: bytes) -> bytes:
    """AAD of the wrapped master key: the header fields it depends on."""
    return WRAP_AAD + struct.pack(">IIQQ", FORMAT, kdf, opslimit, memlimit) + salt


def db_error(exc: sqlite3.Error) -> StoreError:
    """The store error for an SQLite error."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreLocked("the store is open in another process")
        return StoreError(f"database: {text}")
    return StoreCorrupt(f"database: {exc}")


def connect(db: Path) -> sqlite3.Connection:
    """Open ``db`` with the store's settings and take its exclusive lock.

    WAL rather than a rollback journal: one fsync per commit instead of three
    (chat history is appended one message at a time), and with
    ``locking_mode=EXCLUSIVE`` no ``-shm`` file.  ``synchronous=FULL`` makes
    every commit durable before it returns; ``secure_delete`` zeroes freed
    cells; ``temp_store=MEMORY`` keeps sort spills off the disk.
    """
    try:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=0)
    except sqlite3.Error as exc:
        raise db_error(exc) from exc
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA trusted_schema=OFF")
        # Take the exclusive lock now rather than at the first write.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.close()
        raise db_error(exc) from exc
    return conn


def initialise(conn: sqlite3.Connection, master: bytes, passphrase: bytes, fast_kdf: bool) -> None:
    """Create the schema and the header row for a new store."""
    opslimit, memlimit = crypto.kdf_params(fast_kdf)
    salt = crypto.random_bytes(crypto.SALT_SIZE)
    kek = crypto.passphrase_key(passphrase, salt, opslimit, memlimit)
    kdf = crypto.KDF_ARGON2ID13
    wrapped = crypto.seal(kek, master, wrap_aad(kdf, opslimit, memlimit, salt))
    key_check = crypto.seal(Keys.derive(master).check, CHECK_CONSTANT, CHECK_AAD)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO header VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
            (FORMAT, kdf, opslimit, memlimit, salt, wrapped, key_check),
        )
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise db_error(exc) from exc


def read_header(conn: sqlite3.Connection) -> Header:
    """The header row, checked for format and sane KDF parameters."""
    try:
        row = conn.execute(
            "SELECT format, kdf, opslimit, memlimit, salt, wrapped_key, key_check"
            " FROM header WHERE id = 1"
        ).fetchone()
    except sqlite3.Error as exc:
        raise StoreCorrupt(f"not a Samizdat store: {exc}") from exc
    if row is None:
        raise StoreCorrupt("the store has no header")
    fmt, kdf, opslimit, memlimit, salt, wrapped, check = row
    if fmt != FORMAT or kdf != crypto.KDF_ARGON2ID13:
        raise StoreCorrupt(f"unknown store format {fmt} / KDF {kdf}")
    if not crypto.params_ok(opslimit, memlimit) or len(salt) != crypto.SALT_SIZE:
        raise StoreCorrupt("the header names impossible KDF parameters")
    return Header(kdf, opslimit, memlimit, bytes(salt), bytes(wrapped), bytes(check))


def unlock(conn: sqlite3.Connection, passphrase: bytes) -> bytes:
    """The master key if ``passphrase`` is right: Argon2id, unwrap, key check.

    A wrapped key that does not open is :class:`WrongPassphrase`; one that
    opens but fails the key check is :class:`StoreCorrupt`.
    """
    h = read_header(conn)
    kek = crypto.passphrase_key(passphrase, h.salt, h.opslimit, h.memlimit)
    try:
        master = crypto.unseal(kek, h.wrapped_key, wrap_aad(h.kdf, h.opslimit, h.memlimit, h.salt))
    except AuthFailed:
        raise WrongPassphrase("wrong passphrase") from None
    if len(master) != crypto.KEY_SIZE:
        raise StoreCorrupt("the wrapped master key has the wrong size")
    try:
        if crypto.unseal(Keys.derive(master).check, h.key_check, CHECK_AAD) != CHECK_CONSTANT:
            raise AuthFailed("check constant")
    except AuthFailed:
        raise StoreCorrupt("the key check does not match the master key") from None
    return master


def key_matches(h: Header, master: bytes) -> bool:
    """True if ``master`` opens the header's key-check box: the store's own
    master key, offered by the local key agent (SPEC.md §9, "Local key agent")."""
    if len(master) != crypto.KEY_SIZE:
        return False
    try:
        return crypto.unseal(Keys.derive(bytes(master)).check, h.key_check, CHECK_AAD) == (
            CHECK_CONSTANT
        )
    except AuthFailed:
        return False


def rewrap(conn: sqlite3.Connection, master: bytes, passphrase: bytes) -> None:
    """Wrap ``master`` under ``passphrase`` with a fresh salt (same cost).

    The caller runs this inside a transaction.
    """
    h = read_header(conn)
    salt = crypto.random_bytes(crypto.SALT_SIZE)
    kek = crypto.passphrase_key(passphrase, salt, h.opslimit, h.memlimit)
    wrapped = crypto.seal(kek, master, wrap_aad(h.kdf, h.opslimit, h.memlimit, salt))
    try:
        conn.execute("UPDATE header SET salt = ?, wrapped_key = ? WHERE id = 1", (salt, wrapped))
    except sqlite3.Error as exc:
        raise db_error(exc) from exc


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (POSIX only)."""
    if os.name == "posix":
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
