"""The local key agent: a passphrase cache for the ``samizdat`` command, like
ssh-agent's or gpg-agent's (SPEC.md §9, "Local key agent").

Every store-opening command used to pay the store's Argon2id (MODERATE cost,
about half a second) before doing anything.  After a command has unlocked a
store with its passphrase, it starts an agent process that holds the store's
32-byte master key -- never the passphrase -- in memory, and the next
commands ask it for the key instead of running Argon2id again.

Theory of operation
-------------------
* One agent per store home, reachable on a Unix socket ``HOME/agent/sock``
  (directory 0700, socket 0600).  If that path is too long for ``AF_UNIX``,
  ``$XDG_RUNTIME_DIR`` (or the temp dir) holds ``samizdat-agent-UID/HASH/sock``
  instead, each directory 0700 and checked to be ours and not a symlink.
* The command that unlocked the store binds the listening socket itself,
  starts ``python -m client.agent`` detached (new session, stdio to
  /dev/null, a minimal environment without any passphrase variable) with
  the listening socket as an inherited descriptor, and hands it the key as
  the first request on that socket.  The key is in no file, argv or env.
* Requests are one per connection: ``"SZA1" | op | u8 id_len | id |
  u16 home_len | home | [key]``; the answer is one byte (``K`` + key,
  ``N`` no key for that store, ``O`` done, ``R`` refused).  ``id`` is the
  store header's Argon2id salt, ``home`` the resolved home path: the agent
  answers only for the store it was given, and the client still checks the
  key against the store's key check before using it.
* On Linux both ends check the peer's uid with ``SO_PEERCRED``: the agent
  serves only its own uid, the client trusts only an agent of its own uid.
  Elsewhere the 0700 directory is the guard.
* The agent exits (zeroing its copy of the key) on ``lock`` (op STOP), on
  SIGTERM/SIGINT/SIGHUP, after ``idle`` seconds without a request (each
  served key refreshes it), after ``lifetime`` seconds in any case, and
  within ``WATCH`` seconds of its socket or its store disappearing.
  On Linux it is not dumpable (no core file, no ptrace or /proc/PID/mem by
  other processes of the user that are not root).

This module imports only the standard library: the agent process starts in
a few milliseconds and the client side adds nothing to a command's imports.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from pathlib import Path

#: ``SAMIZDAT_AGENT``: ``off`` (or 0/no/false) disables the agent; ``on``
#: (the default) keeps a key for ``IDLE`` seconds; a duration (``90s``,
#: ``30m``, ``2h``) sets that idle timeout.
ENV = "SAMIZDAT_AGENT"
IDLE = 600.0
LIFETIME = 8 * 3600.0
#: Seconds between the agent's checks of its socket and store.
WATCH = 2.0
#: How long a command waits for the agent's answer.  A missing agent costs
#: nothing (connecting fails at once); this only bounds a stuck one.
ANSWER_TIMEOUT = 0.5
#: Seconds a new agent waits for its key before giving up.
KEY_WAIT = 20.0

MAGIC = b"SZA1"
OP_GET, OP_PUT, OP_STOP, OP_PID = 1, 2, 3, 4
KEY_SIZE = 32
#: ``sun_path`` holds 108 bytes on Linux, 104 on the BSDs and macOS.
MAX_SOCKET_PATH = 100
_MAX_REQUEST = len(MAGIC) + 1 + 1 + 255 + 2 + 0xFFFF + KEY_SIZE
_UNITS = {"s": 1, "m": 60, "h": 3600}
_SECRET_ENV = ("SAMIZDAT_PASSPHRASE", "SAMIZDAT_BACKUP_PASSPHRASE")


class AgentError(Exception):
    """A malformed request or an unusable socket directory."""


# -- settings and paths ------------------------------------------------------


def idle_setting() -> float | None:
    """The idle timeout ``SAMIZDAT_AGENT`` asks for, or None when it is off."""
    text = os.environ.get(ENV, "on").strip().lower()
    if text in ("off", "0", "no", "false", "none"):
        return None
    if text in ("", "on", "1", "yes", "true"):
        return IDLE
    unit = _UNITS.get(text[-1:], 0)
    number = text[:-1] if unit else text
    if not number.isdigit() or int(number) == 0:
        return IDLE  # a typo must not silently turn a security setting into something odd
    return min(float(int(number) * (unit or 1)), LIFETIME)


def home_id(home: Path) -> bytes:
    """The resolved home path as bytes: what requests name."""
    return os.fsencode(str(Path(home).resolve()))


def socket_path(home: Path) -> Path | None:
    """Where the agent of ``home`` listens (its directory made private if
    needed), or None if no private directory can be had."""
    home = Path(home).resolve()
    inside = home / "agent" / "sock"
    if len(os.fsencode(str(inside))) <= MAX_SOCKET_PATH:
        return inside
    import tempfile

    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    digest = hashlib.blake2b(home_id(home), digest_size=10).hexdigest()
    path = Path(base) / f"samizdat-agent-{os.getuid()}" / digest / "sock"
    if len(os.fsencode(str(path))) > MAX_SOCKET_PATH:
        return None
    return path


def _private_dir(path: Path, *, create: bool) -> bool:
    """True if ``path`` is a directory of ours, mode 0700, not a symlink
    (made so if ``create`` and it is missing)."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    )


