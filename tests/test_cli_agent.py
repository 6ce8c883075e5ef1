"""The local key agent (client/agent.py, SPEC.md §9, "Local key agent"): after one command
unlocks the store with the passphrase, the next ones get the store's master
key from an agent of the same user and skip Argon2id; the key never reaches
a file, argv or the environment, and no other uid can ask for it.

Real ``samizdat`` processes on stores made at the cheapest Argon2id cost.
conftest.py turns the agent off for every other test (SAMIZDAT_AGENT=off);
these tests turn it on, and every agent they start is stopped at teardown
(and would anyway exit within seconds of its home being deleted)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import agent
from client.engine import Engine
from client.store import Store
from tests.client_support import ROOT, env_without_proxy, run_cli, scan_for

pytestmark = pytest.mark.timeout(120)

PASSPHRASE = "agent test passphrase"
RELAY = "http://127.0.0.1:9"  # never contacted: these commands are offline


def make_home(home: Path) -> None:
    """An identity in ``home`` at the cheapest Argon2id cost (never connected)."""
    engine = Engine.create(home, PASSPHRASE.encode(), "Alice", [RELAY], fast_kdf=True)
    asyncio.run(engine.close())


def cli(
    home: Path, *args: str, passphrase: bool = True, setting: str = "on", ok: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {"SAMIZDAT_AGENT": setting, "SAMIZDAT_PASSPHRASE": PASSPHRASE if passphrase else None}
    return run_cli(home, *args, env=env, ok=ok, timeout=60)


def master_key(home: Path) -> bytes:
    """The store's master key, read the slow way (the agent must be off or
    not in the way: Store.open takes the store's lock only briefly)."""
    with Store.open(home, PASSPHRASE.encode()) as store:
        return store.cacheable_key()[1]


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) is gone for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    h = tmp_path / "alice"
    make_home(h)
    yield h
    agent.stop(h)


def test_agent_starts_after_the_first_unlock_and_the_next_command_needs_no_passphrase(
    home: Path,
) -> None:
    assert agent.agent_pid(home) is None
    cli(home, "chats")  # the slow path: passphrase, Argon2id; starts the agent
    pid = agent.agent_pid(home)
    assert pid is not None and alive(pid)
    # no passphrase anywhere (no env, no file, stdin not a terminal): only
    # the agent's key can open the store; without it this fails at once
    out = cli(home, "relays", passphrase=False)
    assert RELAY in out.stdout
    cli(home, "contacts", passphrase=False)
    assert agent.agent_pid(home) == pid  # the same agent served both


def test_with_the_agent_off_nothing_starts_and_the_passphrase_is_needed(home: Path) -> None:
    cli(home, "chats", setting="off")
    assert agent.agent_pid(home) is None
    refused = cli(home, "chats", passphrase=False, setting="off", ok=False)
    assert refused.returncode == 1 and "passphrase" in refused.stderr


