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

Slow uploads (SPEC.md §7.9, §7.11): every 64 KiB piece of a body must
arrive within ``body_timeout`` (bytes are counted, so trickling a few bytes
per read does not reset the clock) and the whole chunk within
``upload_timeout``.  The upload pool is shared fairly between addresses:
when it is full, a newcomer holding less than its share (the pool divided
by the addresses in it) takes the slot of the slowest upload of the address
holding the most slots, if that is more than its share; the evicted upload
is answered ``Unavailable`` and its connection closed.  So a few addresses
holding the pool with slow uploads cannot refuse anyone else, and a fast
uploader is evicted only from an address that holds more than its share.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass
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


class _Evicted(TimeoutError):
    """Set on an evicted upload's body stream.  A TimeoutError, so that
    aiohttp's lingering read of the rest of the body ends quietly too."""


@dataclass(eq=False, slots=True)
class _Upload:
    """One chunk upload holding a slot of the pool."""

    ip: str
    blob_id: bytes
    request: web.Request
    started: float
    received: int = 0
    evicted: bool = False

    def rate(self, now: float) -> float:
        return self.received / max(now - self.started, 1e-3)


class BlobHandlers:
    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx
        self._uploads: set[_Upload] = set()  # every upload holding a slot

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
        upload: _Upload | None = None
        try:
            self._limit(request)
            if index >= self.ctx.config.limits.blob_max_chunks:
                raise QuotaExceeded("chunk index beyond the blob limit")
            if request.content_length not in (None, BLOB_CHUNK_SIZE):
                raise BadSize(f"a chunk is exactly {BLOB_CHUNK_SIZE} bytes")
            upload = self._take_upload_slot(request, ip, blob_id)
            err = await self._authorize(request, blob_id, upload=True)
            if err is not None:
                raise err
            spool = await self._spool(request, upload)
            created = await self.ctx.storage.blob_put_chunk(blob_id, index, spool)
        except RelayError as exc:
            return error_response(exc)
        finally:
            if upload is not None:
                self._release(upload)
        if created:
            self.ctx.metrics.inc("samizdat_relay_blob_chunks_uploaded_total")
        return web.Response(status=201 if created else 200)

    def _take_upload_slot(self, request: web.Request, ip: str, blob_id: bytes) -> _Upload:
        """One concurrent upload slot, in total, for ``ip`` and for this blob;
        a full pool first gives up a slot of the address over its share."""
        refused = self.ctx.uploads.acquire(ip, blob_id)
        if refused == "total" and self._evict_for(ip):
            refused = self.ctx.uploads.acquire(ip, blob_id)
        if refused is None:
            upload = _Upload(ip, blob_id, request, time.monotonic())
            self._uploads.add(upload)
            return upload
        self.ctx.metrics.inc("samizdat_relay_requests_refused_total")
        if refused == "total":
            raise Unavailable("too many uploads in progress")
        raise RateLimited(f"too many concurrent uploads for this {refused}")

    def _release(self, upload: _Upload) -> None:
        if upload in self._uploads:
            self._uploads.discard(upload)
            self.ctx.uploads.release(upload.ip, upload.blob_id)

    def _evict_for(self, ip: str) -> bool:
        """Fair share of a full pool: the pool divided by the addresses in it
        (the newcomer included).  If ``ip`` holds less than that share and
        the address holding the most slots holds more, that address's
        slowest upload is evicted.  Addresses at their share never evict
        each other, so equals do not churn.  True if a slot was freed."""
        held: dict[str, list[_Upload]] = {}
        for u in self._uploads:
            held.setdefault(u.ip, []).append(u)
        if not held:
            return False
        share = self.ctx.uploads.max_total // (len(held) + (ip not in held))
        top = max(held, key=lambda a: len(held[a]))
        if len(held.get(ip, ())) >= share or len(held[top]) <= share:
            return False
        now = time.monotonic()
        victim = min(held[top], key=lambda u: u.rate(now))
        victim.evicted = True
        self._release(victim)  # the slot is the newcomer's from now on
        victim.request.content.set_exception(_Evicted())
        self.ctx.metrics.inc("samizdat_relay_uploads_evicted_total")
        return True

    async def _spool(self, request: web.Request, upload: _Upload) -> Path:
        spool_dir = self.ctx.storage.spool_dir
        path = spool_dir / os.urandom(12).hex()
        try:
            fh = await asyncio.to_thread(open, path, "wb")
        except OSError as exc:  # e.g. out of descriptors: refuse, do not crash
            raise Unavailable("cannot store uploads right now") from exc
        lim = self.ctx.config.limits
        now = time.monotonic()
        deadline = now + lim.upload_timeout
        piece_deadline = now + lim.body_timeout
        total = 0
        try:
            while True:
                # A slow body holds a socket, a spool file and a slot: each
                # 64 KiB piece must be complete within body_timeout, the chunk
                # within upload_timeout (SPEC.md §7.11).  The clock restarts
                # per piece, not per read: a read returns whatever arrived,
                # so a body trickled a few bytes at a time would never time out.
                wait = min(piece_deadline, deadline) - time.monotonic()
                try:
                    piece = await asyncio.wait_for(request.content.read(PIECE), max(wait, 0.001))
                except TimeoutError:
                    if upload.evicted:
                        raise Unavailable(
                            "upload evicted: its address holds more than its share of a "
                            "full upload pool"
                        ) from None
                    self.ctx.metrics.inc("samizdat_relay_timeouts_total")
                    raise BadRequest("upload too slow") from None
                except ConnectionError:
                    # the uploader went away: nothing to answer, nothing to log
                    raise BadRequest("upload interrupted") from None
                if not piece:
                    break
                if (total + len(piece)) // PIECE > total // PIECE:
                    piece_deadline = time.monotonic() + lim.body_timeout
                total += len(piece)
                upload.received = total
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
