"""Attacks on the local key agent (client/agent.py, SPEC.md §9, "Local key
agent"): another local user (uid 65534, made by root with ``user=``), a stuck
or hostile connection, and home paths that are not what they look like.

Real ``samizdat`` processes or a real in-thread :class:`agent.Agent`; stores
at the cheapest Argon2id cost.  Every agent started is stopped at teardown."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client import agent
from tests.client_support import run_cli as cli_process
from tests.test_cli_agent import (
    PASSPHRASE,
    InProcessAgent,
    alive,
    make_home,
    master_key,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

NOBODY = 65534
#: a Python another uid can run (the venv's may live under root's 0700 home)
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
# Under CI=true these attacks are required: they run (and fail) where their
# input is missing, never skip.
needs_root = pytest.mark.skipif(
    os.environ.get("CI") != "true"
    and (os.getuid() != 0 or not sys.platform.startswith("linux") or SYSTEM_PYTHON is None),
    reason="acting as another uid needs root, a system Python (and SO_PEERCRED, Linux)",
)


def run_cli(
    home: str, cwd: Path, *args: str, passphrase: bool = True, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """``samizdat --home HOME ARGS`` run from ``cwd`` (``home`` may be relative)."""
    env: dict[str, str | None] = {"SAMIZDAT_AGENT": "on", **extra_env}
    env["SAMIZDAT_PASSPHRASE"] = PASSPHRASE if passphrase else None
    return cli_process(home, *args, env=env, cwd=cwd, timeout=60)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every uid can traverse (pytest's own tmp dirs are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="samizdat-agent-attack-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# -- (1) another local user: a fake agent receiving the handed-over key --------

_FAKE_AGENT = """
import os, socket, sys
path = sys.argv[1]
os.makedirs(os.path.dirname(path), mode=0o700)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(8)
s.settimeout(5)  # the hand-over, if any, is queued before agent.start() returns
print("ready", flush=True)
got = b""
try:
    conn, _ = s.accept()
    conn.settimeout(5)
    while chunk := conn.recv(4096):
        got += chunk
except OSError:
    pass