def _socket_dir_ok(path: Path, home: Path, *, create: bool) -> bool:
    """The socket's directory (and, outside the home, its parent) private."""
    parent = path.parent
    if parent.parent != Path(home).resolve() and not _private_dir(parent.parent, create=create):
        return False
    return _private_dir(parent, create=create)


# -- peers -------------------------------------------------------------------


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` of the other end of a Unix socket, where the
    platform tells (Linux ``SO_PEERCRED``); None elsewhere."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def peer_allowed(sock: socket.socket, owner_uid: int) -> bool:
    """True if the peer runs as ``owner_uid`` (or the platform cannot tell,
    where the 0700 directory is the guard)."""
    creds = peer_credentials(sock)
    return creds is None or creds[1] == owner_uid


# -- the wire ----------------------------------------------------------------


def encode_request(op: int, home: Path, store_id: bytes, key: bytes | bytearray = b"") -> bytes:
    name = home_id(home)
    if len(store_id) > 255 or len(name) > 0xFFFF:
        raise AgentError("store id or home path too long")
    head = MAGIC + struct.pack(">BB", op, len(store_id)) + store_id
    return head + struct.pack(">H", len(name)) + name + bytes(key)


def decode_request(data: bytes | bytearray) -> tuple[int, bytes, bytes, bytes]:
    """``(op, store_id, home, key)``; :class:`AgentError` if malformed."""
    view = memoryview(data)
    if len(view) < 8 or bytes(view[:4]) != MAGIC:
        raise AgentError("not an agent request")
    op, id_len = view[4], view[5]
    pos = 6 + id_len
    if len(view) < pos + 2:
        raise AgentError("truncated request")
    store_id = bytes(view[6:pos])
    (home_len,) = struct.unpack_from(">H", view, pos)
    pos += 2
    home = bytes(view[pos : pos + home_len])
    if len(home) != home_len:
        raise AgentError("truncated request")
    rest = view[pos + home_len :]
    want = KEY_SIZE if op == OP_PUT else 0
    if op not in (OP_GET, OP_PUT, OP_STOP, OP_PID) or len(rest) != want:
        raise AgentError("bad request")
    return op, store_id, home, bytes(rest)


def _read_all(sock: socket.socket, limit: int) -> bytearray:
    buf = bytearray()
    while len(buf) <= limit:
        chunk = sock.recv(4096)
        if not chunk:
            return buf
        buf += chunk
    raise AgentError("request too long")


def _exchange(path: Path, request: bytes, timeout: float) -> bytes | None:
    """Send one request to the agent at ``path``; its answer, or None if
    there is no agent, it is not ours, or it does not answer in time."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        creds = peer_credentials(sock)
        if creds is not None and creds[1] != os.getuid():
            return None  # a socket someone else planted: not our agent
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return bytes(_read_all(sock, 1 + KEY_SIZE))
    except (OSError, AgentError):
        return None
    finally:
        sock.close()


# -- the client side ---------------------------------------------------------


def request_key(path: Path, home: Path, store_id: bytes) -> bytes | None:
    """The key the agent at ``path`` holds for this store, if any."""
    got = _exchange(path, encode_request(OP_GET, home, store_id), ANSWER_TIMEOUT)
    if got is None or len(got) != 1 + KEY_SIZE or got[:1] != b"K":
        return None
    return got[1:]


def fetch_key(home: Path, store_id: bytes) -> bytes | None:
    """The master key of the store in ``home`` whose header salt is
    ``store_id``, from its agent, or None (no agent, another store, off).
    The caller must check it against the store's key check."""
    if idle_setting() is None:
        return None
    path = socket_path(home)
    if path is None or not _socket_dir_ok(path, home, create=False):
        return None
    return request_key(path, home, store_id)


def agent_pid(home: Path) -> int | None:
    """The pid of the agent serving ``home``, or None.  (Not from
    ``SO_PEERCRED``: a connection queued before the agent took over the
    listening socket carries the credentials of the command that bound it.)"""
    path = socket_path(home)
    if path is None:
        return None
    got = _exchange(path, encode_request(OP_PID, home, b""), 2.0)
    if got is None or len(got) != 5 or got[:1] != b"I":
        return None
    pid: int = struct.unpack(">I", got[1:])[0]
    return pid


def stop(home: Path) -> bool:
    """End the agent of ``home`` (``samizdat lock``, a passphrase change):
    True if one was running.  One that does not answer within seconds is
    left to its own checks: ``start`` replaces its socket, which it notices."""
    path = socket_path(home)
    if path is None:
        return False
    return _exchange(path, encode_request(OP_STOP, home, b""), 2.0) == b"O"


def start(home: Path, store_id: bytes, key: bytes, *, idle: float | None = None) -> bool:
    """Start an agent holding ``key`` for the store in ``home`` (replacing any
    agent there); False if there is no private place for its socket.

    The listening socket is bound here and inherited by the agent, and the
    key queued as the first request on it, so this returns without waiting
    for the agent's interpreter to start."""
    idle = idle if idle is not None else idle_setting()
    path = socket_path(home)
    if idle is None or path is None or len(key) != KEY_SIZE:
        return False
    stop(home)
    if not _socket_dir_ok(path, home, create=True):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            listener.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        listener.listen(16)
        _spawn(listener, Path(home), path, idle)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return False
    finally:
        listener.close()
    return _hand_over(path, encode_request(OP_PUT, home, store_id, key))


def _hand_over(path: Path, request: bytes) -> bool:
    """Queue the key on the new agent's socket without waiting for its
    answer (its interpreter may still be starting): the connection waits in
    the listening socket's backlog, which only that agent can accept."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)
        sock.connect(str(path))
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return True
    except OSError:
        return False
    finally:
        sock.close()


_children: list[object] = []  # the agents started: see _spawn


def _spawn(listener: socket.socket, home: Path, path: Path, idle: float) -> None:
    import subprocess

    root = str(Path(__file__).resolve().parent.parent)
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT", "PYTHONPYCACHEPREFIX")
        or k == "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPATH"] = root
    assert not any(k in env for k in _SECRET_ENV)
    fd = listener.fileno()
    args = [sys.executable, "-m", "client.agent", "--fd", str(fd), "--home", str(home)]
    args += ["--socket", str(path), "--idle", str(idle), "--lifetime", str(LIFETIME)]
    proc = subprocess.Popen(
        args,
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd="/",
        start_new_session=True,
    )
    # kept, so that no ResourceWarning fires for a child that outlives us
    _children.append(proc)


# -- the agent process -------------------------------------------------------


class Agent:
    """The server: one listening socket, one key, requests one at a time."""

    def __init__(
        self, listener: socket.socket, home: Path, path: Path, *, idle: float, lifetime: float
    ) -> None:
        self.listener = listener
        self.home = Path(home).resolve()
        self.path = Path(path)
        self.idle = idle
        self.owner_uid = os.getuid()
        self.key = bytearray(KEY_SIZE)
        self.store_id: bytes | None = None  # set by the first PUT
        self.started = time.monotonic()
        self.deadline = self.started + lifetime
        self.last_use = self.started
        self.running = True
        try:
            self.inode: int | None = os.stat(self.path).st_ino
        except OSError:
            self.inode = None

    def close(self) -> None:
        self.running = False

    def serve(self) -> None:
        try:
            while self.running:
                now = time.monotonic()
                left = min(self.deadline, self.last_use + self.idle) - now
                if left <= 0 or not self._still_wanted():
                    break
                if self.store_id is None and now - self.started > KEY_WAIT:
                    break  # the command that started us never handed the key
                ready, _, _ = select.select([self.listener], [], [], min(left, WATCH))
                if ready and self.running:
                    self._one()
        finally:
            self._wipe()

    def _still_wanted(self) -> bool:
        """Our socket is still there (not replaced) and so is the store."""
        try:
            if os.stat(self.path).st_ino != self.inode:
                return False
        except OSError:
            return False
        return (self.home / "store.db").is_file()

    def _one(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2.0)
            request = bytearray()
            try:
                request = _read_all(conn, _MAX_REQUEST)  # whole, so the refusal is read
                if not peer_allowed(conn, self.owner_uid):
                    conn.sendall(b"R")
                    return
                op, store_id, home, key = decode_request(request)
                conn.sendall(self._answer(op, store_id, home, key))
                if op == OP_GET and self.store_id is not None and store_id == self.store_id:
                    conn.sendall(memoryview(self.key))
            except (OSError, AgentError):
                return
            finally:
                request[:] = bytes(len(request))  # a put's copy of the key

    def _answer(self, op: int, store_id: bytes, home: bytes, key: bytes) -> bytes:
        if home != os.fsencode(str(self.home)):
            return b"N"
        if op == OP_STOP:
            self.running = False
            return b"O"
        if op == OP_PID:
            return b"I" + struct.pack(">I", os.getpid())
        if op == OP_PUT:
            if self.store_id is not None:
                return b"R"  # one key per agent: a new key means a new agent
            self.key[:] = key
            self.store_id = store_id
            self.last_use = time.monotonic()
            return b"O"
        if self.store_id is None or store_id != self.store_id:
            return b"N"
        self.last_use = time.monotonic()
        return b"K"

    def _wipe(self) -> None:
        self.key[:] = bytes(KEY_SIZE)
        self.store_id = None
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        if self.path.parent.parent != self.home:
            with contextlib.suppress(OSError):
                os.rmdir(self.path.parent)


def _harden() -> None:
    """No core dumps; on Linux, not dumpable (other non-root processes of the
    same user cannot ptrace it or read its memory through /proc)."""
    with contextlib.suppress(Exception):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            pr_set_dumpable = 4
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m client.agent")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--idle", type=float, default=IDLE)
    parser.add_argument("--lifetime", type=float, default=LIFETIME)
    args = parser.parse_args(argv)
    _harden()
    listener = socket.socket(fileno=args.fd)
    agent = Agent(listener, args.home, args.socket, idle=args.idle, lifetime=args.lifetime)

    def on_signal(signum: int, frame: object) -> None:
        raise SystemExit(0)  # out of select() at once; serve() wipes the key

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        agent.serve()
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
