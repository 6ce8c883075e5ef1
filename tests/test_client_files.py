"""Attachments against hostile senders and relays (SPEC §8.7).

* A blob download reads at most one chunk (256 KiB) per request, whatever a
  relay sends; a File message cannot make the client read more than it says.
"""

from __future__ import annotations

import pytest

from client.relay_client import RelayClient
from protocol.errors import RemoteError
from tests.hostile_blob import hostile_blob_server

pytestmark = pytest.mark.timeout(240)

FIFTY_MB = 50 * 1024 * 1024


async def _no_delivery(url: str, mailbox_id: bytes, seq: int, sealed: bytes) -> None:
    raise AssertionError("a blob download must not subscribe to anything")


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_blob_download_reads_at_most_one_chunk(declare_length: bool) -> None:
    """A relay answering a chunk download with 50 MB: the client stops
    reading past 256 KiB and reports the relay, holding one chunk at most."""
    async with hostile_blob_server(FIFTY_MB, declare_length=declare_length) as server:
        client = RelayClient(server.url, _no_delivery)
        try:
            with pytest.raises(RemoteError, match="more than 262144 bytes"):
                await client.download_chunk(bytes(16), 0, bytes(32))
        finally:
            await client.close()
        assert server.requests == [f"/blob/{bytes(16).hex()}/0"]
        assert server.finished == 0, "the whole 50 MB answer was read"
        assert server.bytes_sent < FIFTY_MB
