"""The ``samizdat`` command line, run as a real process against real relays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client_support import ROOT, RelayProcess, env_without_proxy, run_cli

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path_factory.mktemp("cli-relay") / "data").start()
    yield proc
    proc.stop()


def run(
    home: Path, *args: str, ok: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"SAMIZDAT_PASSPHRASE": "correct horse", "SAMIZDAT_BACKUP_PASSPHRASE": "backup battery"}
    return run_cli(home, *args, env=env, ok=ok, stdin=stdin)


def test_two_people_chat_from_the_shell(tmp_path: Path, relay: RelayProcess) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    run(alice, "init", "--name", "Alice", "--relay", relay.url)
    run(bob, "init", "--name", "Bob", "--relay", relay.url)
    link = run(alice, "invite").stdout.strip().splitlines()[0]
    assert link.startswith("samizdat:i/")
    run(bob, "accept", link)
    run(alice, "sync", "--wait", "2")
    contacts = json.loads(run(alice, "contacts", "--json").stdout)["contacts"]
    assert [c["name"] for c in contacts] == ["Bob"]
    run(bob, "sync", "--wait", "2")
    sent = json.loads(run(bob, "send", "Alice", "hi from the shell", "--json").stdout)
    assert sent["relays_stored"] == 1
    run(alice, "sync", "--wait", "2")
    history = json.loads(run(alice, "history", "Bob", "--json").stdout)
    assert [m["text"] for m in history["messages"]] == ["hi from the shell"]
    assert history["messages"][0]["from"] == "Bob"
    chats = json.loads(run(alice, "chats", "--json").stdout)["chats"]
    assert chats[0]["name"] == "Bob" and chats[0]["kind"] == "direct"
    number = json.loads(run(alice, "verify", "Bob", "--json").stdout)["safety_number"]
    other = json.loads(run(bob, "verify", "Alice", "--json").stdout)["safety_number"]
    assert number == other and len(number.replace(" ", "")) == 60
    run(alice, "verify", "Bob", "--confirm")
    assert json.loads(run(alice, "contacts", "--json").stdout)["contacts"][0]["verified"]


def test_errors_are_one_line_and_nonzero(tmp_path: Path, relay: RelayProcess) -> None:
    home = tmp_path / "carol"
    missing = run(home, "chats", ok=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: no identity") and missing.stderr.count("\n") == 1
    run(home, "init", "--name", "Carol", "--relay", relay.url)
    again = run(home, "init", "--name", "Carol", "--relay", relay.url, ok=False)
    assert again.returncode == 1 and "already" in again.stderr
    bad_link = run(home, "accept", "samizdat:invite/AAAA", ok=False)
    assert bad_link.returncode == 1 and bad_link.stderr.startswith("error:")
    env = env_without_proxy()
    env["SAMIZDAT_PASSPHRASE"] = "wrong"
    wrong = subprocess.run(
        [sys.executable, "-m", "client.cli", "--home", str(home), "chats"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 1 and "passphrase" in wrong.stderr.lower()
    no_chat = run(home, "send", "nobody", "hello", ok=False)
    assert no_chat.returncode == 1 and "no conversation" in no_chat.stderr


def test_send_while_relay_down_is_queued_then_delivered(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay").start()
    try:
        alice, bob = tmp_path / "alice", tmp_path / "bob"
        run(alice, "init", "--name", "Alice", "--relay", relay.url)
        run(bob, "init", "--name", "Bob", "--relay", relay.url)
        run(bob, "accept", run(alice, "invite").stdout.split()[0])
        run(alice, "sync", "--wait", "2")
        run(bob, "sync", "--wait", "1")
        relay.kill()
        queued = run(bob, "send", "Alice", "written offline", ok=False)
        assert queued.returncode == 3 and "queued" in queued.stderr
        relay = RelayProcess(relay.data_dir, port=relay.port).start()
        run(bob, "sync", "--wait", "2")
        run(alice, "sync", "--wait", "2")
        texts = [
            m["text"] for m in json.loads(run(alice, "history", "Bob", "--json").stdout)["messages"]
        ]
        assert texts == ["written offline"]
    finally:
        relay.stop()


def test_export_import_from_the_shell(tmp_path: Path, relay: RelayProcess) -> None:
    home = tmp_path / "dora"
    run(home, "init", "--name", "Dora", "--relay", relay.url)
    run(home, "export", str(tmp_path / "dora.backup"))
    restored = tmp_path / "dora2"
    run(restored, "import", str(tmp_path / "dora.backup"))
    key_before = run(home, "invite", "--json").stdout
    assert json.loads(key_before)["link"].startswith("samizdat:i/")
    assert os.path.exists(restored)
    assert json.loads(run(restored, "relays", "--json").stdout)["relays"] == [relay.url]
