"""Private routing (issue 15 item 2, SPEC.md §7.14), on real relay processes.

The attack: the relay that holds a conversation's mailbox (B), compelled to
log what its process sees, records the peer address of every post and so
attributes each one to the poster's own connection.  With a forwarder set,
every post to B arrives from relay A (which forwards from 127.0.0.2, its
configured ``forward_source``), never from the clients (127.0.0.1), and the
messages still arrive.  Then A's abuse limits and its SSRF guard.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from nacl.signing import SigningKey

from client import forwarding
from client.engine import Engine, EngineError
from client.forwarding import ForwarderFailed, Forwarding
from client.model import NS_CONFIG
from client.outbound import RELAY_KEYS
from harness.relay_conformance import Options, format_outcomes, run_suite
from harness.relay_process import RelayProcess
from harness.scenario.relays import LocalRelay
from harness.spy.scenario import spy_command
from protocol.forward import ForwardRequest
from protocol.relay_frames import (
    BadSeal,
    Create,
    Error,
    ForwardDenied,
    Ok,
    RateLimited,
    decode_server_frame,
)
from relay.config import ConfigError, load_config
from relay.forward import load_relay_key
from tests.client_support import ROOT, befriend, eventually, make_engine, run_cli

pytestmark = pytest.mark.timeout(240)

FORWARDER_ADDRESS = "127.0.0.2"  # relay A's forwarded posts leave from here


def _forwarder_settings(**extra: object) -> dict[str, object]:
    return {
        "forwarding": True,
        "forward_allow": ["127.0.0.1"],  # the destination relay is on loopback
        "forward_source": FORWARDER_ADDRESS,
        "debug_log": True,
        **extra,
    }


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[tuple[RelayProcess, RelayProcess]]:
    """(A: the forwarder, B: the destination, logging every post's peer)."""
    a = RelayProcess(tmp_path / "a", settings=_forwarder_settings()).start()  # type: ignore[arg-type]
    b = RelayProcess(tmp_path / "b", settings={"debug_log": True}).start()
    yield a, b
    a.stop()
    b.stop()


def posts_seen_by(relay: RelayProcess) -> list[tuple[str, str]]:
    """(mailbox id hex, peer address:port) of every post ``relay`` logged."""
    text = relay.log_path.read_text(errors="replace")
    peers = {c: p for p, c in re.findall(r"connection from (\S+) \(connection (\d+)\)", text)}
    out = [
        (m, peers.get(c, "?"))
        for m, c in re.findall(r"post to ([0-9a-f]+) on connection (\d+)", text)
    ]
    out += re.findall(r"forwarded post to ([0-9a-f]+) from (\S+)", text)
    return out


@pytest.fixture
async def pair(
    tmp_path: Path, relays: tuple[RelayProcess, RelayProcess]
) -> AsyncIterator[list[Engine]]:
    a, b = relays
    engines = [make_engine(tmp_path / n, n.capitalize(), [b.url, a.url]) for n in ("alice", "bob")]
    for e in engines:
        e.set_forwarder(a.url)
        await e.connect()
    yield engines
    for e in engines:
        await e.close()


async def test_destination_relay_never_sees_the_posters_connection(
    pair: list[Engine], relays: tuple[RelayProcess, RelayProcess]
) -> None:
    a, b = relays
    alice, bob = pair
    conv = await befriend(alice, bob)
    await alice.send_text(conv, "through the forwarder")
    await eventually(
        lambda: any(h.text == "through the forwarder" for h in bob.history(conv)),
        what="Bob gets Alice's message",
    )
    await bob.send_text(conv, "and back")
    await eventually(
        lambda: any(h.text == "and back" for h in alice.history(conv)), what="Alice gets it"
    )
    await eventually(lambda: not alice.outbox() and not bob.outbox(), what="outboxes empty")
    on_b = {m.mailbox_id.hex() for m in alice._meta(conv).mailboxes if m.relay_url == b.url}
    assert on_b, "the conversation has a mailbox on relay B"
    seen = [(m, peer) for m, peer in posts_seen_by(b) if m in on_b]
    assert len(seen) >= 4, seen  # profiles, key packages, two texts at least
    direct = [peer for _, peer in seen if not peer.startswith(FORWARDER_ADDRESS + ":")]
    assert not direct, f"relay B saw {len(direct)} of {len(seen)} posts from {direct[:3]}"
    # the forwarder never learnt a mailbox id: it holds only sealed bytes
    a_log = a.log_path.read_text(errors="replace")
    assert not any(m in a_log for m in on_b)


async def test_forwarder_failure_is_reported_and_the_post_waits(
    pair: list[Engine], relays: tuple[RelayProcess, RelayProcess]
) -> None:
    a, b = relays
    alice, bob = pair
    conv = await befriend(alice, bob)
    await eventually(lambda: not alice.outbox(), what="Alice's outbox empty")
    a.stop()  # the forwarder goes away
    before = len(posts_seen_by(b))
    await alice.send_text(conv, "held back")
    await eventually(
        lambda: any(
            "did not forward" in n.text or "not reachable" in n.text for n in alice.notices
        ),
        what="the forwarder's failure reported",
    )
    assert any(i.relay_url == b.url for i in alice.outbox()), "the post to B waits"
    assert len(posts_seen_by(b)) == before, "no direct post to B without fallback"
    assert not any(h.text == "held back" for h in bob.history(conv))
    # with fallback allowed, the waiting post goes directly
    alice.set_forwarder(a.url, fallback=True)
    await alice.flush_outbox(b.url)
    await eventually(
        lambda: any(h.text == "held back" for h in bob.history(conv)), what="fallback delivery"
    )


async def test_a_forwarder_no_longer_among_your_relays_is_not_used(
    pair: list[Engine], relays: tuple[RelayProcess, RelayProcess]
) -> None:
    a, b = relays
    alice, bob = pair
    conv = await befriend(alice, bob)
    await eventually(lambda: not alice.outbox(), what="Alice's outbox empty")

    def direct() -> list[tuple[str, str]]:
        return [p for p in posts_seen_by(b) if not p[1].startswith(FORWARDER_ADDRESS + ":")]

    before = direct()
    alice.identity.relays.remove(a.url)  # as after 'relays remove' (its moves aside)
    await alice.send_text(conv, "not through a stranger")
    await eventually(
        lambda: any("no longer one of your relays" in n.text for n in alice.notices),
        what="the stale forwarder reported",
    )
    assert any(i.relay_url == b.url for i in alice.outbox())
    assert direct() == before  # (before: the invite blob its maker posts, §7.14)


async def test_relay_keys_are_fetched_ahead_and_saved(
    tmp_path: Path, relays: tuple[RelayProcess, RelayProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key fetch shows our address to that relay: done ahead, at random
    times after connecting, and saved, not just before a post."""
    monkeypatch.setattr(forwarding, "PREFETCH_JITTER", 0.2)
    a, b = relays
    alice = make_engine(tmp_path / "alice", "Alice", [b.url, a.url])
    alice.set_forwarder(a.url)
    await alice.connect()
    try:

        def saved() -> dict[str, str]:
            raw = alice.store.get(NS_CONFIG, RELAY_KEYS)
            return json.loads(raw) if raw else {}

        await eventually(lambda: b.url in saved(), what="B's key fetched without a post")
        assert a.url not in saved()  # the forwarder's own key is never needed
        assert len(bytes.fromhex(saved()[b.url])) == 32
        assert not posts_seen_by(b)
    finally:
        await alice.close()


def test_forwarder_setting_is_one_of_your_relays(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "e", "E", ["http://127.0.0.1:9/r", "http://127.0.0.1:8/s"])
    try:
        assert engine.set_forwarder("http://127.0.0.1:8/s/") == "http://127.0.0.1:8/s"
        with pytest.raises(EngineError, match="not one of your relays"):
            engine.set_forwarder("http://elsewhere.example")
        assert engine.identity.forwarder == "http://127.0.0.1:8/s"
        assert engine.set_forwarder("off") == ""
        assert not engine.identity.forward_fallback
    finally:
        engine.store.close()


# -- relay A's guards -------------------------------------------------------------------


async def _box_on(relay: RelayProcess) -> tuple[bytes, SigningKey]:
    """A mailbox created on ``relay`` directly; its id and write key."""
    mailbox_id, read, write = os.urandom(32), SigningKey.generate(), SigningKey.generate()
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{relay.url}/ws") as ws:
        await ws.receive()  # Challenge
        create = Create(1, mailbox_id, bytes(read.verify_key), bytes(write.verify_key))
        await ws.send_bytes(create.encode())
        assert isinstance(decode_server_frame((await ws.receive()).data), Ok)
    return mailbox_id, write


async def _raw_forward(forwarder: str, destination: str, sealed: bytes) -> tuple[int, bytes]:
    body = ForwardRequest(destination, sealed).encode()
    async with aiohttp.ClientSession() as s, s.post(f"{forwarder}/forward", data=body) as r:
        return r.status, await r.read()


def _code(body: bytes) -> int:
    frame = decode_server_frame(body)
    assert isinstance(frame, Error), frame
    return frame.code


async def test_forward_flood_is_refused(tmp_path: Path) -> None:
    b = RelayProcess(tmp_path / "b", settings={"debug_log": True}).start()
    settings = _forwarder_settings()
    a = RelayProcess(
        tmp_path / "a",
        settings=settings,  # type: ignore[arg-type]
        limits={"forward_rate": 0.01, "forward_burst": 5, "forward_bytes_burst": 1_000_000},
    ).start()
    fwd = Forwarding()
    try:
        mailbox_id, write = await _box_on(b)
        # one request larger than the forwarder takes (it spends a token too)
        status, _ = await _raw_forward(a.url, b.url, os.urandom(200_000))
        assert status == 413
        results = []
        for _ in range(12):
            try:
                await fwd.post(a.url, b.url, mailbox_id, bytes(write), os.urandom(16), bytes(256))
                results.append("posted")
            except ForwarderFailed as exc:
                results.append(str(exc))
        assert results[:4] == ["posted"] * 4
        assert all("RateLimited" in r for r in results[4:]), results
        assert len(posts_seen_by(b)) == 4  # the flood never reached B
        async with aiohttp.ClientSession() as s:
            metrics = {}
            for r in (a, b):
                async with s.get(f"{r.url}/metrics") as resp:
                    metrics[r.url] = await resp.text()
        assert "samizdat_relay_forwards_total 4\n" in metrics[a.url]
        assert "samizdat_relay_rate_limited_total 8\n" in metrics[a.url]
        assert "samizdat_relay_forwarded_total 4\n" in metrics[b.url]
    finally:
        await fwd.close()
        a.stop()
        b.stop()


async def test_forward_bytes_cap(tmp_path: Path) -> None:
    b = RelayProcess(tmp_path / "b").start()
    a = RelayProcess(
        tmp_path / "a",
        settings=_forwarder_settings(),  # type: ignore[arg-type]
        limits={"forward_bytes_rate": 1.0, "forward_bytes_burst": 40_000},
    ).start()
    fwd = Forwarding()
    try:
        mailbox_id, write = await _box_on(b)
        envelope = bytes(16384)
        await fwd.post(a.url, b.url, mailbox_id, bytes(write), os.urandom(16), envelope)
        await fwd.post(a.url, b.url, mailbox_id, bytes(write), os.urandom(16), envelope)
        with pytest.raises(ForwarderFailed, match="RateLimited"):
            await fwd.post(a.url, b.url, mailbox_id, bytes(write), os.urandom(16), envelope)
    finally:
        await fwd.close()
        a.stop()
        b.stop()


async def test_forwarding_to_private_addresses_is_refused(tmp_path: Path) -> None:
    """SSRF: without ``forward_allow``, no loopback, private, link-local or
    credential-carrying destination is ever connected to."""
    b = RelayProcess(tmp_path / "b", settings={"debug_log": True}).start()
    a = RelayProcess(tmp_path / "a", settings={"forwarding": True}).start()
    try:
        sealed = os.urandom(300)
        for dest in (
            b.url,  # 127.0.0.1
            f"http://localhost:{b.port}",  # a name that resolves to loopback
            f"http://[::1]:{b.port}",
            f"http://[::ffff:127.0.0.1]:{b.port}",
            "http://10.1.2.3",
            "http://192.168.0.1:8080/x",
            "http://169.254.169.254/latest",  # cloud metadata
            "http://0.0.0.0:80",
            f"http://user:pw@127.0.0.1:{b.port}",
            f"ftp://127.0.0.1:{b.port}",
            f"{b.url}?q=1",
        ):
            status, body = await _raw_forward(a.url, dest, sealed)
            assert (status, _code(body)) == (403, ForwardDenied.code), dest
        text = b.log_path.read_text(errors="replace")
        assert "forwarded post" not in text and "BadSeal" not in text
        # the destination role: a request not sealed to B's key is refused there
        allowed = RelayProcess(
            tmp_path / "a2",
            settings={"forwarding": True, "forward_allow": ["127.0.0.0/8"]},
        ).start()
        try:
            status, body = await _raw_forward(allowed.url, b.url, sealed)
            assert (status, _code(body)) == (502, BadSeal.code)
        finally:
            allowed.stop()
    finally:
        a.stop()
        b.stop()


async def test_forwarding_off_answers_like_the_decoy(tmp_path: Path) -> None:
    b = RelayProcess(tmp_path / "b").start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{b.url}/forward", data=b"x") as r:
                off = (r.status, await r.read())
            async with s.post(f"{b.url}/no-such-page", data=b"x") as r:
                decoy = (r.status, await r.read())
        assert off == decoy
        with pytest.raises(ForwarderFailed, match="HTTP 404"):
            fwd = Forwarding()
            try:
                await fwd.post(b.url, b.url, os.urandom(32), bytes(32), bytes(16), bytes(256))
            finally:
                await fwd.close()
    finally:
        b.stop()


def test_relay_key_file(tmp_path: Path) -> None:
    key = load_relay_key(tmp_path / "data")
    path = tmp_path / "data" / "forward.key"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_relay_key(tmp_path / "data") == key
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="not a forwarding key"):
        load_relay_key(tmp_path / "data")


def test_check_config_validates_forwarding(tmp_path: Path) -> None:
    cfg = load_config(None, forwarding=True, forward_allow=["127.0.0.1", "10.0.0.0/8"])
    assert cfg.forwarding and cfg.describe()["forward_allow"] == ["127.0.0.1", "10.0.0.0/8"]
    with pytest.raises(ConfigError) as err:
        load_config(
            None,
            forwarding="yes",
            forward_allow=["not an address"],
            forward_deny=["bad host!"],
            forward_source="nowhere",
        )
    problems = " | ".join(err.value.problems)
    for word in (
        "forwarding must be true or false",
        "forward_allow",
        "forward_deny",
        "forward_source",
    ):
        assert word in problems, problems
    assert load_config(None, forward_deny=["metadata.internal", "100.64.0.0/10"]).forward_deny
    assert RateLimited.code == 110  # the flood's refusal code (SPEC §7.8)
    # the operator's command: every mistake listed, exit status 2
    bad = tmp_path / "bad.toml"
    bad.write_text('forwarding = "yes"\nforward_allow = ["10.0.0.0/33"]\n')
    out = subprocess.run(
        [sys.executable, "-m", "relay.cli", "check-config", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "forwarding must be true or false" in out.stderr and "forward_allow" in out.stderr
    good = tmp_path / "good.toml"
    good.write_text(
        'forwarding = true\nforward_deny = ["metadata.internal"]\n[limits]\nforward_rate = 5\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "relay.cli", "check-config", "--config", str(good)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["forwarding"] is True and shown["limits"]["forward_rate"] == 5.0


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(home, *args, env={"SAMIZDAT_PASSPHRASE": "correct horse"})


def test_cli_relays_forward(tmp_path: Path) -> None:
    """``samizdat relays forward URL|off [--fallback]`` saves the setting,
    refuses a relay that is not one of yours, and ``relays`` shows it."""
    relays = [RelayProcess(tmp_path / n).start() for n in ("a", "b")]
    home = tmp_path / "alice"
    try:
        a, b = (r.url for r in relays)
        init = _cli(home, "init", "--name", "Alice", "--relay", a, "--relay", b)
        assert init.returncode == 0, init.stderr
        assert "through" in _cli(home, "relays", "forward", a).stdout
        listing = json.loads(_cli(home, "relays", "list", "--json").stdout)
        assert listing["forwarder"] == a and listing["forward_fallback"] is False
        assert f"forward: posts to other relays go through {a}" in _cli(home, "relays").stdout
        bad = _cli(home, "relays", "forward", "http://127.0.0.1:1")
        assert bad.returncode != 0 and "not one of your relays" in bad.stderr
        assert "post directly" in _cli(home, "relays", "forward", "--fallback").stdout
        shown = json.loads(_cli(home, "relays", "forward", "--json").stdout)
        assert shown == {"forwarder": a, "forward_fallback": True}
        assert "off" in _cli(home, "relays", "forward", "off").stdout
        assert json.loads(_cli(home, "relays", "list", "--json").stdout)["forwarder"] == ""
    finally:
        for r in relays:
            r.stop()


async def test_conformance_covers_forwarding(tmp_path: Path) -> None:
    """relay-conformance's private-routing checks pass on a relay that
    forwards (to itself, on loopback: allowed here) and one that does not."""
    on = await LocalRelay(
        tmp_path / "on", prefix="s3cret", forwarding=True, forward_allow=["127.0.0.1"]
    ).start()
    off = await LocalRelay(tmp_path / "off").start()
    names = ["relay-key", "forwarded", "forward"]
    try:
        got_on = await run_suite(Options(on.url), only=names)
        got_off = await run_suite(Options(off.url), only=names)
    finally:
        await on.stop()
        await off.stop()
    for got in (got_on, got_off):
        assert [o.status for o in got] == ["passed"] * 3, format_outcomes(got)
    assert "forwarded to itself" in got_on[2].detail
    assert "not offered" in got_off[2].detail


async def test_spy_relay_records_forwarded_posts(tmp_path: Path) -> None:
    """The compelled destination's full log (harness spy relay): a forwarded
    post shows the forwarder's address with the mailbox it must read."""
    log = tmp_path / "spy.jsonl"
    b = RelayProcess(tmp_path / "b", command=spy_command(log)).start()
    a = RelayProcess(tmp_path / "a", settings=_forwarder_settings()).start()  # type: ignore[arg-type]
    fwd = Forwarding()
    try:
        mailbox_id, write = await _box_on(b)
        await fwd.post(a.url, b.url, mailbox_id, bytes(write), os.urandom(16), bytes(512))
    finally:
        await fwd.close()
        a.stop()
        b.stop()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    forwarded = [r for r in records if r["ev"] == "forwarded"]
    assert len(forwarded) == 1, records
    assert forwarded[0]["peer"].startswith(FORWARDER_ADDRESS + ":")
    assert forwarded[0]["mailbox"] == mailbox_id.hex() and forwarded[0]["size"] == 512
    # the client's own connection made the mailbox, never the post
    posts = [r for r in records if r["ev"] == "frame" and r["type"] in ("Post", "PostSigned")]
    assert posts == []
