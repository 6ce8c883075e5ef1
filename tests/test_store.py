"""The encrypted local store: round trips, tampering, atomicity, backups, and
the canary scan (no plaintext, name or key anywhere under the home directory).

All stores use ``fast_kdf`` (Argon2id at libsodium's minimum cost).
"""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import stat
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.store import (
    BackupCorrupt,
    Store,
    StoreClosed,
    StoreCorrupt,
    StoreExists,
    StoreLocked,
    StoreNotFound,
    UnknownFile,
    WrongPassphrase,
    backup,
    crypto,
    errors,
)
from client.store.database import DB_NAME
from client.store.store import FILES_DIR
from protocol.errors import LocalError

PW = b"correct horse battery staple"
BLOCK = crypto.BLOCK_DATA


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    with Store.create(home, PW, fast_kdf=True) as s:
        yield s


@contextlib.contextmanager
def raw_db(home: Path) -> Iterator[sqlite3.Connection]:
    """A plain SQLite connection to a *closed* store, for tampering."""
    with contextlib.closing(sqlite3.connect(home / DB_NAME, isolation_level=None)) as db:
        yield db


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- lifecycle ---------------------------------------------------------------


def test_error_codes_are_local_and_in_the_40s() -> None:
    classes = [
        getattr(errors, n)
        for n in dir(errors)
        if isinstance(getattr(errors, n), type)
        and issubclass(getattr(errors, n), errors.StoreError)
    ]
    assert len(classes) == 9
    assert all(issubclass(c, LocalError) and 40 <= c.code <= 49 for c in classes)
    assert len({c.code for c in classes}) == len(classes)


def test_create_exists_open_close(home: Path) -> None:
    assert not Store.exists(home)
    with pytest.raises(StoreNotFound):
        Store.open(home, PW)
    with Store.create(home, PW, fast_kdf=True) as s:
        s.put("ns", b"k", b"v")
    assert Store.exists(home)
    with pytest.raises(StoreExists):
        Store.create(home, PW, fast_kdf=True)
    with Store.open(home, PW) as s:
        assert s.get("ns", b"k") == b"v"
    with pytest.raises(StoreClosed):
        s.get("ns", b"k")
    s.close()  # idempotent


def test_empty_passphrase_refused(home: Path) -> None:
    with pytest.raises(LocalError):
        Store.create(home, b"", fast_kdf=True)


def test_wrong_passphrase(home: Path) -> None:
    Store.create(home, PW, fast_kdf=True).close()
    with pytest.raises(WrongPassphrase):
        Store.open(home, PW + b"!")
    Store.open(home, PW).close()  # the failed attempt left the store usable


def test_second_opener_is_locked_out(store: Store, home: Path) -> None:
    with pytest.raises(StoreLocked):
        Store.open(home, PW)
    store.put("ns", b"k", b"v")


def test_permissions(store: Store, home: Path) -> None:
    store.put("ns", b"k", b"v")  # the WAL exists while the store is open
    store.write_file([b"data"])
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / FILES_DIR).stat().st_mode) == 0o700
    files = all_files(home)
    assert any(p.name.endswith("-wal") for p in files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), files


def test_garbage_database_is_corrupt(home: Path) -> None:
    home.mkdir()
    (home / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreCorrupt):
        Store.open(home, PW)


def test_doctored_kdf_parameters_are_refused(home: Path) -> None:
    Store.create(home, PW, fast_kdf=True).close()
    with raw_db(home) as db:
        db.execute("UPDATE header SET memlimit = ?", (1 << 40,))
    with pytest.raises(StoreCorrupt):
        Store.open(home, PW)


def test_weakened_kdf_parameters_do_not_unlock(home: Path) -> None:
    Store.create(home, PW, fast_kdf=True).close()
    with raw_db(home) as db:
        db.execute("UPDATE header SET opslimit = opslimit + 1")
    with pytest.raises(WrongPassphrase):  # the parameters are AAD of the wrap
        Store.open(home, PW)


# -- records -------------------------------------------------------------------


