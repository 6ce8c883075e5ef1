"""Helpers for client tests: real ``samizdat-relay`` processes on 127.0.0.1
and in-process engines with fast key derivation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from client.engine import Engine
from harness.relay_process import RelayProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
__all__ = [  # RelayProcess and free_port live in harness.relay_process
    "ROOT",
    "RelayProcess",
    "befriend",
    "cli_identity",
    "env_without_proxy",
    "eventually",
    "free_port",
    "make_engine",
    "run_cli",
    "scan_for",
]


def make_engine(home: Path, name: str, relays: list[str]) -> Engine:
    return Engine.create(home, b"test passphrase", name, relays, fast_kdf=True)


def cli_identity(home: Path, name: str, relays: list[str], passphrase: bytes) -> None:
    """What ``samizdat init`` leaves in ``home`` (an identity, its inboxes on
    ``relays``), made in-process at the cheapest Argon2id cost: every later
    ``samizdat`` command of the test unlocks it in a millisecond instead of ~0.5
    CPU-s and 256 MiB.  For tests of other commands; tests of ``init`` run it."""

    async def made() -> None:
        engine = Engine.create(home, passphrase, name, relays, fast_kdf=True)
        try:
            await engine.connect()
        finally:
            await engine.close()

    asyncio.run(made())


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
    conv = await b.accept(await a.invite())
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


def run_cli(
    home: Path | str,
    *args: str,
    env: Mapping[str, str | None] | None = None,
    ok: bool = False,
    cwd: Path = ROOT,
    timeout: float = 120,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``samizdat --home HOME ARGS`` as a child process run from ``cwd``: the
    environment without proxies, this checkout on PYTHONPATH, then ``env`` on
    top (a None value removes a variable).  ``stdin`` is the input, else
    stdin is closed; ``ok`` asserts exit status 0."""
    full = env_without_proxy() | {"PYTHONPATH": str(ROOT)}
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    cmd = [sys.executable, "-m", "client.cli", "--home", str(home), *args]
    if stdin is None:
        result = subprocess.run(
            cmd,
            cwd=cwd,
            env=full,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    else:
        result = subprocess.run(
            cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout, input=stdin
        )
    if ok:
        assert result.returncode == 0, result.stderr + result.stdout
    return result
