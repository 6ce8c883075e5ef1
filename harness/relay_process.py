"""A real ``samizdat-relay`` process on 127.0.0.1, for tests, benchmarks and
scenarios: started on a free port (or a given one), waited for with a bounded
loop, stopped gracefully or killed with SIGKILL (durability checks)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RelayProcess:
    """One relay process (SQLite) whose log goes next to its data directory."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        limits: dict[str, int | float] | None = None,
        settings: dict[str, str | int | float | bool] | None = None,
        host: str = "127.0.0.1",
        preexec_fn: Callable[[], None] | None = None,
        command: list[str] | None = None,
    ) -> None:
        """``limits`` go to ``[limits]``, ``settings`` are top-level relay.toml
        keys; ``host`` is the listen address (it is always reached on
        127.0.0.1); ``preexec_fn`` runs in the child before exec (rlimits);
        ``command`` replaces ``python -m relay.cli`` (e.g. the spy relay of
        ``harness.spy.relay``, which takes the same options)."""
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.limits = limits or {}
        self.settings = settings or {}
        self.host = host
        self.preexec_fn = preexec_fn
        self.command = command or [sys.executable, "-m", "relay.cli"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"relay-{self.port}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> RelayProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            *self.command, "--host", self.host,
            "--port", str(self.port), "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        if self.limits or self.settings:
            config = self.data_dir.parent / f"relay-{self.port}.toml"
            lines = [f"{key} = {json.dumps(value)}" for key, value in self.settings.items()]
            lines += ["[limits]"] + [f"{key} = {value}" for key, value in self.limits.items()]
            config.write_text("\n".join(lines) + "\n")
            args += ["--config", str(config)]
        with self.log_path.open("ab") as log:
            # the child keeps its own copy of the log descriptor
            self.proc = subprocess.Popen(
                args,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec_fn,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"relay did not start within {START_TIMEOUT:.0f} s")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown (what a crash looks like)."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait (graceful), then SIGKILL if it hangs."""
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