def test_records_round_trip(store: Store, home: Path) -> None:
    assert store.get("contacts", b"alice") is None
    assert store.items("contacts") == []
    store.put("contacts", b"bob", b"Bob")
    store.put("contacts", b"alice", b"Alice")
    store.put("contacts", b"alice", b"Alice Liddell")  # replaces
    store.put("groups", b"alice", b"another namespace")
    store.put("contacts", b"", b"")  # empty key and value are fine
    assert store.get("contacts", b"alice") == b"Alice Liddell"
    assert store.items("contacts") == [(b"", b""), (b"alice", b"Alice Liddell"), (b"bob", b"Bob")]
    store.delete("contacts", b"bob")
    store.delete("contacts", b"nobody")  # idempotent
    assert store.get("contacts", b"bob") is None
    assert store.get("groups", b"alice") == b"another namespace"
    big = bytes(range(256)) * 1000
    store.put("blobs", b"big", big)
    store.close()
    with Store.open(home, PW) as s:
        assert s.items("contacts") == [(b"", b""), (b"alice", b"Alice Liddell")]
        assert s.get("blobs", b"big") == big


def test_type_misuse_is_a_local_error(store: Store) -> None:
    with pytest.raises(LocalError):
        store.put("ns", "key", b"v")  # type: ignore[arg-type]
    with pytest.raises(LocalError):
        store.put(b"ns", b"k", b"v")  # type: ignore[arg-type]
    with pytest.raises(LocalError):
        store.read_log("ns", limit=-1)


def test_values_are_padded_to_size_classes(store: Store, home: Path) -> None:
    store.put("ns", b"a", b"x" * 10)
    store.put("ns", b"b", b"y" * 40)
    store.put("ns", b"c", b"z" * 200)
    store.append("log", b"short")
    store.append("log", b"a little longer")
    store.close()
    with raw_db(home) as db:
        sizes = [len(r[0]) for r in db.execute("SELECT box FROM records ORDER BY box")]
        log_sizes = {len(r[0]) for r in db.execute("SELECT box FROM log")}
    overhead = crypto.BOX_OVERHEAD
    assert sorted(s - overhead for s in sizes) == [64, 64, 256]
    assert log_sizes == {64 + overhead}
    assert [crypto.size_class(n) for n in (0, 64, 65, 65536, 65537)] == [
        64,
        64,
        128,
        65536,
        131072,
    ]


# -- tampering -----------------------------------------------------------------


