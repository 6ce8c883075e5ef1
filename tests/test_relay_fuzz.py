"""Hypothesis feeds random and mutated frames to a live relay: it answers only
with well-formed relay frames (typed errors for every refusal), closes only
after an Error frame, and keeps serving."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.relay_frames import (
    ERROR_CLASSES,
    Ack,
    AuthRead,
    AuthWrite,
    ClientConnection,
    Create,
    DeleteMailbox,
    Error,
    Ok,
    Post,
    PostSigned,
    RotateWrite,
    Subscribe,
    Unsubscribe,
    decode_server_frame,
)
from relay.app import create_app
from tests.relay_support import Mailbox
from tests.test_relay_app import make_config

KNOWN = Mailbox(id=b"\x42" * 32)
SENTINEL = 0xFFFFFFFF


class ServerThread:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        cfg = make_config(
            self.tmp,
            limits={
                "frame_rate": 1e6,
                "frame_burst": 10**6,
                "connect_rate": 1e6,
                "connect_burst": 10**6,
            },
        )
        self.runner = web.AppRunner(create_app(cfg))
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = ServerThread(tmp_path_factory.mktemp("fuzz"))
    srv.thread.start()
    assert srv.ready.wait(10)

    async def setup() -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(f"http://127.0.0.1:{srv.port}/ws") as ws,
        ):
            await ws.receive(timeout=5)
            await ws.send_bytes(KNOWN.create(1).encode())
            await ws.receive(timeout=5)

    asyncio.run(setup())
    yield srv
    srv.stop()


ids = st.one_of(st.just(KNOWN.id), st.binary(min_size=32, max_size=32))
u32 = st.integers(0, 2**32 - 2)
u64 = st.integers(0, 2**64 - 1)
b32 = st.binary(min_size=32, max_size=32)
b64 = st.binary(min_size=64, max_size=64)
b16 = st.binary(min_size=16, max_size=16)
env = st.one_of(st.binary(max_size=600), st.sampled_from([b"\0" * 256, b"\1" * 512]))
frames = st.one_of(
    st.builds(Create, u32, ids, b32, b32, st.integers(0, 2**32 - 1), st.binary(max_size=8)),
    st.builds(AuthRead, u32, ids, b64),
    st.builds(AuthWrite, u32, ids, b64),
    st.builds(Subscribe, u32, ids, u64),
    st.builds(Unsubscribe, u32, ids),
    st.builds(Post, u32, ids, b16, env),
    st.builds(PostSigned, u32, ids, b16, env, b64),
    st.builds(Ack, u32, ids, u64),
    st.builds(RotateWrite, u32, ids, b32, b64),
    st.builds(DeleteMailbox, u32, ids, b64),
).map(lambda f: f.encode())


@st.composite
def mutated(draw: Any) -> bytes:
    data = bytearray(draw(frames))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "cut", "grow"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        else:
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


payloads = st.lists(st.one_of(frames, mutated(), st.binary(max_size=80)), min_size=1, max_size=8)


async def exchange(port: int, batch: list[bytes]) -> tuple[list[Any], Any]:
    async with aiohttp.ClientSession() as s, s.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
        proto = ClientConnection()
        proto.receive((await ws.receive(timeout=5)).data)
        for data in batch:
            await ws.send_bytes(data)
        await ws.send_bytes(Unsubscribe(SENTINEL, KNOWN.id).encode())
        got: list[Any] = []
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.BINARY:
                return got, msg
            frame = decode_server_frame(msg.data)
            got.append(frame)
            if isinstance(frame, Ok) and frame.req_id == SENTINEL:
                return got, None


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=payloads)
def test_random_frames_get_only_typed_answers(server: ServerThread, batch: list[bytes]) -> None:
    got, close = asyncio.run(exchange(server.port, batch))
    for frame in got:
        if isinstance(frame, Error):
            assert frame.code in ERROR_CLASSES, frame
    if close is not None:
        # the connection ended before the sentinel: only after a fatal typed error
        assert close.type == aiohttp.WSMsgType.CLOSE, close
        assert any(isinstance(f, Error) and ERROR_CLASSES[f.code].fatal for f in got), got
    assert server.thread.is_alive()