def test_the_key_never_reaches_a_file_argv_or_the_environment(home: Path) -> None:
    """The attack: whoever images the disk (home, temp and runtime dirs)
    while the agent runs, or reads the agent's command line or environment
    (world-readable in /proc on many systems), must not find the key."""
    cli(home, "chats")
    cli(home, "contacts", passphrase=False)
    pid = agent.agent_pid(home)
    assert pid is not None
    key = master_key(home)
    # master_key() ran Argon2id in this process; the agent still holds the key
    assert agent.agent_pid(home) == pid
    needles = [key, key.hex().encode(), key.hex().upper().encode(), PASSPHRASE.encode()]
    roots = [home, Path(tempfile.gettempdir()) / f"samizdat-agent-{os.getuid()}"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        roots.append(Path(os.environ["XDG_RUNTIME_DIR"]))
    assert scan_for([r for r in roots if r.exists()], needles) == []
    sock_dir = agent.socket_path(home)
    assert sock_dir is not None
    assert scan_for([sock_dir.parent], needles) == []
    for what in ("cmdline", "environ"):
        data = Path(f"/proc/{pid}/{what}").read_bytes()
        for needle in needles:
            assert needle not in data, what
    assert b"SAMIZDAT_PASSPHRASE" not in Path(f"/proc/{pid}/environ").read_bytes()


def test_socket_and_its_directory_are_private(home: Path) -> None:
    cli(home, "chats")
    path = agent.socket_path(home)
    assert path is not None and path.parent.parent == home
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    d = os.lstat(path.parent)
    assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o700
    assert d.st_uid == os.getuid()


def test_a_home_too_long_for_a_unix_socket_uses_a_private_runtime_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "alice"
    make_home(deep)
    try:
        cli(deep, "chats")
        path = agent.socket_path(deep)
        assert path is not None and len(os.fsencode(path)) < 100
        assert deep not in path.parents
        d = os.lstat(path.parent)
        assert stat.S_IMODE(d.st_mode) == 0o700 and d.st_uid == os.getuid()
        cli(deep, "contacts", passphrase=False)
    finally:
        agent.stop(deep)


def test_a_foreign_uid_is_refused(tmp_path: Path) -> None:
    """The attack: another local user connects to the agent's socket (here
    made world-writable on purpose, so that only SO_PEERCRED stands in the
    way) and asks for the key."""
    salt, key = os.urandom(16), os.urandom(32)
    home = tmp_path / "h"
    home.mkdir()
    (home / "store.db").write_bytes(b"")
    # a directory every uid can reach (pytest's own tmp dirs are 0700)
    open_dir = Path(tempfile.mkdtemp(prefix="samizdat-agent-test-"))
    os.chmod(open_dir, 0o777)
    sock_path = open_dir / "sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(8)
    os.chmod(sock_path, 0o777)
    server = agent.Agent(listener, home, sock_path, idle=30, lifetime=60)
    server.key[:] = key
    server.store_id = salt
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        # our own uid gets the key
        assert agent.request_key(sock_path, home, salt) == key
        system_python = shutil.which("python3", path="/usr/bin:/bin")
        if os.getuid() == 0 and system_python:
            # a real other uid, as root can make one (with a Python it can run)
            request = agent.encode_request(agent.OP_GET, home, salt)
            probe = (
                "import socket,sys\n"
                "s=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM)\n"
                f"s.connect({str(sock_path)!r})\n"
                "try:\n"
                f"    s.sendall(bytes.fromhex({request.hex()!r}))\n"
                "    s.shutdown(socket.SHUT_WR)\n"
                "except OSError:\n"
                "    pass\n"
                "data = b''\n"
                "while chunk := s.recv(100):\n"
                "    data += chunk\n"
                "sys.stdout.write(data.hex())\n"
            )
            answer = subprocess.run(
                [system_python, "-I", "-c", probe],
                user=65534,
                group=65534,
                capture_output=True,
                text=True,
                timeout=30,
                cwd="/",
                check=False,
            )
            assert answer.returncode == 0, answer.stderr
            assert key.hex() not in answer.stdout
            assert answer.stdout == b"R".hex()
        # the check itself, with our uid treated as foreign
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with a, b:
            assert agent.peer_allowed(a, os.getuid())
            assert not agent.peer_allowed(a, os.getuid() + 1)
        server.owner_uid = os.getuid() + 1
        assert agent.request_key(sock_path, home, salt) is None
    finally:
        server.close()
        thread.join(10)
        listener.close()
        shutil.rmtree(open_dir, ignore_errors=True)


def test_the_client_refuses_an_agent_of_another_uid(home: Path) -> None:
    """The reverse: a socket planted by someone else must not be trusted to
    hand out keys (a planted key would be caught by the key check anyway)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert not agent.peer_allowed(b, os.getuid() + 1)


def test_a_key_for_another_store_or_a_stale_key_falls_back_to_the_passphrase(
    home: Path, tmp_path: Path
) -> None:
    cli(home, "chats")
    first = agent.agent_pid(home)
    assert first is not None
    # the store is replaced by another one (another salt, another key): the
    # agent does not hand the old key for it; the passphrase path runs and a
    # new agent holds the new key
    shutil.rmtree(home)
    make_home(home)
    out = cli(home, "relays", passphrase=False, ok=False)
    assert out.returncode == 1 and "passphrase" in out.stderr
    cli(home, "relays")
    second = agent.agent_pid(home)
    assert second is not None and second != first
    wait_for(lambda: not alive(first), what="the old agent to exit")
    cli(home, "relays", passphrase=False)
    # a wrong key for the right store (same salt): the client's key check
    # rejects it, falls back to the passphrase and replaces the agent
    with Store.open(home, PASSPHRASE.encode()) as store:
        salt, _ = store.cacheable_key()
    assert agent.start(home, salt, os.urandom(32), idle=60)
    third = agent.agent_pid(home)
    assert third is not None and third != second
    out = cli(home, "relays", passphrase=False, ok=False)
    assert out.returncode == 1
    cli(home, "relays")
    fourth = agent.agent_pid(home)
    assert fourth is not None and fourth != third
    cli(home, "relays", passphrase=False)


def test_lock_ends_the_agent(home: Path) -> None:
    cli(home, "chats")
    pid = agent.agent_pid(home)
    assert pid is not None
    out = cli(home, "lock", passphrase=False)
    assert "locked" in out.stdout
    wait_for(lambda: not alive(pid), what="the agent to exit")
    assert agent.agent_pid(home) is None
    sock = agent.socket_path(home)
    assert sock is not None and not sock.exists()
    refused = cli(home, "chats", passphrase=False, ok=False)
    assert refused.returncode == 1
    assert "no agent" in cli(home, "lock", passphrase=False).stdout


def test_the_idle_timeout_ends_the_agent(home: Path) -> None:
    cli(home, "chats", setting="2s")
    pid = agent.agent_pid(home)
    assert pid is not None
    wait_for(lambda: not alive(pid), timeout=30, what="the idle agent to exit")
    assert cli(home, "chats", passphrase=False, ok=False).returncode == 1


def test_the_agent_exits_when_its_home_is_deleted_or_on_sigterm(home: Path, tmp_path: Path) -> None:
    cli(home, "chats")
    pid = agent.agent_pid(home)
    assert pid is not None
    shutil.rmtree(home)
    wait_for(lambda: not alive(pid), timeout=30, what="the orphaned agent to exit")
    other = tmp_path / "bob"
    make_home(other)
    try:
        cli(other, "chats")
        pid = agent.agent_pid(other)
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), what="the agent to exit on SIGTERM")
        sock = agent.socket_path(other)
        assert sock is not None and not sock.exists()
    finally:
        agent.stop(other)


def test_offline_commands_neither_import_the_network_stack_nor_connect(tmp_path: Path) -> None:
    """``chats``, ``contacts``, ``relays``, ``invite list``, ``history`` read
    the store only: no connection to the relay (a listening socket that
    must see none) and aiohttp is never imported (issue 12 item 5)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    home = tmp_path / "alice"
    engine = Engine.create(home, PASSPHRASE.encode(), "Alice", [url], fast_kdf=True)
    asyncio.run(engine.close())
    env = env_without_proxy() | {
        "PYTHONPATH": str(ROOT),
        "SAMIZDAT_AGENT": "off",
        "SAMIZDAT_PASSPHRASE": PASSPHRASE,
    }
    try:
        for args in (["chats"], ["contacts"], ["relays"], ["invite", "list"], ["history", "x"]):
            command = [sys.executable, "-X", "importtime", "-m", "client.cli", "--home", str(home)]
            result = subprocess.run(
                [*command, *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == (1 if args[0] == "history" else 0), result.stderr
            imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
            assert "aiohttp" not in imported, args
            assert "textual" not in imported, args
            with pytest.raises(TimeoutError):
                listener.accept()[0].close()
    finally:
        listener.close()


def test_a_passphrase_change_stops_the_agent(home: Path) -> None:
    cli(home, "chats")
    pid = agent.agent_pid(home)
    assert pid is not None
    with Store.open(home, PASSPHRASE.encode()) as store:
        store.change_passphrase(PASSPHRASE.encode(), b"another passphrase")
    wait_for(lambda: not alive(pid), what="the agent to exit")
    assert agent.agent_pid(home) is None


class InProcessAgent:
    """An :class:`agent.Agent` serving in a thread of this process, on a socket
    in a private directory under ``tmp``, for a home holding an empty
    store file; ``holding`` gives it a random key and salt at once."""

    def __init__(self, tmp: Path, *, lifetime: float, holding: bool = True) -> None:
        self.home = tmp / "h"
        self.home.mkdir()
        (self.home / "store.db").write_bytes(b"")
        self.path = tmp / "s" / "sock"
        self.path.parent.mkdir(mode=0o700)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(8)
        self.salt, self.key = os.urandom(16), os.urandom(32)
        self.server = agent.Agent(self.listener, self.home, self.path, idle=60, lifetime=lifetime)
        if holding:
            self.server.key[:] = self.key
            self.server.store_id = self.salt
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.close()
        self.thread.join(10)
        self.listener.close()


def test_the_lifetime_bound_ends_a_busy_agent_and_its_key_is_overwritten(tmp_path: Path) -> None:
    running = InProcessAgent(tmp_path, lifetime=1.5, holding=False)
    home, path, salt, key = running.home, running.path, running.salt, running.key
    server, thread = running.server, running.thread
    try:
        assert agent.request_key(path, home, salt) is None  # nothing handed yet
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        sock.sendall(agent.encode_request(agent.OP_PUT, home, salt, key))
        sock.close()
        assert agent.request_key(path, home, os.urandom(16)) is None  # another store
        assert agent.request_key(path, home, salt) == key
        # in use all the time: the idle timeout never fires, the lifetime does
        deadline = time.monotonic() + 30
        while thread.is_alive() and time.monotonic() < deadline:
            agent.request_key(path, home, salt)
            time.sleep(0.1)
        assert not thread.is_alive()
        assert server.key == bytearray(32) and server.store_id is None
        assert not path.exists()
    finally:
        running.close()