def test_tampered_record_is_corrupt_not_garbage(store: Store, home: Path) -> None:
    store.put("ns", b"k", b"secret value")
    store.close()
    with raw_db(home) as db:
        (box,) = db.execute("SELECT box FROM records").fetchone()
        db.execute("UPDATE records SET box = ?", (flip(box, len(box) // 2),))
    with Store.open(home, PW) as s:
        with pytest.raises(StoreCorrupt):
            s.get("ns", b"k")
        with pytest.raises(StoreCorrupt):
            s.items("ns")


def test_swapped_records_are_detected(store: Store, home: Path) -> None:
    store.put("ns", b"alice", b"trusted")
    store.put("ns", b"mallory", b"untrusted")
    store.put("other", b"alice", b"elsewhere")
    store.close()
    with raw_db(home) as db:
        rows = db.execute("SELECT ns, lookup, box FROM records").fetchall()
        boxes = [r[2] for r in rows]
        # Rotate every ciphertext one row along: each lands under a foreign
        # (namespace, lookup id), within and across namespaces.
        for (ns, lookup, _), box in zip(rows, boxes[1:] + boxes[:1], strict=True):
            db.execute("UPDATE records SET box = ? WHERE ns = ? AND lookup = ?", (box, ns, lookup))
    with Store.open(home, PW) as s:
        for ns, key in [("ns", b"alice"), ("ns", b"mallory"), ("other", b"alice")]:
            # Caught by the AEAD (the logical key is AAD), before any key check.
            with pytest.raises(StoreCorrupt, match="failed authentication"):
                s.get(ns, key)
        with pytest.raises(StoreCorrupt, match="failed authentication"):
            s.items("ns")


def test_swapped_log_entries_are_detected(store: Store, home: Path) -> None:
    store.append("chat", b"first")
    store.append("chat", b"second")
    store.close()
    with raw_db(home) as db:
        (b1,), (b2,) = db.execute("SELECT box FROM log ORDER BY seq").fetchall()
        db.execute("UPDATE log SET box = ? WHERE seq = 1", (b2,))
        db.execute("UPDATE log SET box = ? WHERE seq = 2", (b1,))
    with Store.open(home, PW) as s, pytest.raises(StoreCorrupt):
        s.read_log("chat")


def test_tampered_files_are_detected(store: Store, home: Path) -> None:
    fids = [store.write_file([b"a" * (3 * BLOCK)]) for _ in range(4)]
    paths = [home / FILES_DIR / f for f in fids]
    data = paths[0].read_bytes()
    paths[0].write_bytes(flip(data, crypto.BLOCK_SIZE + 100))  # a flipped bit
    paths[1].write_bytes(data[: 2 * crypto.BLOCK_SIZE])  # truncated to whole blocks
    paths[2].write_bytes(paths[2].read_bytes() + data[: crypto.BLOCK_SIZE])  # extended
    b = paths[3].read_bytes()
    n = crypto.BLOCK_SIZE
    paths[3].write_bytes(b[n : 2 * n] + b[:n] + b[2 * n :])  # reordered
    for fid in fids:
        with pytest.raises(StoreCorrupt):
            b"".join(store.read_file(fid))
    paths[0].unlink()
    with pytest.raises(StoreCorrupt):
        store.read_file(fids[0])


# -- logs ------------------------------------------------------------------------


def test_log_round_trip(store: Store, home: Path) -> None:
    assert store.read_log("chat") == []
    assert store.log_count("chat") == 0
    seqs = [store.append("chat", f"message {i}".encode()) for i in range(1, 11)]
    assert seqs == list(range(1, 11))
    assert store.append("other", b"x") == 1  # per-namespace numbering
    assert store.log_count("chat") == 10
    assert store.read_log("chat", after=7) == [
        (8, b"message 8"),
        (9, b"message 9"),
        (10, b"message 10"),
    ]
    assert store.read_log("chat", limit=2) == [(1, b"message 1"), (2, b"message 2")]
    assert store.read_log("chat", limit=2, newest_first=True) == [
        (10, b"message 10"),
        (9, b"message 9"),
    ]
    assert store.read_log("chat", limit=0) == []
    store.delete_log_entry("chat", 10)
    store.delete_log_entry("chat", 5)
    store.delete_log_entry("chat", 99)  # idempotent
    assert store.log_count("chat") == 8
    assert [s for s, _ in store.read_log("chat")] == [1, 2, 3, 4, 6, 7, 8, 9]
    assert store.append("chat", b"after delete") == 11  # numbers are never reused
    store.close()
    with Store.open(home, PW) as s:
        assert s.read_log("chat", newest_first=True, limit=1) == [(11, b"after delete")]
        assert s.append("chat", b"next") == 12


# -- files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK], ids=lambda n: f"bytes-{n}"
)
def test_file_round_trip(store: Store, home: Path, size: int) -> None:
    data = bytes((i * 7) & 0xFF for i in range(size))
    pieces = [data[i : i + 1000] for i in range(0, size, 1000)]
    fid = store.write_file(iter(pieces))
    assert len(fid) == 32
    assert b"".join(store.read_file(fid)) == data
    on_disk = (home / FILES_DIR / fid).stat().st_size
    assert on_disk == max(1, -(-size // BLOCK)) * crypto.BLOCK_SIZE  # leaks the block count only
    store.close()
    with Store.open(home, PW) as s:
        assert b"".join(s.read_file(fid)) == data
        s.delete_file(fid)
        with pytest.raises(UnknownFile):
            s.read_file(fid)
        with pytest.raises(UnknownFile):
            s.delete_file(fid)
    assert not (home / FILES_DIR / fid).exists()


def test_unknown_and_malformed_file_ids(store: Store) -> None:
    for bad in ["0" * 32, "../" + "0" * 29, "ABCDEF" * 5 + "00", ""]:
        with pytest.raises(UnknownFile):
            store.read_file(bad)


def test_files_are_streamed_not_held(store: Store) -> None:
    piece = b"\x5a" * (1 << 20)
    total = 16

    def source() -> Iterator[bytes]:
        for _ in range(total):
            yield piece

    tracemalloc.start()
    try:
        fid = store.write_file(source())
        _, peak_write = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        count = sum(len(chunk) for chunk in store.read_file(fid))
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == total << 20
    assert peak_write < 4 << 20, peak_write  # a 16 MiB file, under 4 MiB resident
    assert peak_read < 1 << 20, peak_read


def test_leftovers_of_a_crash_are_collected(store: Store, home: Path) -> None:
    fid = store.write_file([b"keep"])
    store.close()
    (home / FILES_DIR / ("ab" * 16)).write_bytes(b"orphan without a key row")
    (home / FILES_DIR / ("cd" * 16 + ".tmp")).write_bytes(b"partial")
    with Store.open(home, PW) as s:
        assert sorted(p.name for p in (home / FILES_DIR).iterdir()) == [fid]
        assert b"".join(s.read_file(fid)) == b"keep"


# -- transactions --------------------------------------------------------------


class Boom(Exception):
    pass


def test_transaction_is_atomic(store: Store, home: Path) -> None:
    store.put("ns", b"old", b"1")
    kept = store.write_file([b"kept"])
    with pytest.raises(Boom), store.transaction():
        store.put("ns", b"new", b"2")
        store.delete("ns", b"old")
        store.append("chat", b"never")
        written = store.write_file([b"never"])
        store.delete_file(kept)
        raise Boom
    assert store.items("ns") == [(b"old", b"1")]
    assert store.read_log("chat") == []
    assert store.append("chat", b"first") == 1  # the counter rolled back too
    assert b"".join(store.read_file(kept)) == b"kept"
    with pytest.raises(UnknownFile):
        store.read_file(written)
    assert sorted(p.name for p in (home / FILES_DIR).iterdir()) == [kept]


def test_transaction_commits_together(store: Store, home: Path) -> None:
    fid = store.write_file([b"doomed"])
    with store.transaction():
        store.put("ns", b"a", b"1")
        store.put("ns", b"b", b"2")
        store.delete_file(fid)
        assert (home / FILES_DIR / fid).exists()  # unlinked only on commit
    assert not (home / FILES_DIR / fid).exists()
    store.close()
    with Store.open(home, PW) as s:
        assert s.items("ns") == [(b"a", b"1"), (b"b", b"2")]


def test_nested_transaction_rolls_back_alone(store: Store) -> None:
    with store.transaction():
        store.put("ns", b"outer", b"1")
        with pytest.raises(Boom), store.transaction():
            store.put("ns", b"inner", b"2")
            raise Boom
        store.put("ns", b"after", b"3")
    assert [k for k, _ in store.items("ns")] == [b"after", b"outer"]


# -- passphrase ----------------------------------------------------------------


def test_change_passphrase(store: Store, home: Path) -> None:
    store.put("ns", b"k", b"v")
    with pytest.raises(WrongPassphrase):
        store.change_passphrase(b"not it", b"new")
    store.change_passphrase(PW, b"new passphrase")
    store.put("ns", b"k2", b"v2")
    store.close()
    with pytest.raises(WrongPassphrase):
        Store.open(home, PW)
    with Store.open(home, b"new passphrase") as s:
        assert s.items("ns") == [(b"k", b"v"), (b"k2", b"v2")]


# -- backup --------------------------------------------------------------------


def populate(s: Store) -> dict[str, object]:
    s.put("contacts", b"alice", b"Alice")
    s.put("contacts", b"bob", b"Bob" * 500)
    s.put("identity", b"key", bytes(range(32)))
    for i in range(1, 6):
        s.append("chat:1", f"line {i}".encode())
    s.delete_log_entry("chat:1", 2)
    s.delete_log_entry("chat:1", 5)
    s.put("empty-later", b"x", b"y")
    s.delete("empty-later", b"x")
    fids = [s.write_file([bytes([n]) * n * 30000]) for n in range(4)]
    return {"fids": fids}


def snapshot(s: Store, fids: list[str]) -> dict[str, object]:
    return {
        "contacts": s.items("contacts"),
        "identity": s.items("identity"),
        "empty": s.items("empty-later"),
        "chat": s.read_log("chat:1"),
        "files": {f: b"".join(s.read_file(f)) for f in fids},
    }


def test_backup_round_trip(store: Store, tmp_path: Path) -> None:
    fids = populate(store)["fids"]
    assert isinstance(fids, list)
    before = snapshot(store, fids)
    bak = tmp_path / "backup.szb"
    store.export_backup(bak, b"backup pass")
    assert stat.S_IMODE(bak.stat().st_mode) == 0o600
    assert (bak.stat().st_size - backup.HEADER_SIZE - backup.CHECK_SIZE) % crypto.BLOCK_SIZE == 0
    new_home = tmp_path / "restored"
    with Store.import_backup(bak, b"backup pass", new_home, b"new pw", fast_kdf=True) as r:
        assert snapshot(r, fids) == before
        assert r.append("chat:1", b"continues") == 6  # the counter came along
        assert r._master != store._master  # an import rotates the master key
    with Store.open(new_home, b"new pw") as r:
        assert r.read_log("chat:1", newest_first=True, limit=1) == [(6, b"continues")]


def test_backup_into_an_existing_empty_dir(store: Store, tmp_path: Path) -> None:
    store.put("ns", b"k", b"v")
    store.export_backup(tmp_path / "b", b"bp")
    target = tmp_path / "empty"
    target.mkdir()
    with Store.import_backup(tmp_path / "b", b"bp", target, b"pw", fast_kdf=True) as r:
        assert r.get("ns", b"k") == b"v"
    with pytest.raises(StoreExists):
        Store.import_backup(tmp_path / "b", b"bp", target, b"pw", fast_kdf=True)


def tampered_backups(good: bytes) -> dict[str, bytes]:
    first_block = backup.HEADER_SIZE + backup.CHECK_SIZE
    n = crypto.BLOCK_SIZE
    return {
        "flipped-block": flip(good, first_block + 500),
        "flipped-last-block": flip(good, len(good) - 20),
        "truncated-block": good[:-n],
        "truncated-bytes": good[:-7],
        "extended": good + good[first_block : first_block + n],
        "swapped-blocks": good[:first_block]
        + good[first_block + n : first_block + 2 * n]
        + good[first_block : first_block + n]
        + good[first_block + 2 * n :],
        "flipped-magic": flip(good, 0),
        "empty": b"",
    }


def test_bad_backups_write_nothing(store: Store, tmp_path: Path) -> None:
    populate(store)
    bak = tmp_path / "b.szb"
    store.export_backup(bak, b"bp")
    good = bak.read_bytes()
    assert len(good) > 3 * crypto.BLOCK_SIZE
    before = sorted(tmp_path.iterdir())
    target = tmp_path / "target"
    with pytest.raises(WrongPassphrase):
        Store.import_backup(bak, b"not bp", target, b"pw", fast_kdf=True)
    for name, data in tampered_backups(good).items():
        bad = tmp_path / f"bad-{name}"
        bad.write_bytes(data)
        with pytest.raises(BackupCorrupt):
            Store.import_backup(bad, b"bp", target, b"pw", fast_kdf=True)
        bad.unlink()
        assert sorted(tmp_path.iterdir()) == before, name  # no home, no staging leftovers
    # The KDF salt and parameters are bound to every box: a changed salt reads
    # as a wrong passphrase (the two cannot be told apart), never as data.
    salt_at = backup.HEADER_SIZE - 1
    (tmp_path / "bad-salt").write_bytes(flip(good, salt_at))
    with pytest.raises(WrongPassphrase):
        Store.import_backup(tmp_path / "bad-salt", b"bp", target, b"pw", fast_kdf=True)
    assert not target.exists()


def crafted(path: Path, build: Callable[[backup.BackupWriter], None]) -> Path:
    """A validly encrypted backup whose item stream ``build`` writes."""
    with path.open("wb") as out:
        w = backup.BackupWriter(out, b"bp", crypto.FAST_OPSLIMIT, crypto.FAST_MEMLIMIT)
        build(w)
        w.finish()
    return path


def _dup_record(w: backup.BackupWriter) -> None:
    w.namespace("ns", 0)
    w.record(b"k", b"1")
    w.record(b"k", b"2")


def _dup_namespace(w: backup.BackupWriter) -> None:
    w.namespace("ns", 0)
    w.namespace("ns", 0)


def _seq_beyond_counter(w: backup.BackupWriter) -> None:
    w.namespace("ns", 1)
    w.log(2, b"x")


def _record_before_namespace(w: backup.BackupWriter) -> None:
    w.record(b"k", b"v")


def _unterminated_file(w: backup.BackupWriter) -> None:
    w.file(b"\x01" * 16)
    w.file_data(b"abc")


def _stray_file_data(w: backup.BackupWriter) -> None:
    w.file_data(b"abc")


def _unknown_tag(w: backup.BackupWriter) -> None:
    w._item(99, b"")


def _record_inside_file(w: backup.BackupWriter) -> None:
    w.namespace("ns", 0)
    w.file(b"\x02" * 16)
    w.record(b"k", b"v")


@pytest.mark.parametrize(
    "build",
    [
        _dup_record,
        _dup_namespace,
        _seq_beyond_counter,
        _record_before_namespace,
        _unterminated_file,
        _stray_file_data,
        _unknown_tag,
        _record_inside_file,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_inconsistent_backup_streams_write_nothing(
    tmp_path: Path, build: Callable[[backup.BackupWriter], None]
) -> None:
    bak = crafted(tmp_path / "b", build)
    with pytest.raises(BackupCorrupt):
        Store.import_backup(bak, b"bp", tmp_path / "target", b"pw", fast_kdf=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_crafted_backup_imports(tmp_path: Path) -> None:
    def build(w: backup.BackupWriter) -> None:
        w.namespace("ns", 3)
        w.record(b"k", b"v")
        w.log(3, b"third")
        w.file(b"\x03" * 16)
        w.file_data(b"ab")
        w.file_data(b"cd")
        w.file_end()

    bak = crafted(tmp_path / "b", build)
    with Store.import_backup(bak, b"bp", tmp_path / "t", b"pw", fast_kdf=True) as s:
        assert s.items("ns") == [(b"k", b"v")]
        assert s.read_log("ns") == [(3, b"third")]
        assert s.append("ns", b"fourth") == 4
        assert b"".join(s.read_file("03" * 16)) == b"abcd"


# -- the canary scan -------------------------------------------------------------

CANARIES = {
    "value": b"CANARY-value-5e1d0b",
    "key": b"CANARY-key-93af22",
    "namespace": b"CANARY-namespace-7c41aa",
    "log": b"CANARY-log-entry-2b8e90",
    "file": b"CANARY-file-content-f00d17",
    "passphrase": b"CANARY-passphrase-0a9f3c",
    "backup passphrase": b"CANARY-backup-pass-6d2e81",
}


def forms(secret: bytes) -> dict[str, bytes]:
    """The spellings a careless implementation might write ``secret`` in."""
    out = {
        "raw": secret,
        "utf-16-le": secret.decode("latin-1").encode("utf-16-le"),
        "utf-16-be": secret.decode("latin-1").encode("utf-16-be"),
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
    }
    for shift in range(3):  # base64 at each alignment, minus the ragged edges
        out[f"base64+{shift}"] = base64.b64encode(secret[shift:])[2:-4]
        out[f"urlsafe-b64+{shift}"] = base64.urlsafe_b64encode(secret[shift:])[2:-4]
    return out


def scan(paths: list[Path], secrets: dict[str, bytes]) -> list[str]:
    found = []
    for path in paths:
        data = path.read_bytes()
        for name, secret in secrets.items():
            for form, needle in forms(secret).items():
                if needle in data:
                    found.append(f"{name} ({form}) in {path.name}")
    return found


def key_material(s: Store) -> dict[str, bytes]:
    """The master key, every subkey, the passphrase key and every file key."""
    conn = s._conn
    assert conn is not None
    salt, ops, mem = conn.execute("SELECT salt, opslimit, memlimit FROM header").fetchone()
    out = {
        "master": s._master,
        "kek": crypto.passphrase_key(CANARIES["passphrase"], salt, ops, mem),
        **{f"subkey {k}": v for k, v in vars(s._keys).items()},
    }
    for (fid,) in conn.execute("SELECT id FROM files").fetchall():
        out[f"file key {fid.hex()}"] = s._file_key(fid)
    return out


def test_canary_scan(tmp_path: Path) -> None:
    home = tmp_path / "home"
    c = CANARIES
    s = Store.create(home, c["passphrase"], fast_kdf=True)
    # Every path a canary can take in, several times over so pages churn.
    for i in range(50):
        s.put(c["namespace"].decode(), c["key"] + str(i).encode(), c["value"] * (i + 1))
        s.append(c["namespace"].decode(), c["log"] * (i + 1))
    s.put("plain", c["key"], c["value"])
    fid = s.write_file([c["file"] * 5000])
    s.put("deleted", c["key"], c["value"])
    s.delete("deleted", c["key"])
    s.delete_log_entry(c["namespace"].decode(), 3)
    bak = tmp_path / "backup.szb"
    s.export_backup(bak, c["backup passphrase"])
    keys = key_material(s)
    header = bak.read_bytes()[: backup.HEADER_SIZE]
    _, _, _, ops, mem, salt = backup._HEADER.unpack(header)
    keys["backup check key"], keys["backup data key"] = backup._keys(
        c["backup passphrase"], salt, ops, mem
    )
    secrets = {**c, **keys}

    # While open: the database, its WAL and the files.
    open_files = [*all_files(home), bak]
    assert any(p.name.endswith("-wal") for p in open_files)
    assert scan(open_files, secrets) == []
    # The scan itself works: an unencrypted copy would be caught.
    (tmp_path / "control").write_bytes(b"xx" + c["value"].hex().encode() + b"yy")
    assert scan([tmp_path / "control"], {"value": c["value"]}) == ["value (hex) in control"]

    assert b"".join(s.read_file(fid)) == c["file"] * 5000
    s.close()
    closed_files = [*all_files(home), bak]
    assert scan(closed_files, secrets) == []

    restored = tmp_path / "restored"
    with Store.import_backup(
        bak, c["backup passphrase"], restored, c["passphrase"], fast_kdf=True
    ) as r:
        assert r.get(c["namespace"].decode(), c["key"] + b"7") == c["value"] * 8
        secrets.update({f"restored {k}": v for k, v in key_material(r).items()})
    assert scan([*all_files(home), *all_files(restored), bak], secrets) == []


# -- property: random keys and values round-trip --------------------------------

namespaces = st.text(min_size=0, max_size=12)
entries = st.dictionaries(
    st.tuples(namespaces, st.binary(max_size=40)), st.binary(max_size=300), max_size=25
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=entries, log=st.lists(st.binary(max_size=200), max_size=10))
def test_random_round_trip(data: dict[tuple[str, bytes], bytes], log: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "h"
        with Store.create(home, PW, fast_kdf=True) as s:
            for (ns, key), value in data.items():
                s.put(ns, key, value)
            for entry in log:
                s.append("log", entry)
        with Store.open(home, PW) as s:
            for (ns, key), value in data.items():
                assert s.get(ns, key) == value
            for ns in {ns for ns, _ in data}:
                expected = sorted((k, v) for (n, k), v in data.items() if n == ns)
                assert s.items(ns) == expected
            assert s.read_log("log") == list(enumerate(log, start=1))
