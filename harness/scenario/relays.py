"""Relays a scenario or test runs: a real ``samizdat-relay`` in this process
(``create_app`` on a free 127.0.0.1 port) or as a separate process, each
optionally behind a :class:`~harness.malicious.MaliciousRelay`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from harness.relay_process import RelayProcess, free_port
from relay.app import create_app
from relay.config import RelayConfig


def relay_config(data_dir: Path, **settings: Any) -> RelayConfig:
    """A relay configuration; keys of ``Limits`` go to ``[limits]``."""
    limits = settings.pop("limits", {})
    cfg = RelayConfig(data_dir=data_dir, **settings)
    for key, value in limits.items():
        if not hasattr(cfg.limits, key):
            raise ValueError(f"unknown relay limit {key}")
        setattr(cfg.limits, key, value)
    return cfg.validate()


class LocalRelay:
    """``samizdat-relay`` (SQLite) inside this event loop."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        prefix = str(self.settings.get("prefix", "")).strip("/")
        return f"http://127.0.0.1:{self.port}" + (f"/{prefix}" if prefix else "")

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> LocalRelay:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        app = create_app(relay_config(self.data_dir, **dict(self.settings)))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        port = self.port or free_port()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = port
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


class ProcessRelay:
    """``samizdat-relay`` as a separate process (SQLite), killable with SIGKILL."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self._process = RelayProcess(data_dir, port or None)
        self.data_dir = data_dir
        self.port = self._process.port

    @property
    def url(self) -> str:
        return self._process.url

    @property
    def running(self) -> bool:
        return self._process.running

    async def start(self) -> ProcessRelay:
        await asyncio.get_running_loop().run_in_executor(None, self._process.start)
        return self

    async def stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._process.kill)
