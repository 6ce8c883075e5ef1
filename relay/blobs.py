"""HTTP blob endpoints: create, upload, download and delete fixed-size chunks.

Theory of operation
-------------------
``POST {prefix}/blob`` mints a blob: a random 16-byte id and two random
32-byte capability tokens (upload, read), returned once in a
:class:`~protocol.relay_frames.BlobTicket`; the relay keeps only their
SHA-256 hashes.  Chunks are ``PUT``/``GET`` at ``{prefix}/blob/<id>/<index>``
with ``Authorization: Bearer <token hex>``; each is exactly
:data:`~protocol.padding.BLOB_CHUNK_SIZE` bytes.  An upload streams the body
into a spool file in 64 KiB pieces, fsyncs it and hands it to storage; a
download streams the stored chunk back in 64 KiB pieces.  No request ever
holds more than one piece in memory.  Refusals carry an ``Error`` frame body
with the same typed codes as the WebSocket protocol.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from aiohttp import web

from protocol.padding import BLOB_CHUNK_SIZE
from protocol.relay_frames import (
    BLOB_ID_LEN,
    TOKEN_LEN,
    AccessDenied,
    BadRequest,
    BadSize,
    BlobTicket,
    Error,
    NotAuthorized,
    QuotaExceeded,
    RateLimited,
    RelayError,
    StorageFull,
    TooLarge,
    Unavailable,
    UnknownMailbox,
)
from relay.storage.base import expiry_bucket

if TYPE_CHECKING:
    from relay.app import RelayContext

PIECE = 64 * 1024
_HEX_ID = re.compile(r"^[0-9a-f]{32}$")
_INDEX = re.compile(r"^[0-9]{1,6}$")

STATUS = {
    BadRequest: 400,
    BadSize: 400,
    NotAuthorized: 403,
    AccessDenied: 403,
    UnknownMailbox: 404,
    TooLarge: 413,
    RateLimited: 429,
    QuotaExceeded: 507,
    StorageFull: 507,
    Unavailable: 503,
}


def error_response(exc: RelayError) -> web.Response:
    return web.Response(
        status=STATUS.get(type(exc), 400),
        body=Error.from_exception(0, exc).encode(),
        content_type="application/octet-stream",
    )


def _bearer(request: web.Request) -> bytes | None:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return None
    try:
        return bytes.fromhex(auth[7:].strip())
    except ValueError:
        return None


def _hash(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class BlobHandlers:
    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx

    def _limit(self, request: web.Request) -> None:
        if not self.ctx.blob_limiter.take(self.ctx.client_ip(request)):
            self.ctx.metrics.inc("samizdat_relay_rate_limited_total")
            raise RateLimited("too many blob requests")

    def _parse(self, request: web.Request) -> tuple[bytes, int | None] | None:
        bid = request.match_info.get("blob_id", "")
        idx = request.match_info.get("index")
        if not _HEX_ID.match(bid) or (idx is not None and not _INDEX.match(idx)):
            return None
        return bytes.fromhex(bid), (int(idx) if idx is not None else None)

    async def create(self, request: web.Request) -> web.StreamResponse:
        cfg = self.ctx.config
        try:
            self._limit(request)
            if cfg.access_token:
                given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if not hmac.compare_digest(given.encode(), cfg.access_token.encode()):
                    raise AccessDenied("an access token is required to create blobs")
            elif not cfg.blobs_open:
                # listening beyond loopback with no token: closed unless the
                # operator said blobs_public = true (SPEC.md §7.9)
                raise AccessDenied("an access token is required to create blobs")
            blob_id = os.urandom(BLOB_ID_LEN)
            upload, read = os.urandom(TOKEN_LEN), os.urandom(TOKEN_LEN)
            # stored and told rounded up to the hour (SPEC §7.12)
            expires = expiry_bucket(int(time.time()), cfg.limits.blob_ttl, cfg.limits.time_bucket)
            await self.ctx.storage.blob_create(blob_id, _hash(upload), _hash(read), expires)
        except RelayError as exc:
            return error_response(exc)
        ticket = BlobTicket(blob_id, upload, read, BLOB_CHUNK_SIZE, expires)
        return web.Response(
            status=201, body=ticket.encode(), content_type="application/octet-stream"
        )

    async def _authorize(
        self, request: web.Request, blob_id: bytes, upload: bool
    ) -> RelayError | None:
        meta = await self.ctx.storage.blob_meta(blob_id)
        if meta is None or meta.expires <= time.time():
            return UnknownMailbox("unknown blob")
        token = _bearer(request)
        want = meta.upload_hash if upload else meta.read_hash
        if token is None or not hmac.compare_digest(_hash(token), want):
            return NotAuthorized("bad or missing blob capability")
        return None

    async def put_chunk(self, request: web.Request) -> web.StreamResponse:
        parsed = self._parse(request)
        if parsed is None or parsed[1] is None:
            return await self.ctx.decoy.handle(request)
        blob_id, index = parsed[0], parsed[1]
        ip = self.ctx.client_ip(request)
        held = False
        try:
            self._limit(request)
            if index >= self.ctx.config.limits.blob_max_chunks:
                raise QuotaExceeded("chunk index beyond the blob limit")
            if request.content_length not in (None, BLOB_CHUNK_SIZE):
                raise BadSize(f"a chunk is exactly {BLOB_CHUNK_SIZE} bytes")
            self._take_upload_slot(ip, blob_id)
            held = True
            err = await self._authorize(request, blob_id, upload=True)
            if err is not None:
                raise err
            spool = await self._spool(request)
            created = await self.ctx.storage.blob_put_chunk(blob_id, index, spool)
        except RelayError as exc:
            return error_response(exc)
        finally:
            if held:
                self.ctx.uploads.release(ip, blob_id)
        if created:
            self.ctx.metrics.inc("samizdat_relay_blob_chunks_uploaded_total")
        return web.Response(status=201 if created else 200)

    def _take_upload_slot(self, ip: str, blob_id: bytes) -> None:
        """One concurrent upload slot, in total, for ``ip`` and for this blob."""
        refused = self.ctx.uploads.acquire(ip, blob_id)
        if refused is None:
            return
        self.ctx.metrics.inc("samizdat_relay_requests_refused_total")
        if refused == "total":
            raise Unavailable("too many uploads in progress")
        raise RateLimited(f"too many concurrent uploads for this {refused}")

    async def _spool(self, request: web.Request) -> Path:
        spool_dir = self.ctx.storage.spool_dir
        path = spool_dir / os.urandom(12).hex()
        try:
            fh = await asyncio.to_thread(open, path, "wb")
        except OSError as exc:  # e.g. out of descriptors: refuse, do not crash
            raise Unavailable("cannot store uploads right now") from exc
        lim = self.ctx.config.limits
        deadline = time.monotonic() + lim.upload_timeout
        total = 0
        try:
            while True:
                # A slow body holds a socket, a spool file and a slot: each
                # piece must come within body_timeout, the chunk within
                # upload_timeout (SPEC.md §7.11).
                wait = min(lim.body_timeout, deadline - time.monotonic())
                try:
                    piece = await asyncio.wait_for(request.content.read(PIECE), max(wait, 0.001))
                except TimeoutError:
                    self.ctx.metrics.inc("samizdat_relay_timeouts_total")
                    raise BadRequest("upload too slow") from None
                if not piece:
                    break
                total += len(piece)
                if total > BLOB_CHUNK_SIZE:
                    raise TooLarge(f"a chunk is exactly {BLOB_CHUNK_SIZE} bytes")
                await asyncio.to_thread(fh.write, piece)
            if total != BLOB_CHUNK_SIZE:
                raise BadSize(f"a chunk is exactly {BLOB_CHUNK_SIZE} bytes")
            await asyncio.to_thread(_flush_sync, fh)
        except BaseException:
            fh.close()
            path.unlink(missing_ok=True)
            raise
        fh.close()
        return path

    async def get_chunk(self, request: web.Request) -> web.StreamResponse:
        parsed = self._parse(request)
        if parsed is None or parsed[1] is None:
            return await self.ctx.decoy.handle(request)
        blob_id, index = parsed[0], parsed[1]
        try:
            self._limit(request)
            err = await self._authorize(request, blob_id, upload=False)
            if err is not None:
                raise err
            pieces = await self.ctx.storage.blob_open_chunk(blob_id, index)
            if pieces is None:
                raise UnknownMailbox("no such chunk")
        except RelayError as exc:
            return error_response(exc)
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = BLOB_CHUNK_SIZE
        await resp.prepare(request)
        async for piece in pieces:
            await resp.write(piece)
        await resp.write_eof()
        self.ctx.metrics.inc("samizdat_relay_blob_chunks_downloaded_total")
        return resp

    async def delete(self, request: web.Request) -> web.StreamResponse:
        parsed = self._parse(request)
        if parsed is None:
            return await self.ctx.decoy.handle(request)
        blob_id = parsed[0]
        try:
            self._limit(request)
            err = await self._authorize(request, blob_id, upload=True)
            if err is not None:
                raise err
            await self.ctx.storage.blob_delete(blob_id)
        except RelayError as exc:
            return error_response(exc)
        return web.Response(status=204)


def _flush_sync(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())
