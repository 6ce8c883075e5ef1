"""The real ``samizdat-relay`` process on 127.0.0.1: durability under kill -9,
SIGTERM shutdown, check-config and the command line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from protocol.relay_frames import Error, Post, Posted, ShuttingDown
from tests.relay_support import Client, Mailbox, envelope

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RelayProcess:
    def __init__(self, data_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RelayProcess:
        cmd = [
            sys.executable,
            "-m",
            "relay.cli",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode())  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("relay did not start")

    def url(self, prefix: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{prefix}/ws"

    def kill(self, sig: int = signal.SIGKILL) -> str:
        """Signal, wait, and return what the process wrote to stderr."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=15)
        return err.decode()


@pytest.fixture
def processes() -> Iterator[list[RelayProcess]]:
    procs: list[RelayProcess] = []
    yield procs
    for p in procs:
        if p.proc is not None and p.proc.poll() is None:
            p.kill()


async def test_acknowledged_posts_survive_kill_9(tmp_path: Path, processes: list) -> None:
    relay = RelayProcess(tmp_path).start()
    processes.append(relay)
    mb = Mailbox()
    acked: dict[int, bytes] = {}
    async with aiohttp.ClientSession() as s:
        c = await Client.connect(s, relay.url())
        await c.create(mb)
        await c.auth_write(mb)
        bodies = {}
        for i in range(400):
            rid = c.rid()
            bodies[rid] = envelope(b"msg %d" % i)
            await c.send(Post(rid, mb.id, os.urandom(16), bodies[rid]))
        # collect acknowledgements for a while, then kill in the middle of traffic
        while len(acked) < 150:
            f = await c.recv()
            if isinstance(f, Posted):
                acked[f.seq] = bodies[f.req_id]
        relay.kill(signal.SIGKILL)
    assert acked
    restarted = RelayProcess(tmp_path)
    restarted.port = relay.port
    restarted.start()
    processes.append(restarted)
    async with aiohttp.ClientSession() as s:
        r = await Client.connect(s, restarted.url())
        await r.auth_read(mb)
        sub = await r.subscribe(mb)
        head = sub.head_seq  # type: ignore[union-attr]
        assert head >= max(acked)
        # seqs restart from each hour's base (SPEC §7.7): read up to the head
        while not r.delivered or r.delivered[-1].seq < head:
            await r.recv(30.0)
        got = {d.seq: d.envelope for d in r.delivered}
    for seq, body in acked.items():
        assert got[seq] == body


async def test_sigterm_closes_1001(tmp_path: Path, processes: list) -> None:
    relay = RelayProcess(tmp_path, "--prefix", "hidden").start()
    processes.append(relay)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{relay.port}/ws") as resp:
            assert resp.status == 404
            await resp.read()  # released: an unreleased connection warns when collected
        c = await Client.connect(s, relay.url("/hidden"))
        mb = Mailbox()
        await c.create(mb)
        relay.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        frame = await c.recv()
        assert isinstance(frame, Error) and frame.code == ShuttingDown.code
        msg = await c.ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
    assert relay.proc.wait(15) == 0  # type: ignore[union-attr]
    relay.proc.stdout.close()  # type: ignore[union-attr]
    err = relay.proc.stderr.read().decode()  # type: ignore[union-attr]
    relay.proc.stderr.close()  # type: ignore[union-attr]
    assert mb.id.hex() not in err and "127.0.0.1" not in err


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_config(tmp_path: Path) -> None:
    cfg = tmp_path / "relay.toml"
    cfg.write_text(
        'host = "0.0.0.0"\nprefix = "abc"\naccess_token = "t"\n'
        "[limits]\nmailbox_max_messages = 128\nframe_rate = 10\n"
    )
    out = run_cli("check-config", "--config", str(cfg), "--port", "9999")
    assert out.returncode == 0, out.stderr
    assert '"mailbox_max_messages": 128' in out.stdout and '"port": 9999' in out.stdout
    assert '"prefix": "<set>"' in out.stdout and '"access_token": "<set>"' in out.stdout
    assert "configuration OK" in out.stderr


@pytest.mark.parametrize(
    "text",
    [
        "nonsense = 1\n",
        "[limits]\nbogus = 1\n",
        "[limits]\nframe_rate = -1\n",
        'backend = "mysql"\n',
        "port = 70000\n",
        'prefix = "a/b"\n',
        "[[x\n",
        'tls_cert = "c.pem"\n',
        "[limits]\nmax_envelope_size = 100\n",
        "metrics = 1\n",
    ],
)
def test_check_config_rejects(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "relay.toml"
    cfg.write_text(text)
    out = run_cli("check-config", "--config", str(cfg))
    assert out.returncode == 2 and "configuration error" in out.stderr


def test_defaults() -> None:
    from relay.config import load_config

    cfg = load_config()
    assert (cfg.host, cfg.port, cfg.backend, cfg.prefix) == ("127.0.0.1", 8480, "sqlite", "")
    assert "samizdat-relay" in str(cfg.data_dir)
    assert cfg.limits.default_ttl == 21 * 86400


def test_debug_log_says_what_it_logs(tmp_path: Path, processes: list) -> None:
    relay = RelayProcess(tmp_path, "--debug-log").start()
    processes.append(relay)

    async def touch() -> None:
        async with aiohttp.ClientSession() as s:
            await Client.connect(s, relay.url())

    asyncio.run(touch())
    err = relay.kill(signal.SIGTERM)
    assert "debug log ON: client addresses and mailbox ids will be logged" in err
    assert "connection from 127.0.0.1" in err


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls(tmp_path: Path, processes: list[RelayProcess]) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    relay = RelayProcess(tmp_path / "data", "--tls-cert", str(cert), "--tls-key", str(key))
    processes.append(relay.start())
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    async with aiohttp.ClientSession() as s:
        c = await Client.connect(s, f"wss://127.0.0.1:{relay.port}/ws", ssl=ctx)
        mb = Mailbox()
        await c.create(mb)
        await c.auth_write(mb)
        assert isinstance(await c.post(mb, envelope()), Posted)
        home = await s.get(f"https://127.0.0.1:{relay.port}/", ssl=ctx)
        assert home.status == 200 and home.headers["Server"] == "nginx"
        await home.read()  # released: an unreleased connection warns when collected
