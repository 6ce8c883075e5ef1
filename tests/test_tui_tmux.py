"""The app in a real terminal: ``samizdat demo`` under tmux, at 80x24 (the
smallest terminal the app supports).

A message typed into Alice's pane reaches Bob (the demo's bot): his answer
appears in the captured pane, and after quitting, Bob's own store (kept
with ``--keep``) holds the message.  Without ``--keep`` nothing is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client_support import ROOT, env_without_proxy
from tests.required import missing

pytestmark = [pytest.mark.timeout(120)]

if shutil.which("tmux") is None:
    missing("tmux is not installed (apt-get install -y tmux)", module=True)


class Tmux:
    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.name = "samizdat-test-" + uuid.uuid4().hex[:8]
        exports = " ".join(f"{k}={shlex_quote(v)}" for k, v in env.items())
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", "80", "-y", "24",
             f"cd {shlex_quote(str(ROOT))} && env {exports} {command}; "
             "echo SAMIZDAT-EXITED=$?; sleep 120"],
            check=True,
        )  # fmt: skip

    def capture(self) -> str:
        out = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        )
        return out.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, text: str, timeout: float = 45.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.capture()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the pane shows:\n{self.capture()}")

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    base = env_without_proxy()
    yield {
        "TMPDIR": str(tmpdir),
        "TERM": "xterm-256color",
        "PATH": base.get("PATH", ""),
        "HOME": base.get("HOME", str(tmp_path)),
        "PYTHONPATH": str(ROOT),
    }


def test_demo_in_tmux_message_reaches_the_other_identity(
    tmp_path: Path, env: dict[str, str]
) -> None:
    keep = tmp_path / "kept"
    tmux = Tmux(f"{shlex_quote(sys.executable)} -m client.cli demo --keep {keep}", env)
    try:
        tmux.wait_for("Samizdat demo  |  3 members")
        tmux.wait_for("sunset.png")
        tmux.keys("-l", "hello from tmux")
        tmux.keys("Enter")
        tmux.wait_for('Bob here: I got "hello from tmux"')
        # Bob's receipt and his reply travel separately (each post on its own
        # connection, with its own jitter): the tick may show a moment later.
        tmux.wait_for("delivered", timeout=30)
        tmux.keys("C-q")
        tmux.wait_for("SAMIZDAT-EXITED=0", timeout=30)
    finally:
        tmux.kill()
    # Bob's own store, read by the CLI as Bob: the message is there.
    out = subprocess.run(
        [sys.executable, "-m", "client.cli", "--home", str(keep / "bob"), "history",
         "Samizdat demo"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "SAMIZDAT_PASSPHRASE": "demo"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Alice: hello from tmux" in out.stdout


def test_demo_leaves_nothing_behind(env: dict[str, str]) -> None:
    tmux = Tmux(f"{shlex_quote(sys.executable)} -m client.cli demo", env)
    try:
        tmux.wait_for("Samizdat demo  |  3 members")
        assert any(Path(env["TMPDIR"]).iterdir())  # the demo's data lives there meanwhile
        tmux.keys("C-q")
        tmux.wait_for("SAMIZDAT-EXITED=0", timeout=30)
    finally:
        tmux.kill()
    assert list(Path(env["TMPDIR"]).iterdir()) == []
