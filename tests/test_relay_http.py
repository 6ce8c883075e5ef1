"""Probe resistance, blobs over HTTP and /metrics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from protocol.padding import BLOB_CHUNK_SIZE
from protocol.relay_frames import (
    AccessDenied,
    BadSize,
    BlobTicket,
    Challenge,
    NotAuthorized,
    QuotaExceeded,
    RateLimited,
    StorageFull,
    TooLarge,
    UnknownMailbox,
    decode_server_frame,
)
from relay.app import CONTEXT, create_app
from tests.relay_support import Client, Mailbox, envelope
from tests.test_relay_app import make_config

PREFIX = "/k3y-9f"


@pytest.fixture
async def relay(aiohttp_client: Any, tmp_path: Path) -> Any:
    async def start(**kw: Any) -> Any:
        kw.setdefault("prefix", PREFIX)
        app = create_app(make_config(tmp_path, **kw))
        tc = await aiohttp_client(app)
        tc.ctx = app[CONTEXT]
        return tc

    return start


async def snapshot(resp: Any) -> tuple[int, str, bytes, str | None]:
    return (
        resp.status,
        resp.headers.get("Content-Type"),
        await resp.read(),
        resp.headers.get("Server"),
    )


async def test_probes_see_only_the_decoy(relay: Any) -> None:
    tc = await relay()
    home = await tc.get("/")
    assert home.status == 200 and b"Welcome to nginx!" in await home.read()
    assert home.headers["Server"] == "nginx"
    reference = await snapshot(await tc.get("/no-such-page"))
    assert reference[0] == 404 and b"404 Not Found" in reference[2]
    probes = [
        ("GET", "/ws"),
        ("GET", "/metrics"),
        ("GET", "/blob/" + "00" * 16 + "/0"),
        ("GET", f"{PREFIX}/ws"),  # the real endpoint without an Upgrade
        ("POST", f"{PREFIX}/ws"),
        ("GET", f"{PREFIX}/nothing"),
        ("GET", f"{PREFIX}/blob/zz/0"),
        ("POST", "/blob"),
        ("GET", "/k3y-9/ws"),  # a near-miss prefix
    ]
    for method, path in probes:
        got = await snapshot(await tc.request(method, path))
        assert got == reference, (method, path)
    # a method nginx's static module does not serve is its 405, on any path
    not_allowed = await snapshot(await tc.delete("/no-such-page"))
    assert not_allowed[0] == 405 and b"405 Not Allowed" in not_allowed[2]
    for method, path in [
        ("PUT", f"{PREFIX}/blob/{'00' * 16}/x"),
        ("DELETE", "/"),
        ("OPTIONS", f"{PREFIX}/ws"),
        ("PATCH", f"{PREFIX}/blob"),
    ]:
        got = await snapshot(await tc.request(method, path))
        assert got == not_allowed, (method, path)
    for text in ("samizdat", "aiohttp", "python"):
        assert text not in str(reference).lower()
        assert text not in str(not_allowed).lower()


async def test_websocket_upgrade_outside_prefix_is_refused(relay: Any) -> None:
    tc = await relay()
    resp = await tc.get("/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert resp.status == 404
    c = await Client.connect(tc.session, tc.make_url(f"{PREFIX}/ws"))
    assert isinstance(c.proto.challenge, Challenge)


async def test_decoy_dir(relay: Any, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>My bakery</h1>")
    (tmp_path / "secret.txt").write_text("outside")
    tc = await relay(decoy_dir=site)
    assert "My bakery" in await (await tc.get("/")).text()
    assert (await tc.get("/../secret.txt")).status == 404
    assert (await tc.get("/%2e%2e/secret.txt")).status == 404


async def new_blob(tc: Any, **headers: str) -> Any:
    return await tc.post(f"{PREFIX}/blob", headers=headers)


def bearer(token: bytes) -> dict[str, str]:
    return {"Authorization": "Bearer " + token.hex()}


def err_code(body: bytes) -> int:
    return decode_server_frame(body).code  # type: ignore[union-attr]


async def test_blob_upload_download_delete(relay: Any) -> None:
    tc = await relay()
    resp = await new_blob(tc)
    assert resp.status == 201
    t = BlobTicket.decode(await resp.read())
    assert t.chunk_size == BLOB_CHUNK_SIZE
    url = f"{PREFIX}/blob/{t.blob_id.hex()}"
    chunk = os.urandom(BLOB_CHUNK_SIZE)

    async def pieces():  # type: ignore[no-untyped-def]
        for i in range(0, BLOB_CHUNK_SIZE, 10_000):
            yield chunk[i : i + 10_000]

    put = await tc.put(f"{url}/0", data=pieces(), headers=bearer(t.upload_token))
    assert put.status == 201
    again = await tc.put(f"{url}/0", data=chunk, headers=bearer(t.upload_token))
    assert again.status == 200  # a retried upload is idempotent
    got = await tc.get(f"{url}/0", headers=bearer(t.read_token))
    assert got.status == 200 and await got.read() == chunk
    # capabilities are distinct
    assert (await tc.get(f"{url}/0", headers=bearer(t.upload_token))).status == 403
    no_auth = await tc.put(f"{url}/1", data=chunk, headers=bearer(t.read_token))
    assert no_auth.status == 403 and err_code(await no_auth.read()) == NotAuthorized.code
    missing = await tc.get(f"{url}/1", headers=bearer(t.read_token))
    assert missing.status == 404 and err_code(await missing.read()) == UnknownMailbox.code
    short = await tc.put(f"{url}/1", data=chunk[:-1], headers=bearer(t.upload_token))
    assert short.status == 400 and err_code(await short.read()) == BadSize.code
    assert (await tc.delete(url, headers=bearer(t.read_token))).status == 403
    assert (await tc.delete(url, headers=bearer(t.upload_token))).status == 204
    gone = await tc.get(f"{url}/0", headers=bearer(t.read_token))
    assert gone.status == 404
    assert not list(tc.ctx.storage.spool_dir.iterdir())


async def test_blob_oversized_streamed_body(relay: Any) -> None:
    tc = await relay()
    t = BlobTicket.decode(await (await new_blob(tc)).read())
    url = f"{PREFIX}/blob/{t.blob_id.hex()}/0"

    async def endless():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 65536

    resp = await tc.put(url, data=endless(), headers=bearer(t.upload_token))
    assert resp.status == 413 and err_code(await resp.read()) == TooLarge.code
    wrong_len = await tc.put(url, data=b"x" * 10, headers=bearer(t.upload_token))
    assert wrong_len.status == 400


async def test_blob_limits(relay: Any) -> None:
    tc = await relay(
        access_token="tok",
        limits={
            "blob_max_chunks": 1,
            "total_max_bytes": BLOB_CHUNK_SIZE,
            "blob_burst": 12,
            "blob_rate": 0.001,
        },
    )
    denied = await new_blob(tc)
    assert denied.status == 403 and err_code(await denied.read()) == AccessDenied.code
    t = BlobTicket.decode(await (await new_blob(tc, Authorization="Bearer tok")).read())
    url = f"{PREFIX}/blob/{t.blob_id.hex()}"
    chunk = b"\0" * BLOB_CHUNK_SIZE
    assert (await tc.put(f"{url}/0", data=chunk, headers=bearer(t.upload_token))).status == 201
    over = await tc.put(f"{url}/1", data=chunk, headers=bearer(t.upload_token))
    assert over.status == 507 and err_code(await over.read()) == QuotaExceeded.code
    t2 = BlobTicket.decode(await (await new_blob(tc, Authorization="Bearer tok")).read())
    full = await tc.put(
        f"{PREFIX}/blob/{t2.blob_id.hex()}/0", data=chunk, headers=bearer(t2.upload_token)
    )
    assert full.status == 507 and err_code(await full.read()) == StorageFull.code
    statuses = [(await tc.get(f"{url}/0", headers=bearer(t.read_token))).status for _ in range(8)]
    assert 429 in statuses
    limited = await tc.get(f"{url}/0", headers=bearer(t.read_token))
    assert err_code(await limited.read()) == RateLimited.code


async def test_metrics_are_aggregate(relay: Any) -> None:
    tc = await relay()
    c = await Client.connect(tc.session, tc.make_url(f"{PREFIX}/ws"))
    mb = Mailbox()
    await c.create(mb)
    await c.auth_write(mb)
    await c.post(mb, envelope())
    await c.auth_read(Mailbox())
    text = await (await tc.get(f"{PREFIX}/metrics")).text()
    assert "samizdat_relay_posts_total 1" in text
    assert 'samizdat_relay_frames_total{type="Post"} 1' in text
    assert 'samizdat_relay_errors_total{code="102"} 1' in text
    assert "samizdat_relay_connections 1" in text
    assert mb.id.hex() not in text and "127.0.0.1" not in text


async def test_metrics_token(relay: Any) -> None:
    tc = await relay(metrics_token="m")
    assert (await tc.get(f"{PREFIX}/metrics")).status == 404
    ok = await tc.get(f"{PREFIX}/metrics", headers={"Authorization": "Bearer m"})
    assert ok.status == 200
