"""``samizdat group``: every subcommand run as a real process against a real
relay, with the other members as engines in this process that see what the
command did (a group's members, admins and timer live in the MLS group state
they share, not in the CLI's output)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from client.engine import Engine
from tests.client_support import (
    RelayProcess,
    cli_identity,
    eventually,
    make_engine,
    run_cli,
)

pytestmark = pytest.mark.timeout(300)

PASSPHRASE = "correct horse"
GROUP = "Book club"


async def run(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process (in a thread: this test's engines keep running)."""
    env = {"SAMIZDAT_PASSPHRASE": PASSPHRASE}
    return await asyncio.to_thread(run_cli, home, *args, env=env, ok=ok)


async def befriend_cli(alice: Path, other: Engine) -> None:
    """``other`` accepts an invite made by the CLI; the CLI learns its key packages."""
    link = (await run(alice, "invite")).stdout.split()[0]
    await other.accept(link)
    for _ in range(10):  # bounded: each sync waits up to 2 s for what is in flight
        await run(alice, "sync", "--wait", "2")
        contacts = json.loads((await run(alice, "contacts", "--json")).stdout)
        names = [c["name"] for c in contacts.get("contacts", contacts)]
        if other.identity.name in names:
            return
    raise AssertionError(f"the CLI never saw {other.identity.name} as a contact")


def group_of(engine: Engine) -> bytes | None:
    conv = next((c for c in engine.conversations() if c.name == GROUP), None)
    return conv.group_id if conv is not None else None


async def test_group_commands_from_the_shell(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay").start()
    alice = tmp_path / "alice"
    await asyncio.to_thread(cli_identity, alice, "Alice", [relay.url], PASSPHRASE.encode())
    bob = make_engine(tmp_path / "bob", "Bob", [relay.url])
    carol = make_engine(tmp_path / "carol", "Carol", [relay.url])
    try:
        await bob.connect()
        await carol.connect()
        await befriend_cli(alice, bob)
        await befriend_cli(alice, carol)

        out = await run(alice, "group", "create", GROUP)
        assert out.stdout.startswith(f"group {GROUP!r} created")
        # an unknown contact: one line, nonzero, and nobody is added
        bad = await run(alice, "group", "add", GROUP, "Nobody", ok=False)
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "Nobody" in bad.stderr

        out = await run(alice, "group", "add", GROUP, "Bob", "Carol")
        assert out.stdout.strip() == f"added Bob, Carol to {GROUP}"
        await eventually(lambda: group_of(bob) is not None, what="Bob in the group")
        await eventually(lambda: group_of(carol) is not None, what="Carol in the group")
        gid = group_of(bob)
        assert gid is not None

        info = json.loads((await run(alice, "group", "info", GROUP, "--json")).stdout)
        assert info["name"] == GROUP and info["kind"] == "group"
        assert sorted(info["members"]) == ["Alice", "Bob", "Carol"]
        assert info["relays"] == [relay.url] and info["epoch"] >= 1
        text = (await run(alice, "group", "info", GROUP)).stdout
        assert text.startswith(f"{GROUP} (group), epoch ") and "members: " in text

        out = await run(alice, "group", "admin", GROUP, "Bob")
        assert out.stdout.strip() == f"Bob is now an admin of {GROUP}"
        await eventually(
            lambda: bob.identity.signature_pub in bob.admins(gid), what="Bob an admin at Bob"
        )
        out = await run(alice, "group", "admin", GROUP, "Bob", "--revoke")
        assert out.stdout.strip() == f"Bob is no longer an admin of {GROUP}"
        await eventually(
            lambda: bob.identity.signature_pub not in bob.admins(gid), what="Bob not an admin"
        )

        out = await run(alice, "group", "disappear", GROUP, "3600")
        assert out.stdout.strip() == f"disappearing messages in {GROUP}: after 3600 s"
        await eventually(
            lambda: bob.conversation(gid).disappearing_ms == 3_600_000,  # type: ignore[union-attr]
            what="the timer at Bob",
        )

        out = await run(alice, "group", "remove", GROUP, "Carol")
        assert out.stdout.strip() == f"removed Carol from {GROUP}"
        await eventually(lambda: not carol.groups[gid].active, what="Carol removed")
        await eventually(
            lambda: carol.identity.signature_pub not in bob.members(gid), what="Bob sees it"
        )

        out = await run(alice, "group", "leave", GROUP)
        assert out.stdout.strip() == f"you left {GROUP}"
        gone = await run(alice, "group", "info", GROUP, ok=False)  # a left group is not found
        assert gone.returncode == 1 and f"no conversation {GROUP!r}" in gone.stderr
        await eventually(lambda: len(bob.members(gid)) == 1, what="Bob alone in the group")
    finally:
        for engine in (bob, carol):
            if not engine._closing:
                await engine.close()
        relay.stop()
