"""A hostile blob server for attachment tests: answers every blob download
with far more than one chunk (50 MB by default) and counts what it was asked
and what it managed to send.

It stands for a relay chosen by a hostile sender (a URL in a ``File``
message) or a relay that turned hostile; it speaks just enough of SPEC §7.9
(``GET /blob/<id>/<index>``) to be downloaded from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.client_support import free_port

PIECE = 64 * 1024


@dataclass
class HostileBlobServer:
    url: str
    body_size: int
    declare_length: bool
    requests: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    finished: int = 0  # responses written to the end


def _make_app(server: HostileBlobServer) -> web.Application:
    async def download(request: web.Request) -> web.StreamResponse:
        server.requests.append(request.path)
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/octet-stream"
        if server.declare_length:
            resp.content_length = server.body_size
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        piece = bytes(PIECE)
        try:
            while server.bytes_sent < server.body_size * len(server.requests):
                await resp.write(piece)
                server.bytes_sent += PIECE
            await resp.write_eof()
            server.finished += 1
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return resp

    app = web.Application()
    app.router.add_get("/blob/{blob}/{index}", download)
    return app


@asynccontextmanager
async def hostile_blob_server(
    body_size: int = 50 * 1024 * 1024, *, declare_length: bool = True
) -> AsyncIterator[HostileBlobServer]:
    port = free_port()
    server = HostileBlobServer(f"http://127.0.0.1:{port}", body_size, declare_length)
    runner = web.AppRunner(_make_app(server), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield server
    finally:
        await runner.cleanup()
