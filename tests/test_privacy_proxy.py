"""The proxy is a setting of the profile (issue 15 item 6, SPEC.md §7.1).

The attack: a user behind a censor sets ``--proxy`` once, then runs a command
without it.  That command must not connect directly or ask the local
resolver for the relay's name.  The relay here has a host name only the SOCKS5
proxy can resolve (``*.only-via-proxy.test``), and every local name lookup is
watched: in-process by wrapping ``socket.getaddrinfo`` and the event loop's
``getaddrinfo``, in a CLI process by a ``sitecustomize`` that does the same and
writes each looked-up name to a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from client.engine import Engine, EngineError
from protocol.app.messages import File
from tests.client_support import (
    ROOT,
    RelayProcess,
    befriend,
    eventually,
    run_cli,
)

pytestmark = pytest.mark.timeout(240)

HIDDEN = "relay.only-via-proxy.test"


class Socks5:
    """A small SOCKS5 proxy (no auth or user/pass, CONNECT) on 127.0.0.1 that
    alone knows ``names`` (host name -> local port); it records every CONNECT
    and refuses any destination it does not know."""

    def __init__(self, names: dict[str, int]) -> None:
        self.names = names
        self.connects: list[tuple[str, int]] = []
        # per connection: its (username, password), or None without auth
        self.auths: list[tuple[bytes, bytes] | None] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> Socks5:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"socks5://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            _, n = await reader.readexactly(2)
            methods = await reader.readexactly(n)
            if 2 in methods:  # username/password (Tor stream isolation)
                writer.write(b"\x05\x02")
                _, ulen = await reader.readexactly(2)
                user = await reader.readexactly(ulen)
                (plen,) = await reader.readexactly(1)
                self.auths.append((user, await reader.readexactly(plen)))
                writer.write(b"\x01\x00")
            else:
                self.auths.append(None)
                writer.write(b"\x05\x00")
            _, cmd, _, atyp = await reader.readexactly(4)
            if atyp == 1:
                host = socket.inet_ntoa(await reader.readexactly(4))
            elif atyp == 3:
                host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            else:
                writer.close()
                return
            (port,) = struct.unpack("!H", await reader.readexactly(2))
            self.connects.append((host, port))
            local = self.names.get(host)
            if cmd != 1 or local is None or local != port:
                writer.write(b"\x05\x04\x00\x01" + bytes(6))  # host unreachable
                writer.close()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"\x05\x00\x00\x01" + bytes(4) + struct.pack("!H", port))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def _is_ip(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    try:
        ipaddress.ip_address(str(host))
    except ValueError:
        return False
    return True


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path / "relay").start()
    yield proc
    proc.stop()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host name this process asks its resolver for (IP literals are
    not lookups); the hidden relay name fails like an unknown name."""
    seen: list[str] = []
    real = socket.getaddrinfo

    def watched(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_ip(host):
            seen.append(host.decode() if isinstance(host, bytes) else str(host))
            if str(host).endswith(".test"):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", watched)
    loop_cls = asyncio.base_events.BaseEventLoop
    original = loop_cls.getaddrinfo

    async def loop_watched(self: Any, host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_ip(host):
            seen.append(host.decode() if isinstance(host, bytes) else str(host))
            if str(host).endswith(".test"):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return await original(self, host, *args, **kwargs)

    monkeypatch.setattr(loop_cls, "getaddrinfo", loop_watched)
    return seen


@pytest.fixture
async def proxy(relay: RelayProcess) -> AsyncIterator[Socks5]:
    server = await Socks5({HIDDEN: relay.port}).start()
    yield server
    await server.close()


def _texts(engine: Engine, conv: bytes) -> list[str]:
    return [e.text for e in engine.history(conv) if e.kind == "text"]


async def test_saved_proxy_carries_every_connection_and_lookup(
    tmp_path: Path, relay: RelayProcess, proxy: Socks5, lookups: list[str]
) -> None:
    """Set once at creation, the proxy carries a later session that did not
    name it: WebSocket reads and posts, blob upload and download, and no
    local DNS lookup of the relay's name (or any name) happens."""
    url = f"http://{HIDDEN}:{relay.port}"
    engines = {}
    for name in ("alice", "bob"):
        e = Engine.create(
            tmp_path / name, b"pw", name.capitalize(), [url], proxy=proxy.url, fast_kdf=True
        )
        await e.close()
        # a later "command" that does not mention the proxy
        engines[name] = Engine.open(tmp_path / name, b"pw")
    alice, bob = engines["alice"], engines["bob"]
    try:
        await alice.connect()
        await bob.connect()
        conv = await befriend(alice, bob)
        await bob.send_text(conv, "through the proxy")
        alice_conv = alice.find_conversation("Bob").group_id
        await eventually(lambda: _texts(alice, alice_conv) == ["through the proxy"])
        photo = tmp_path / "photo.bin"
        photo.write_bytes(os.urandom(300_000))  # two chunks
        await bob.send_file(conv, photo)
        await eventually(lambda: any(e.kind == "file" for e in alice.history(alice_conv)))
        entry = next(e for e in alice.history(alice_conv) if e.kind == "file")
        body = File.from_bytes(bytes.fromhex(entry.file["descriptor"]))
        dest = tmp_path / "got.bin"
        await alice.fetch_file(alice_conv, body, dest)
        assert dest.read_bytes() == photo.read_bytes()
    finally:
        await alice.close()
        await bob.close()
    assert lookups == [], f"local DNS lookups with a proxy set: {lookups}"
    assert proxy.connects and {h for h, _ in proxy.connects} == {HIDDEN}


def test_proxy_setting_is_validated_and_cleared(tmp_path: Path) -> None:
    e = Engine.create(tmp_path / "a", b"pw", "A", ["http://127.0.0.1:1"], fast_kdf=True)
    try:
        with pytest.raises(EngineError, match="socks5"):
            e.set_proxy("http://127.0.0.1:8080")
        assert e.identity.proxy == ""
        assert e.set_proxy("socks5://127.0.0.1:9050") == "socks5://127.0.0.1:9050"
        assert e.set_proxy("off") == "" and e.proxy is None
    finally:
        asyncio.run(e.close())


# -- the command line, as real processes -------------------------------------------------

_SITECUSTOMIZE = """
import asyncio, ipaddress, os, socket

_LOG = os.environ["SAMIZDAT_TEST_DNS_LOG"]


def _note(host):
    if host is None:
        return
    if isinstance(host, bytes):
        host = host.decode()
    try:
        ipaddress.ip_address(str(host))
        return
    except ValueError:
        pass
    with open(_LOG, "a") as fh:
        fh.write(str(host) + "\\n")
    if str(host).endswith(".test"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


_real = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    _note(host)
    return _real(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo
_loop_real = asyncio.base_events.BaseEventLoop.getaddrinfo


async def _loop_getaddrinfo(self, host, *args, **kwargs):
    _note(host)
    return await _loop_real(self, host, *args, **kwargs)


asyncio.base_events.BaseEventLoop.getaddrinfo = _loop_getaddrinfo
"""


def _cli(home: Path, hook: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        "SAMIZDAT_PASSPHRASE": "correct horse",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{hook}",
        "SAMIZDAT_TEST_DNS_LOG": str(hook / "lookups.txt"),
    }
    return run_cli(home, *args, env=env, ok=ok)


async def test_cli_remembers_the_proxy(tmp_path: Path, relay: RelayProcess, proxy: Socks5) -> None:
    """``init --proxy`` saves it; later commands without ``--proxy`` use it
    (no local lookup of any name in the CLI process); ``relays proxy off``
    clears it and ``relays proxy socks5://…`` sets it again."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    url = f"http://{HIDDEN}:{relay.port}"
    home = tmp_path / "alice"

    async def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(_cli, home, hook, *args, ok=ok)

    await cli("init", "--name", "Alice", "--relay", url, "--proxy", proxy.url)
    after_init = len(proxy.connects)
    assert after_init >= 1  # init's relay check went through the proxy
    listing = json.loads((await cli("relays", "list", "--json")).stdout)
    assert listing["proxy"] == proxy.url
    link = (await cli("invite")).stdout.strip().splitlines()[0]  # creates mailboxes: online
    assert link.startswith("samizdat:")
    assert len(proxy.connects) > after_init
    assert (await cli("relays", "proxy")).stdout.strip() == f"proxy: {proxy.url}"
    assert "none" in (await cli("relays", "proxy", "off")).stdout
    assert json.loads((await cli("relays", "list", "--json")).stdout)["proxy"] == ""
    await cli("relays", "proxy", proxy.url)
    assert json.loads((await cli("relays", "list", "--json")).stdout)["proxy"] == proxy.url
    bad = await cli("relays", "proxy", "http://127.0.0.1:3128", ok=False)
    assert bad.returncode == 1 and "socks5" in bad.stderr
    log = hook / "lookups.txt"
    looked_up = log.read_text().split() if log.exists() else []
    assert looked_up == [], f"the CLI asked its resolver for {looked_up}"
