"""``samizdat save`` run as a real process against a hostile sender: received
file names cannot escape the target directory or overwrite files, and a
File message cannot send the client to a server of the sender's choosing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from client.engine import Engine
from protocol.app import attachments
from protocol.app.messages import BlobRef, ChunkRef, File
from tests.client_support import (
    RelayProcess,
    eventually,
    make_engine,
    run_cli,
)
from tests.hostile_blob import hostile_blob_server

pytestmark = pytest.mark.timeout(240)


async def run(
    home: Path, *args: str, cwd: Path, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process (in a thread, so this test's engine and
    servers keep running)."""
    env = {"SAMIZDAT_PASSPHRASE": "correct horse"}
    return await asyncio.to_thread(run_cli, home, *args, env=env, ok=ok, cwd=cwd)


async def send_file_named(alice: Engine, conv: bytes, name: str, data: bytes) -> None:
    """What a hostile member's client can do: upload real chunks, then send
    a File message with any name it likes."""
    enc = attachments.encrypt_file(data, os.urandom)
    url = alice.conversation_relays(conv)[0]
    # the relay's own copy of the chunks (SPEC §8.7), as any client uploads
    copy = attachments.copy_chunks(enc.key, url, enc.chunks)
    blob_id, token = await alice._relay(url).upload_blob(copy)
    refs = tuple(ChunkRef((BlobRef(url, blob_id, token),)) for _ in enc.chunks)
    body = File(
        name,
        "text/plain",
        enc.size,
        attachments.CHUNK_PLAINTEXT_SIZE,
        enc.key,
        refs,
        enc.ciphertext_digest,
    )
    await alice._send_app(conv, body)


def every_file(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


async def test_received_names_stay_in_the_target_dir(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay").start()
    alice = make_engine(tmp_path / "alice", "Alice", [relay.url])
    try:
        await alice.connect()
        bob = tmp_path / "bob"
        await run(bob, "init", "--name", "Bob", "--relay", relay.url, cwd=tmp_path)
        link = (await run(bob, "invite", cwd=tmp_path)).stdout.split()[0]
        conv = (await alice.accept(link)).group_id
        await run(bob, "sync", "--wait", "2", cwd=tmp_path)

        evil_names = ["../../x", "..\\..\\y.txt", "\x1b]0;owned\x07\nnote\x00.txt", "..", ""]
        for i, name in enumerate(evil_names):
            await send_file_named(alice, conv, name, b"payload %d" % i)
        await run(bob, "sync", "--wait", "2", cwd=tmp_path)
        history = json.loads((await run(bob, "history", "Alice", "--json", cwd=tmp_path)).stdout)
        ids = [m["id"] for m in history["messages"] if m["kind"] == "file"]
        assert len(ids) == len(evil_names)

        # bob saves into ./downloads/in; "../../x" would land in ./x
        work = tmp_path / "work"
        target = work / "downloads" / "in"
        target.mkdir(parents=True)
        (target / "x").write_bytes(b"keep me")
        before = every_file(work) - every_file(target)

        refused = await run(bob, "save", "Alice", ids[0], cwd=target, ok=False)
        assert refused.returncode == 1
        assert str(target / "x") in refused.stderr and "--force" in refused.stderr
        assert (target / "x").read_bytes() == b"keep me"
        assert not (work / "x").exists() and not (tmp_path / "x").exists()

        for mid in ids[1:-1]:
            await run(bob, "save", "Alice", mid, cwd=target)
        await run(bob, "save", "Alice", ids[0], "--force", cwd=target)
        assert (target / "x").read_bytes() == b"payload 0"
        # ".." and "" both became "file": the second one is not written over it
        clash = await run(bob, "save", "Alice", ids[-1], cwd=target, ok=False)
        assert clash.returncode == 1 and "--force" in clash.stderr
        assert (target / "file").read_bytes() == b"payload 3"

        # -o DIR: same rules inside another directory
        other = work / "other"
        other.mkdir()
        await run(bob, "save", "Alice", ids[-1], "-o", str(other), cwd=tmp_path)
        await run(bob, "save", "Alice", ids[0], "-o", str(other), cwd=tmp_path)
        assert (other / "file").read_bytes() == b"payload 4"
        assert (other / "x").read_bytes() == b"payload 0"

        after = every_file(work) - every_file(target) - every_file(other)
        assert after - before == set(), "a file was written outside the target directory"
        names = sorted(p.name for p in target.iterdir())
        assert all(n.isprintable() and not n.startswith(".") for n in names), names
        assert len(names) == 4, names
        assert (target / "y.txt").read_bytes() == b"payload 1"
        assert (target / "]0;ownednote.txt").read_bytes() == b"payload 2"

        # a File whose chunks are on a server the sender chose
        async with hostile_blob_server() as server:
            bad = File(
                "cat.png",
                "image/png",
                1,
                attachments.CHUNK_PLAINTEXT_SIZE,
                bytes(32),
                (ChunkRef((BlobRef(server.url, bytes(16), bytes(32)),)),),
                bytes(32),
            )
            await alice._send_app(conv, bad)
            await run(bob, "sync", "--wait", "2", cwd=tmp_path)
            history = json.loads(
                (await run(bob, "history", "Alice", "--json", cwd=tmp_path)).stdout
            )
            mid = history["messages"][-1]["id"]
            outside = await run(bob, "save", "Alice", mid, cwd=target, ok=False)
            assert outside.returncode == 1
            assert server.url in outside.stderr and "--allow-relay" in outside.stderr
            assert server.requests == []
            allowed = await run(
                bob, "save", "Alice", mid, "--allow-relay", server.url, cwd=target, ok=False
            )
            assert allowed.returncode == 1 and allowed.stderr.startswith("error:")
            await eventually(lambda: len(server.requests) == 1, what="the one allowed request")
            assert server.finished == 0
            assert not (target / "cat.png").exists()
            assert not [p for p in target.iterdir() if p.name.endswith(".part")]
    finally:
        await alice.close()
        relay.stop()
