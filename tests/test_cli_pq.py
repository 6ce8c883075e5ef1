"""``--pq`` / ``--suite`` on the command line (SPEC §4.1.1, §8.12), as real
processes against a real relay: a PQ 1:1 chat from a ``invite --pq`` link, a
PQ group with a member added, and a clear error for an unknown suite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client_support import RelayProcess
from tests.test_cli import run

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path / "relay").start()
    yield proc
    proc.stop()


def test_pq_chat_and_group_from_the_shell(tmp_path: Path, relay: RelayProcess) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    run(alice, "init", "--name", "Alice", "--relay", relay.url)
    run(bob, "init", "--name", "Bob", "--relay", relay.url)
    link = run(alice, "invite", "--suite", "xwing").stdout.strip().splitlines()[0]
    run(bob, "accept", link)
    info = json.loads(run(bob, "group", "info", "1", "--json").stdout)
    assert info["suite"] == "0x004f"  # the 1:1 chat takes the invite's suite
    run(alice, "sync", "--wait", "3")
    run(bob, "sync", "--wait", "3")
    run(alice, "sync", "--wait", "3")  # Bob's KeyPackages of every suite arrive

    created = run(alice, "group", "create", "--pq", "Quantum")
    assert "0x004e" in created.stdout
    run(alice, "group", "add", "Quantum", "Bob")
    run(bob, "sync", "--wait", "3")
    info = json.loads(run(bob, "group", "info", "Quantum", "--json").stdout)
    assert info["suite"] == "0x004e" and sorted(info["members"]) == ["Alice", "Bob"]
    text = run(alice, "group", "info", "Quantum").stdout
    assert "MLS_128_MLKEM768X25519_AES256GCM_SHA384_Ed25519 (post-quantum)" in text

    bad = run(alice, "group", "create", "--suite", "rot13", "Nope", ok=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: unknown cipher suite 'rot13': choose one of classic, mlkem768x25519, xwing"
    ]
    both = run(alice, "group", "create", "--pq", "--suite", "xwing", "Nope", ok=False)
    assert both.returncode != 0 and "not allowed with" in both.stderr
