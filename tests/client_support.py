"""Helpers for client tests: real ``samizdat-relay`` processes on 127.0.0.1
and in-process engines with fast key derivation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from client.engine import Engine

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RelayProcess:
    """One real relay process (SQLite), started and stopped by tests."""

    def __init__(
        self, data_dir: Path, port: int | None = None, *, limits: dict[str, int] | None = None
    ) -> None:
        self.limits = limits or {}
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: object | None = None

    def start(self) -> RelayProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir.parent / f"relay-{self.port}.log").open("ab")
        self._log = log
        args = [
            sys.executable,
            "-m",
            "relay.cli",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.limits:
            config = self.data_dir.parent / f"relay-{self.port}.toml"
            lines = [f"{key} = {value}" for key, value in self.limits.items()]
            config.write_text("[limits]\n" + "\n".join(lines) + "\n")
            args += ["--config", str(config)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("relay did not start within 15 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def make_engine(home: Path, name: str, relays: list[str]) -> Engine:
    return Engine.create(home, b"test passphrase", name, relays, fast_kdf=True)


async def eventually(
    check: Callable[[], bool], timeout: float = 15.0, what: str = "condition"
) -> None:
    """Poll ``check`` until true (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def befriend(a: Engine, b: Engine) -> bytes:
    """b accepts a's invite; both see each other.  Returns the conversation id."""
    conv = await b.accept(a.invite())
    await eventually(
        lambda: any(c.name == b.identity.name for c in a.contacts()),
        what=f"{a.identity.name} to see {b.identity.name}",
    )
    await eventually(
        lambda: any(c.name == a.identity.name for c in b.contacts()),
        what=f"{b.identity.name} to see {a.identity.name}",
    )
    await eventually(
        lambda: bool(_contact(a, b).key_packages) and bool(_contact(b, a).key_packages),
        what="key packages exchanged",
    )
    return conv.group_id


def _contact(engine: Engine, other: Engine):  # type: ignore[no-untyped-def]
    return engine.contact(other.identity.signature_pub) or engine.contacts()[0]


def scan_for(paths: list[Path], needles: list[bytes]) -> list[tuple[Path, bytes]]:
    """Every (file, needle) where a needle occurs in a file under ``paths``."""
    hits = []
    for root in paths:
        for path in [root] if root.is_file() else root.rglob("*"):
            if not path.is_file():
                continue
            data = path.read_bytes()
            for needle in needles:
                if needle in data:
                    hits.append((path, needle))
    return hits


def env_without_proxy() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env.pop(key, None)
    return env
