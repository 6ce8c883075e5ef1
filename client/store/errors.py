"""Errors of the local encrypted store (codes 40-49, beneath ``LocalError``).

The store is "local": every one of these is about this device's own files or
the caller's use of them, never about bytes from the network.
"""

from __future__ import annotations

from protocol.errors import LocalError


class StoreError(LocalError):
    """Root of the store's errors."""

    code = 40


class WrongPassphrase(StoreError):
    """The passphrase does not unlock this store (or this backup)."""

    code = 41


class StoreCorrupt(StoreError):
    """Bytes on disk failed authentication or do not parse: tampering or damage.

    Never raised for a wrong passphrase, and never replaced by garbage data.
    """

    code = 42


class StoreLocked(StoreError):
    """Another process (or another ``Store`` object) has this store open."""

    code = 43


class StoreClosed(StoreError):
    """The ``Store`` was used after ``close()``."""

    code = 44


class StoreNotFound(StoreError):
    """``open`` was given a home directory that holds no store."""

    code = 45


class StoreExists(StoreError):
    """``create`` (or a backup import) would overwrite an existing store."""

    code = 46


class BackupCorrupt(StoreCorrupt):
    """A backup file is truncated, extended or tampered with."""

    code = 47


class UnknownFile(StoreError):
    """No encrypted file with this id is in the store."""

    code = 48
