"""The encrypted-at-rest local store (see :mod:`client.store.store` for the
theory of operation and SPEC.md §9 for the on-disk format).

``crypto`` holds the primitives and byte layouts, ``database`` the SQLite
settings, schema and header row, ``backup`` the backup file format, ``store``
the :class:`Store` API, ``errors`` its errors (codes 40-49).
"""

from __future__ import annotations

from client.store.errors import (
    BackupCorrupt,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    StoreExists,
    StoreLocked,
    StoreNotFound,
    UnknownFile,
    WrongPassphrase,
)
from client.store.store import Store

__all__ = [
    "BackupCorrupt",
    "Store",
    "StoreClosed",
    "StoreCorrupt",
    "StoreError",
    "StoreExists",
    "StoreLocked",
    "StoreNotFound",
    "UnknownFile",
    "WrongPassphrase",
]
