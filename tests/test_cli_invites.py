"""``samizdat invite`` with uses, expiry, list and revoke, as real processes
against a real relay (GitHub issue 11, item 2)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client_support import RelayProcess
from tests.test_cli import run

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path_factory.mktemp("cli-invite-relay") / "data").start()
    yield proc
    proc.stop()


def test_invite_uses_list_and_revoke(tmp_path: Path, relay: RelayProcess) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    run(alice, "init", "--name", "Alice", "--relay", relay.url)
    run(bob, "init", "--name", "Bob", "--relay", relay.url)
    made = json.loads(run(alice, "invite", "--uses", "3", "--expires", "2h", "--json").stdout)
    assert made["link"].startswith("samizdat:i/")
    assert (made["state"], made["uses"], made["max_uses"]) == ("active", 0, 3)
    assert made["expires_at"] - made["created_at"] == 2 * 3600 * 1000
    assert made["relays"] == [relay.url]
    once = run(alice, "invite").stdout.strip().splitlines()[0]  # --once by default
    listed = json.loads(run(alice, "invite", "list", "--json").stdout)
    assert [(i["id"], i["max_uses"]) for i in listed["invites"]][:1] == [(made["id"], 3)]
    assert [i["max_uses"] for i in listed["invites"]] == [3, 1]
    assert listed["legacy_inbox_relays"] == []  # a new identity never shared its inbox
    revoked = json.loads(run(alice, "invite", "revoke", made["id"][:6], "--json").stdout)
    assert revoked["state"] == "revoked" and revoked["deleted_on_relays"]
    # (the engine-level refusal of a revoked link is in tests/test_invites.py:
    # here the process would meet the pre-existing RelayClient.close() hang
    # right after a refused request, which another branch fixes)
    run(bob, "accept", once)
    run(alice, "sync", "--wait", "2")
    states = {
        i["max_uses"]: i
        for i in json.loads(run(alice, "invite", "list", "--json").stdout)["invites"]
    }
    assert states[1]["state"] == "used" and states[1]["uses"] == 1
    assert states[3]["state"] == "revoked"
    text = run(alice, "invite", "list").stdout
    assert "revoked" in text and "used" in text and "legacy" not in text


def test_invite_errors_are_one_line(tmp_path: Path, relay: RelayProcess) -> None:
    home = tmp_path / "carol"
    run(home, "init", "--name", "Carol", "--relay", relay.url)
    for args, needle in (
        (("invite", "--expires", "5x"), "bad duration"),
        (("invite", "--uses", "0"), "1 to 1000 uses"),
        (("invite", "revoke"), "which invite"),
        (("invite", "revoke", "abcdef"), "no invite"),
    ):
        result = run(home, *args, ok=False)
        assert result.returncode == 1, args
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, args
        assert needle in result.stderr, (args, result.stderr)