print(got.hex(), flush=True)
"""

_SWAP = """
import os, sys
home, evil = sys.argv[1], sys.argv[2]
os.rename(home, home + ".moved")
os.symlink(evil, home)
"""


@needs_root
def test_another_user_who_wins_the_race_after_the_bind_gets_no_key(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: the home lies in a directory another user can write (a
    shared project directory; the home itself and its agent/ are 0700 and
    ours).  Right after the command binds HOME/agent/sock, that user renames
    the home away and puts a symlink to a directory of theirs with a
    listening agent/sock in its place: the command's hand-over of the key
    connects by path, so it reaches the impostor.  (The race is won here
    deterministically, by swapping at the moment the agent is spawned.)"""
    shared = open_dir / "shared"
    shared.mkdir()
    home = shared / "alice"
    make_home(home)
    os.chown(shared, NOBODY, NOBODY)
    evil = shared / "evil"
    key = master_key(home)
    from client.store import Store

    with Store.open(home, PASSPHRASE.encode()) as store:
        salt = store.cacheable_key()[0]
    fake = subprocess.Popen(
        [str(SYSTEM_PYTHON), "-I", "-c", _FAKE_AGENT, str(evil / "agent" / "sock")],
        user=NOBODY,
        group=NOBODY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    real_spawn = agent._spawn

    def spawn_then_lose_the_race(*args: Any) -> None:
        real_spawn(*args)
        subprocess.run(
            [str(SYSTEM_PYTHON), "-I", "-c", _SWAP, str(home), str(evil)],
            user=NOBODY,
            group=NOBODY,
            check=True,
            timeout=30,
            cwd="/",
        )

    try:
        assert fake.stdout is not None
        assert fake.stdout.readline().strip() == "ready"
        monkeypatch.setattr(agent, "_spawn", spawn_then_lose_the_race)
        agent.start(home, salt, key, idle=30)
        out, _ = fake.communicate(timeout=60)
        assert key.hex() not in out, "the impostor received the master key"
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.communicate()
        moved = Path(str(home) + ".moved")
        if moved.exists():
            home.unlink()
            moved.rename(home)
        agent.stop(home)


# -- (5) the command must not fail where the agent has no place -----------------


def test_an_unusable_runtime_dir_falls_back_to_the_passphrase_not_a_crash(
    tmp_path: Path,
) -> None:
    """A home too long for a Unix socket uses $XDG_RUNTIME_DIR: when that is
    stale (logind removes /run/user/UID at logout while tmux keeps the
    variable; ``su`` keeps another user's) or full (a shared /tmp another
    user filled), making the socket's directory fails.  The command must
    still run, with the passphrase, rather than die with a traceback after
    the store was unlocked."""
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "alice"
    make_home(deep)
    # short paths, as /run/user/UID is (a long one would not be used at all)
    gone = Path(tempfile.mkdtemp(prefix="sz-run-"))
    gone.rmdir()
    fd, name = tempfile.mkstemp(prefix="sz-file-")
    os.close(fd)
    not_dir = Path(name)
    try:
        for runtime in (gone, not_dir):
            out = run_cli(str(deep), tmp_path, "relays", XDG_RUNTIME_DIR=str(runtime))
            assert out.returncode == 0, out.stderr
            assert "Traceback" not in out.stderr
    finally:
        not_dir.unlink()
        agent.stop(deep)


# -- (4) home path tricks -----------------------------------------------------------


def test_a_relative_home_gets_a_working_agent_and_lock_ends_it(tmp_path: Path) -> None:
    """``--home alice`` from the directory holding it: the agent must serve
    that store (it runs with cwd /, so a relative home handed to it names
    another place), and ``lock`` with the same relative home must end it."""
    make_home(tmp_path / "alice")
    try:
        assert run_cli("alice", tmp_path, "chats").returncode == 0
        second = run_cli("alice", tmp_path, "relays", passphrase=False)
        assert second.returncode == 0, second.stderr
        pid = agent.agent_pid(tmp_path / "alice")
        assert pid is not None
        out = run_cli("alice", tmp_path, "lock", passphrase=False)
        assert "locked: the key agent has stopped" in out.stdout
        wait_for(lambda: not alive(pid), what="the agent to exit")
    finally:
        agent.stop(tmp_path / "alice")


# -- (2)/(6) a connection that never finishes ------------------------------------


def _trickle(path: Path, stop: threading.Event) -> None:
    """A connection that sends one byte of a valid request every second."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        for byte in agent.MAGIC * 100:
            if stop.wait(1.0):
                return
            sock.sendall(bytes([byte]))
    except OSError:
        return
    finally:
        sock.close()


def test_trickling_connections_neither_block_requests_nor_outlive_the_lifetime(
    tmp_path: Path,
) -> None:
    """The attack: a connection that sends a byte a second (a stuck or
    hostile client of the same user) kept the one-request-at-a-time agent
    reading it, past its idle timeout and lifetime, with the key in memory,
    while ``lock`` and every command got no answer (``lock`` then reported
    that no agent was running)."""
    running = InProcessAgent(tmp_path, lifetime=3.0)
    home, path, salt, key = running.home, running.path, running.salt, running.key
    server, thread = running.server, running.thread
    stop = threading.Event()
    tricklers = [threading.Thread(target=_trickle, args=(path, stop)) for _ in range(3)]
    try:
        for t in tricklers:
            t.start()
        time.sleep(0.5)
        # the key is still served to its owner while the tricklers hang on
        # (a few tries: one answer may miss its 0.5 s on a loaded machine)
        assert any(agent.request_key(path, home, salt) == key for _ in range(3))
        thread.join(15)  # lifetime 3 s: it must be over well before this
        assert not thread.is_alive(), "the agent outlived its lifetime"
        assert server.key == bytearray(32)
    finally:
        stop.set()
        for t in tricklers:
            t.join(10)
        running.close()


# -- attacks that fail (kept so that they keep failing) ----------------------------

_PLANT = """
import os, socket, sys
base, digest, key_hex = sys.argv[1], sys.argv[2], sys.argv[3]
mine = os.path.join(base, "mine")
os.makedirs(os.path.join(mine, digest), mode=0o700)
os.symlink(mine, os.path.join(base, "samizdat-agent-0"))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(os.path.join(mine, digest, "sock"))
s.listen(8)
s.settimeout(1.0)
print("ready", flush=True)
got = b""
try:
    while True:  # answer every request with a key of ours, record what came
        conn, _ = s.accept()
        conn.settimeout(2)
        try:
            while chunk := conn.recv(4096):
                got += chunk
            conn.sendall(b"K" + bytes.fromhex(key_hex))
        except OSError:
            pass
        conn.close()
except OSError:
    pass
print(got.hex(), flush=True)
"""


@needs_root
def test_another_user_planting_the_runtime_dir_gets_nothing_and_feeds_nothing(
    open_dir: Path, tmp_path: Path
) -> None:
    """The attack: the shared runtime dir (a sticky world-writable dir, as
    /tmp) is the fallback for a long home; another user plants
    ``samizdat-agent-0`` there first, as a symlink to a directory of theirs
    with the hashed subdirectory and a listening fake agent that records
    what it is sent and answers every request with a key of its own.  It
    fails: the directory is not ours (lstat: a symlink), so the command
    neither connects nor binds there; it runs with the passphrase instead
    (the agent is denied to this user: the one thing the attacker gains)."""
    os.chmod(open_dir, 0o1777)
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "alice"
    make_home(deep)
    path = None
    env = {"XDG_RUNTIME_DIR": str(open_dir)}
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(open_dir)
    try:
        path = agent.socket_path(deep)
    finally:
        if old is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = old
    assert path is not None and path.parent.parent.parent == open_dir
    planted = os.urandom(32)
    fake = subprocess.Popen(
        [str(SYSTEM_PYTHON), "-I", "-c", _PLANT, str(open_dir), path.parent.name, planted.hex()],
        user=NOBODY,
        group=NOBODY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    key = master_key(deep)
    try:
        assert fake.stdout is not None
        assert fake.stdout.readline().strip() == "ready"
        first = run_cli(str(deep), tmp_path, "relays", **env)
        assert first.returncode == 0, first.stderr
        again = run_cli(str(deep), tmp_path, "relays", passphrase=False, **env)
        assert again.returncode == 1 and "passphrase" in again.stderr
        fake.terminate()
        out, _ = fake.communicate(timeout=30)
        assert out.strip() in ("", "ready"), "the command talked to the planted socket"
        assert key.hex() not in out
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.communicate()


def test_malformed_requests_get_no_key_and_do_not_stop_the_agent(tmp_path: Path) -> None:
    """The agent's parser against truncated, oversized, wrongly typed and
    padded requests: none is answered with the key, none ends or wedges it."""
    running = InProcessAgent(tmp_path, lifetime=60)
    home, path, salt, key = running.home, running.path, running.salt, running.key
    server, thread = running.server, running.thread
    good = agent.encode_request(agent.OP_GET, home, salt)
    name = agent.home_id(home)
    bad = [
        b"",
        b"SZA1",
        b"SZA2" + good[4:],
        good[:-1],
        good + b"\0",  # a get with a trailing byte
        good[:4] + bytes([9]) + good[5:],  # unknown op
        good[:4] + bytes([agent.OP_PUT]) + good[5:] + b"k" * 31,  # short put key
        agent.MAGIC + bytes([agent.OP_GET, 255]) + salt,  # id length past the end
        agent.MAGIC + bytes([agent.OP_GET, 16]) + salt + b"\xff\xff" + name,
        agent.MAGIC + bytes([agent.OP_GET, 16]) + salt + b"\xff\xff" + b"x" * 70000,
        agent.encode_request(agent.OP_GET, home, salt[:-1]),  # another store
        agent.encode_request(agent.OP_GET, tmp_path, salt),  # another home
        agent.encode_request(agent.OP_STOP, tmp_path, b""),  # a stop for another home
        agent.encode_request(agent.OP_PUT, home, salt, os.urandom(32)),  # a second key
    ]
    try:
        for request in bad:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            with sock:
                sock.connect(str(path))
                with contextlib.suppress(OSError):
                    sock.sendall(request)
                    sock.shutdown(socket.SHUT_WR)
                answer = b""
                with contextlib.suppress(OSError):
                    while chunk := sock.recv(100):
                        answer += chunk
            assert key not in answer and answer in (b"", b"N", b"R"), request[:40]
            assert thread.is_alive()
        assert agent.request_key(path, home, salt) == key
        assert server.key == bytearray(key)
    finally:
        running.close()
