"""The encrypted backup file: header, key check, block stream and item codec.

A backup is one self-contained file that carries every record, log entry and
file of a store, encrypted under a key derived from a *backup* passphrase with
its own salt.  It is written and read as a stream: neither side ever holds more
than a block (64 KiB) plus one item in memory.  This module knows the file
format only; :class:`client.store.Store` feeds it items and consumes them.

Theory of operation
-------------------
Layout (SPEC.md §9, "Backup file")::

    header  = "SZBK" || u8 version=1 || u8 kdf=2 || u32 opslimit || u64 memlimit || salt[16]
    check   = seal(K_check, "samizdat backup key check v1", aad=header)
    blocks  = block_0 .. block_{n-1}, each BLOCK_SIZE bytes, n >= 1
    block_i = seal_block(K_data, "samizdat-backup-v1 block\\0" || header, i, i == n-1, data_i)

Every block but the last holds exactly BLOCK_DATA bytes of the item stream.
The check box tells a wrong passphrase (``WrongPassphrase``) from damage to
the blocks (``BackupCorrupt``); the header is AAD everywhere, so editing the
KDF parameters or the salt is caught too.  The item stream ends with an END
item that counts the items before it, and nothing may follow it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from client.store import crypto
from client.store.errors import BackupCorrupt, WrongPassphrase

MAGIC = b"SZBK"
VERSION = 1
_HEADER = struct.Struct(">4sBBIQ16s")
HEADER_SIZE = _HEADER.size  # 34
CHECK_CONSTANT = b"samizdat backup key check v1"
CHECK_SIZE = crypto.NONCE_SIZE + len(CHECK_CONSTANT) + crypto.TAG_SIZE  # 68
_PERSON = b"samizdat.backup1"
_BLOCK_PREFIX = b"samizdat-backup-v1 block\x00"

# Item tags of the plaintext stream.
T_NAMESPACE = 1  # u16 len || utf-8 name || u64 log_last
T_RECORD = 2  # u32 len || key || u32 len || value
T_LOG = 3  # u64 seq || u32 len || value
T_FILE = 4  # file id[16]
T_FILE_DATA = 5  # u32 len || bytes
T_FILE_END = 6
T_END = 255  # u64 number of items before this one


@dataclass(frozen=True)
class NamespaceItem:
    """Starts a namespace: the records and log entries that follow belong to it."""

    name: str
    log_last: int


@dataclass(frozen=True)
class RecordItem:
    key: bytes
    value: bytes


@dataclass(frozen=True)
class LogItem:
    seq: int
    value: bytes


@dataclass(frozen=True)
class FileItem:
    """Starts a file; ``FileDataItem``s follow, then ``FileEndItem``."""

    file_id: bytes


@dataclass(frozen=True)
class FileDataItem:
    data: bytes


@dataclass(frozen=True)
class FileEndItem:
    pass


Item = NamespaceItem | RecordItem | LogItem | FileItem | FileDataItem | FileEndItem


def _keys(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> tuple[bytes, bytes]:
    root = crypto.passphrase_key(passphrase, salt, opslimit, memlimit)
    return (
        crypto.subkey(root, _PERSON, b"key-check"),
        crypto.subkey(root, _PERSON, b"backup-aead"),
    )


class BackupWriter:
    """Streams items into an open binary file; call :meth:`finish` once at the end."""

    def __init__(self, out: BinaryIO, passphrase: bytes, opslimit: int, memlimit: int) -> None:
        salt = crypto.random_bytes(crypto.SALT_SIZE)
        header = _HEADER.pack(MAGIC, VERSION, crypto.KDF_ARGON2ID13, opslimit, memlimit, salt)
        check_key, self._key = _keys(passphrase, salt, opslimit, memlimit)
        self._out = out
        self._prefix = _BLOCK_PREFIX + header
        self._buf = bytearray()
        self._index = 0
        self._count = 0
        out.write(header)
        out.write(crypto.seal(check_key, CHECK_CONSTANT, header))

    def namespace(self, name: str, log_last: int) -> None:
        raw = name.encode()
        self._item(T_NAMESPACE, struct.pack(">H", len(raw)) + raw + struct.pack(">Q", log_last))

    def record(self, key: bytes, value: bytes) -> None:
        self._item(T_RECORD, _lv(key) + _lv(value))

    def log(self, seq: int, value: bytes) -> None:
        self._item(T_LOG, struct.pack(">Q", seq) + _lv(value))

    def file(self, file_id: bytes) -> None:
        self._item(T_FILE, file_id)

    def file_data(self, data: bytes) -> None:
        self._item(T_FILE_DATA, _lv(data))

    def file_end(self) -> None:
        self._item(T_FILE_END, b"")

    def finish(self) -> None:
        """Write the END item and the final block."""
        self._buf += bytes([T_END]) + struct.pack(">Q", self._count)
        self._flush()
        self._out.write(
            crypto.seal_block(self._key, self._prefix, self._index, True, bytes(self._buf))
        )
        self._buf.clear()

    def _item(self, tag: int, body: bytes) -> None:
        self._buf += bytes([tag]) + body
        self._count += 1
        self._flush()

    def _flush(self) -> None:
        # Keep at least one byte back: the final block is written by finish().
        while len(self._buf) > crypto.BLOCK_DATA:
            chunk = bytes(self._buf[: crypto.BLOCK_DATA])
            del self._buf[: crypto.BLOCK_DATA]
            self._out.write(crypto.seal_block(self._key, self._prefix, self._index, False, chunk))
            self._index += 1


def _lv(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class BackupReader:
    """Verifies a backup's header and key, then yields its items in order.

    Raises ``WrongPassphrase`` from the constructor if the key check fails, and
    ``BackupCorrupt`` (from the constructor or during :meth:`items`) for any
    damage.  Callers must treat everything yielded before an error as unsafe.
    """

    def __init__(self, src: BinaryIO, size: int, passphrase: bytes) -> None:
        head = src.read(HEADER_SIZE)
        if len(head) != HEADER_SIZE:
            raise BackupCorrupt("not a Samizdat backup (too short)")
        magic, version, kdf, opslimit, memlimit, salt = _HEADER.unpack(head)
        if magic != MAGIC or version != VERSION or kdf != crypto.KDF_ARGON2ID13:
            raise BackupCorrupt("not a Samizdat backup, or an unknown version")
        if not crypto.params_ok(opslimit, memlimit):
            raise BackupCorrupt("backup header names impossible KDF parameters")
        body = size - HEADER_SIZE - CHECK_SIZE
        if body <= 0 or body % crypto.BLOCK_SIZE:
            raise BackupCorrupt("backup is truncated or has trailing bytes")
        self._blocks = body // crypto.BLOCK_SIZE
        check_key, self._key = _keys(passphrase, salt, opslimit, memlimit)
        try:
            if crypto.unseal(check_key, src.read(CHECK_SIZE), head) != CHECK_CONSTANT:
                raise crypto.AuthFailed("check constant")
        except crypto.AuthFailed:
            raise WrongPassphrase("wrong backup passphrase (or a damaged backup header)") from None
        self._src = src
        self._prefix = _BLOCK_PREFIX + head
        self._buf = bytearray()
        self._next = 0

    def items(self) -> Iterator[Item]:
        """Every item, in order; checks END's count and that nothing follows."""
        count = 0
        while True:
            tag = self._read(1)[0]
            if tag == T_END:
                (expected,) = struct.unpack(">Q", self._read(8))
                if expected != count or self._buf or self._next != self._blocks:
                    raise BackupCorrupt("backup item stream does not end cleanly")
                return
            count += 1
            yield self._item(tag)

    def _item(self, tag: int) -> Item:
        if tag == T_NAMESPACE:
            (n,) = struct.unpack(">H", self._read(2))
            raw = self._read(n)
            (log_last,) = struct.unpack(">Q", self._read(8))
            try:
                return NamespaceItem(raw.decode(), log_last)
            except UnicodeDecodeError:
                raise BackupCorrupt("namespace name is not UTF-8") from None
        if tag == T_RECORD:
            return RecordItem(self._lv(), self._lv())
        if tag == T_LOG:
            (seq,) = struct.unpack(">Q", self._read(8))
            return LogItem(seq, self._lv())
        if tag == T_FILE:
            return FileItem(self._read(16))
        if tag == T_FILE_DATA:
            return FileDataItem(self._lv())
        if tag == T_FILE_END:
            return FileEndItem()
        raise BackupCorrupt(f"unknown backup item tag {tag}")

    def _lv(self) -> bytes:
        (n,) = struct.unpack(">I", self._read(4))
        return self._read(n)

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._next == self._blocks:
                raise BackupCorrupt("backup item stream is truncated")
            final = self._next == self._blocks - 1
            try:
                data = crypto.open_block(
                    self._key, self._prefix, self._next, final, self._src.read(crypto.BLOCK_SIZE)
                )
            except crypto.AuthFailed:
                raise BackupCorrupt(f"backup block {self._next} failed authentication") from None
            if not final and len(data) != crypto.BLOCK_DATA:
                raise BackupCorrupt("short non-final backup block")
            self._buf += data
            self._next += 1
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out
