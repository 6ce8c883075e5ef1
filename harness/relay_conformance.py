"""``samizdat-harness relay-conformance URL``: check any relay against
SPEC.md §7, one pass/fail line per check.

Every check opens its own connections and mailboxes (random ids), so checks
are independent and the suite can run against a relay in use.  Checks that
need to know the operator's settings (a message quota, a short TTL) run only
when told them; otherwise they are reported as skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from nacl.signing import SigningKey

from harness import relay_conformance_forward as forward_checks
from protocol.padding import BLOB_CHUNK_SIZE, ENVELOPE_BUCKETS
from protocol.relay_frames import (
    INITIAL_CREDIT,
    MODE_QUEUE,
    MODE_SHARED_LOG,
    PROTOCOL_VERSION,
    Ack,
    AuthRead,
    AuthWrite,
    BadFrame,
    BadRequest,
    BadSignature,
    BadSize,
    BlobTicket,
    Challenge,
    ClientConnection,
    Create,
    Credit,
    DeleteMailbox,
    Deliver,
    Error,
    Frame,
    MailboxExists,
    NotAuthorized,
    Ok,
    Post,
    Posted,
    PostSigned,
    QuotaExceeded,
    RotateWrite,
    ServerFrame,
    Subscribe,
    Subscribed,
    TooLarge,
    UnknownMailbox,
    Unsubscribe,
    decode_server_frame,
    encode_deliver,
    post_message,
)

TIMEOUT = 5.0


class Skip(Exception):
    """The check cannot run against this relay (the reason says why)."""


class CheckFailed(AssertionError):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


@dataclass
class Box:
    id: bytes = field(default_factory=lambda: os.urandom(32))
    read: SigningKey = field(default_factory=SigningKey.generate)
    write: SigningKey = field(default_factory=SigningKey.generate)

    mode: int = MODE_QUEUE

    def create(self, req_id: int, ttl: int = 0, token: bytes = b"") -> Create:
        return Create(
            req_id,
            self.id,
            bytes(self.read.verify_key),
            bytes(self.write.verify_key),
            ttl,
            token,
            self.mode,
        )


def env(size: int = 256, tag: bytes = b"") -> bytes:
    """An envelope of exactly ``size`` bytes (random: the relay sees ciphertext)."""
    body = tag + os.urandom(max(0, size - len(tag)))
    return body[:size]


class Conn:
    """One WebSocket to the relay, speaking frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.proto = ClientConnection()
        self.delivered: list[Deliver] = []
        self.replies: dict[int, ServerFrame] = {}
        self.order: list[str] = []  # "reply:<req>" / "deliver:<seq>" in arrival order

    async def recv(self, timeout: float = TIMEOUT) -> ServerFrame:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise ConnectionError(f"connection ended ({msg.type.name} {msg.data!r})")
        frame = self.proto.receive(msg.data)
        if isinstance(frame, Deliver):
            self.delivered.append(frame)
            self.order.append(f"deliver:{frame.seq}")
        else:
            self.order.append(f"reply:{getattr(frame, 'req_id', 0)}")
        return frame

    async def request(self, frame: Frame) -> ServerFrame:
        req_id = frame.req_id  # type: ignore[attr-defined]
        await self.ws.send_bytes(self.proto.send(frame))
        while req_id not in self.replies:
            f = await self.recv()
            if not isinstance(f, Deliver):
                self.replies[getattr(f, "req_id", 0)] = f
        return self.replies.pop(req_id)

    def rid(self) -> int:
        return self.proto.next_req_id()

    async def create(self, box: Box, **kw: Any) -> ServerFrame:
        return await self.request(box.create(self.rid(), **kw))

    def _sig(self, key: SigningKey, purpose: str, box: Box, extra: bytes = b"") -> bytes:
        return key.sign(self.proto.auth_payload(purpose, box.id, extra)).signature

    async def auth_read(self, box: Box, key: SigningKey | None = None) -> ServerFrame:
        sig = self._sig(key or box.read, "auth-read", box)
        return await self.request(AuthRead(self.rid(), box.id, sig))

    async def auth_write(self, box: Box, key: SigningKey | None = None) -> ServerFrame:
        sig = self._sig(key or box.write, "auth-write", box)
        return await self.request(AuthWrite(self.rid(), box.id, sig))

    async def post(self, box: Box, envelope: bytes, msg_id: bytes | None = None) -> ServerFrame:
        return await self.request(Post(self.rid(), box.id, msg_id or os.urandom(16), envelope))

    async def post_signed(
        self, box: Box, envelope: bytes, msg_id: bytes | None = None, key: SigningKey | None = None
    ) -> ServerFrame:
        mid = msg_id or os.urandom(16)
        sig = (key or box.write).sign(post_message(box.id, mid, envelope)).signature
        return await self.request(PostSigned(self.rid(), box.id, mid, envelope, sig))

    async def subscribe(self, box: Box, from_seq: int = 0) -> ServerFrame:
        return await self.request(Subscribe(self.rid(), box.id, from_seq))

    async def ack(self, box: Box, seq: int) -> ServerFrame:
        return await self.request(Ack(self.rid(), box.id, seq))

    async def rotate(self, box: Box, new: SigningKey, signer: SigningKey | None = None) -> Any:
        sig = self._sig(signer or box.write, "rotate-write", box, bytes(new.verify_key))
        return await self.request(RotateWrite(self.rid(), box.id, bytes(new.verify_key), sig))

    async def wait_delivered(self, n: int, timeout: float = TIMEOUT) -> list[Deliver]:
        deadline = time.monotonic() + timeout
        while len(self.delivered) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed(f"{len(self.delivered)} of {n} messages delivered")
            f = await self.recv(left)
            if not isinstance(f, Deliver):
                self.replies[getattr(f, "req_id", 0)] = f
        return self.delivered

    async def quiet(self, box: Box) -> None:
        """A round trip: every Deliver sent before its answer has arrived."""
        await self.ack(box, 0)


def code(frame: ServerFrame) -> int | str:
    return frame.code if isinstance(frame, Error) else type(frame).__name__


def is_posted(frame: ServerFrame) -> bool:
    return isinstance(frame, Posted)


@dataclass
class Options:
    url: str
    mailbox_max_messages: int = 0
    ttl_wait: float = 0.0
    access_token: str = ""


class Suite:
    def __init__(self, opts: Options, session: aiohttp.ClientSession) -> None:
        self.opts = opts
        self.session = session
        parts = urlsplit(opts.url.rstrip("/"))
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.rstrip("/")
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        self.ws_url = f"{ws_scheme}://{parts.netloc}{self.prefix}/ws"
        self.token = opts.access_token.encode()
        self.conns: list[Conn] = []

    async def connect(self) -> Conn:
        ws = await self.session.ws_connect(self.ws_url, max_msg_size=4 * 1024 * 1024)
        c = Conn(ws)
        first = await c.recv()
        expect(isinstance(first, Challenge), f"first frame is {type(first).__name__}")
        self.conns.append(c)
        return c

    async def close(self) -> None:
        for c in self.conns:
            await c.ws.close()
        self.conns.clear()

    async def writer(self, box: Box | None = None) -> tuple[Conn, Box]:
        c = await self.connect()
        box = box or Box()
        expect(isinstance(await c.create(box, token=self.token), Ok), "Create refused")
        expect(isinstance(await c.auth_write(box), Ok), "AuthWrite refused")
        return c, box

    def max_env(self, c: Conn) -> int:
        assert c.proto.challenge is not None
        return c.proto.challenge.max_envelope_size

    # -- checks: connection ------------------------------------------------------------

    async def check_challenge(self) -> str:
        c = await self.connect()
        ch = c.proto.challenge
        assert ch is not None
        expect(ch.version == PROTOCOL_VERSION, f"version {ch.version}")
        expect(256 <= ch.max_envelope_size <= 65536, f"max_envelope_size {ch.max_envelope_size}")
        d = await self.connect()
        expect(
            d.proto.challenge is not None and d.proto.challenge.nonce != ch.nonce,
            "two connections got the same nonce",
        )
        return (
            f"version {PROTOCOL_VERSION}, max envelope {ch.max_envelope_size} B, "
            "fresh nonce per connection"
        )

    # -- checks: create / auth ------------------------------------------------------------

    async def check_create(self) -> str:
        c = await self.connect()
        box = Box()
        expect(isinstance(await c.create(box, token=self.token), Ok), "Create refused")
        expect(isinstance(await c.create(box, token=self.token), Ok), "identical re-Create")
        clash = await c.create(Box(id=box.id), token=self.token)
        expect(code(clash) == MailboxExists.code, f"other keys: {code(clash)}, want 103")
        return "Create Ok, idempotent, other keys MailboxExists"

    async def check_create_bad_values(self) -> str:
        c = await self.connect()
        r = await c.create(Box(), ttl=2**32 - 1, token=self.token)
        expect(code(r) == BadRequest.code, f"TTL 2^32-1: {code(r)}, want 116")
        bad = Box()
        frame = bad.create(c.rid(), token=self.token)
        bogus = Create(frame.req_id, bad.id, b"\xff" * 32, frame.write_key, 0, self.token)
        r = await c.request(bogus)
        expect(code(r) == BadRequest.code, f"invalid read key: {code(r)}, want 116")
        return "TTL above max and invalid public keys refused with BadRequest"

    async def check_auth(self) -> str:
        c = await self.connect()
        box = Box()
        r = await c.auth_read(box)
        expect(code(r) == UnknownMailbox.code, f"AuthRead unknown: {code(r)}, want 102")
        await c.create(box, token=self.token)
        r = await c.auth_read(box, key=box.write)
        expect(code(r) == BadSignature.code, f"AuthRead with wrong key: {code(r)}, want 104")
        r = await c.auth_write(box, key=box.read)
        expect(code(r) == BadSignature.code, f"AuthWrite with wrong key: {code(r)}, want 104")
        d = await self.connect()  # a signature over another connection's nonce
        sig = box.read.sign(c.proto.auth_payload("auth-read", box.id)).signature
        r = await d.request(AuthRead(d.rid(), box.id, sig))
        expect(code(r) == BadSignature.code, f"replayed AuthRead: {code(r)}, want 104")
        expect(isinstance(await c.auth_read(box), Ok), "valid AuthRead refused")
        return "unknown mailbox, wrong key and replayed proof refused; valid proof Ok"

    async def check_grants(self) -> str:
        c = await self.connect()
        box = Box()
        await c.create(box, token=self.token)
        for what, frame in (
            ("Post", c.post(box, env())),
            ("Subscribe", c.subscribe(box)),
            ("Ack", c.ack(box, 1)),
        ):
            r = await frame
            expect(code(r) == NotAuthorized.code, f"{what} without grant: {code(r)}, want 105")
        expect(not c.ws.closed, "a non-fatal refusal closed the connection")
        return "Post, Subscribe and Ack need their grant (NotAuthorized), connection kept"

    # -- checks: posting ---------------------------------------------------------------------

    async def check_padding(self) -> str:
        c, box = await self.writer()
        top = self.max_env(c)
        for size in [b for b in ENVELOPE_BUCKETS if b <= top]:
            r = await c.post(box, env(size))
            expect(is_posted(r), f"bucket size {size}: {code(r)}")
        for size in (0, 1, 255, 257, 300, 1000, 4095, 4097, 65535):
            if size > top:
                continue
            r = await c.post(box, env(size))
            expect(code(r) == BadSize.code, f"size {size}: {code(r)}, want 106")
        r = await c.post(box, env(top + 1))
        expect(code(r) == TooLarge.code, f"size {top + 1}: {code(r)}, want 107")
        return "every bucket accepted; 9 non-bucket sizes BadSize; above max TooLarge"

    async def check_seq_and_idempotency(self) -> str:
        c, box = await self.writer()
        mid = os.urandom(16)
        a = await c.post(box, env(), mid)
        b = await c.post(box, env())
        again = await c.post(box, env(), mid)
        expect(
            isinstance(a, Posted) and isinstance(b, Posted) and isinstance(again, Posted),
            "posts refused",
        )
        assert isinstance(a, Posted) and isinstance(b, Posted) and isinstance(again, Posted)
        expect(b.seq > a.seq > 0, f"seqs {a.seq}, {b.seq} not increasing")
        expect(not a.duplicate and not b.duplicate, "fresh post flagged duplicate")
        expect(again.seq == a.seq and again.duplicate, f"retry gave {again}, want seq {a.seq}")
        s = await c.post_signed(box, env(), mid)
        expect(
            isinstance(s, Posted) and s.seq == a.seq and s.duplicate, f"PostSigned retry gave {s}"
        )
        return "seqs increase; a retried msg_id answers the original seq with duplicate=true"

    async def check_post_signed(self) -> str:
        c = await self.connect()
        box = Box()
        await c.create(box, token=self.token)
        r = await c.post_signed(box, env())
        expect(is_posted(r), f"valid PostSigned: {code(r)}")
        r = await c.post_signed(box, env(), key=SigningKey.generate())
        expect(code(r) == BadSignature.code, f"bad signature: {code(r)}, want 104")
        r = await c.post_signed(Box(), env())
        expect(code(r) == UnknownMailbox.code, f"unknown mailbox: {code(r)}, want 102")
        return "valid accepted; bad signature BadSignature; unknown mailbox UnknownMailbox"

    # -- checks: reading -----------------------------------------------------------------------

    async def check_subscribe_backfill(self) -> str:
        w, box = await self.writer()
        sent = [env(256, b"%d" % i) for i in range(5)]
        seqs = []
        for e in sent:
            p = await w.post(box, e)
            assert isinstance(p, Posted)
            seqs.append(p.seq)
        r = await self.connect()
        await r.auth_read(box)
        sub = await r.subscribe(box)
        expect(isinstance(sub, Subscribed), f"Subscribe: {code(sub)}")
        assert isinstance(sub, Subscribed)
        expect(sub.head_seq >= seqs[-1], f"head_seq {sub.head_seq} < last seq {seqs[-1]}")
        got = await r.wait_delivered(5)
        expect([d.seq for d in got] == seqs, f"backfill seqs {[d.seq for d in got]} != {seqs}")
        expect([d.envelope for d in got] == sent, "backfill envelopes differ from posted")
        first_deliver = next(i for i, o in enumerate(r.order) if o.startswith("deliver"))
        expect(r.order.index(f"reply:{sub.req_id}") < first_deliver, "Deliver before Subscribed")
        r2 = await self.connect()
        await r2.auth_read(box)
        await r2.subscribe(box, from_seq=seqs[2])
        got2 = await r2.wait_delivered(3)
        expect([d.seq for d in got2] == seqs[2:], f"from_seq backfill {[d.seq for d in got2]}")
        return "Subscribed first, backfill in seq order, exact bytes, from_seq honoured"

    async def check_live_push(self) -> str:
        w, box = await self.writer()
        r = await self.connect()
        await r.auth_read(box)
        await r.subscribe(box)
        posted = []
        for i in range(10):
            p = await w.post(box, env(512, b"live%d" % i))
            assert isinstance(p, Posted)
            posted.append(p.seq)
        await r.wait_delivered(10)
        await r.quiet(box)
        expect([d.seq for d in r.delivered] == posted, "live pushes out of order or repeated")
        return "10 live messages pushed in order, no gap, no duplicate"

    async def check_ack(self) -> str:
        w, box = await self.writer()
        seqs = []
        for _ in range(4):
            p = await w.post(box, env())
            assert isinstance(p, Posted)
            seqs.append(p.seq)
        r = await self.connect()
        await r.auth_read(box)
        expect(isinstance(await r.ack(box, seqs[1]), Ok), "Ack refused")
        await r.subscribe(box)
        got = await r.wait_delivered(2)
        await r.quiet(box)
        expect([d.seq for d in r.delivered] == seqs[2:], f"after ack got {[d.seq for d in got]}")
        expect(isinstance(await r.ack(box, 2**64 - 1), Ok), "Ack past the head refused")
        p = await w.post(box, env())
        expect(isinstance(p, Posted) and p.seq > seqs[-1], "a seq was reused after acks")
        return "Ack deletes up to seq, clamps past the head, seqs never reused"

    async def check_flow_control(self) -> str:
        """SPEC §7.6 "Flow control" and "Fairness": Deliver bytes stay within
        the reader's credit (backlog and live alike), the relay does not drop
        a reader for a backlog, and pending mailboxes take turns."""
        w = await self.connect()
        size = self.max_env(w)
        frame_len = len(encode_deliver(bytes(32), 1, bytes(size)))
        window = -(-INITIAL_CREDIT // frame_len)  # frames until the credit is spent
        n = window + 4
        per_box = 8  # below any sensible message quota
        boxes = [Box() for _ in range(-(-n // per_box))]
        seqs: dict[bytes, list[int]] = {}
        for i, box in enumerate(boxes):
            expect(isinstance(await w.create(box, token=self.token), Ok), "Create refused")
            expect(isinstance(await w.auth_write(box), Ok), "AuthWrite refused")
            seqs[box.id] = []
            for _ in range(min(per_box, n - i * per_box)):
                p = await w.post(box, env(size))
                expect(isinstance(p, Posted), f"post: {code(p)}")
                assert isinstance(p, Posted)
                seqs[box.id].append(p.seq)
        r = await self.connect()
        for box in boxes:
            await r.auth_read(box)
            expect(isinstance(await r.subscribe(box), Subscribed), "Subscribe refused")
        await r.wait_delivered(window)
        await asyncio.sleep(0.3)
        await r.quiet(boxes[0])
        sent = sum(len(encode_deliver(d.mailbox_id, d.seq, d.envelope)) for d in r.delivered)
        expect(
            len(r.delivered) == window and sent < INITIAL_CREDIT + frame_len,
            f"{len(r.delivered)} frames, {sent} B sent on a {INITIAL_CREDIT} B initial credit",
        )
        # a live message meets the exhausted credit too: it waits in the store
        live = await w.post(boxes[0], env(256))
        assert isinstance(live, Posted)
        seqs[boxes[0].id].append(live.seq)
        # a mailbox of small messages, pending behind the bulk ones
        chat = Box()
        expect(isinstance(await w.create(chat, token=self.token), Ok), "Create refused")
        expect(isinstance(await w.auth_write(chat), Ok), "AuthWrite refused")
        seqs[chat.id] = []
        for i in range(3):
            p = await w.post(chat, env(256, b"chat%d" % i))
            assert isinstance(p, Posted)
            seqs[chat.id].append(p.seq)
        await r.auth_read(chat)
        await r.subscribe(chat)
        await asyncio.sleep(0.3)
        await r.quiet(chat)
        expect(len(r.delivered) == window, "Deliver sent with no credit left")
        await r.ws.send_bytes(Credit(4 * frame_len).encode())
        await r.wait_delivered(window + 4)
        after = r.delivered[window:]
        first = next((i for i, d in enumerate(after) if d.mailbox_id == chat.id), len(after))
        expect(
            first <= len(boxes),
            f"{first} bulk frames before the small mailbox's turn "
            f"(round-robin over {len(boxes)} bulk mailboxes: <= {len(boxes)})",
        )
        await r.ws.send_bytes(Credit(2**32 - 1).encode())
        await r.wait_delivered(n + 1 + 3, timeout=30)
        for box_id, want in seqs.items():
            got = [d.seq for d in r.delivered if d.mailbox_id == box_id]
            expect(got == want, f"seqs {got} != {want}: out of order, missing or repeated")
        return (
            f"{window} x {size} B then stop on the {INITIAL_CREDIT} B credit (live too), "
            "round-robin between mailboxes, the rest after Credit, no disconnect"
        )

    async def check_shared_log(self) -> str:
        box = Box(mode=MODE_SHARED_LOG)
        w, box = await self.writer(box)
        seqs = []
        for _ in range(3):
            p = await w.post(box, env())
            assert isinstance(p, Posted)
            seqs.append(p.seq)
        hostile = await self.connect()
        await hostile.auth_read(box)
        expect(isinstance(await hostile.ack(box, 2**64 - 1), Ok), "Ack on a shared log refused")
        r = await self.connect()
        await r.auth_read(box)
        await r.subscribe(box)
        got = await r.wait_delivered(3)
        expect([d.seq for d in got] == seqs, f"after another reader's ack got {len(got)} of 3")
        queue = Box(id=box.id, read=box.read, write=box.write)  # same keys, other mode
        clash = await w.create(queue, token=self.token)
        expect(code(clash) == MailboxExists.code, f"other mode: {code(clash)}, want 103")
        return "Ack on a shared log deletes nothing; re-create in another mode MailboxExists"

    async def check_unsubscribe(self) -> str:
        w, box = await self.writer()
        r = await self.connect()
        await r.auth_read(box)
        await r.subscribe(box)
        expect(isinstance(await r.request(Unsubscribe(r.rid(), box.id)), Ok), "Unsubscribe")
        await w.post(box, env())
        await r.quiet(box)
        expect(r.delivered == [], "pushed after Unsubscribe")
        return "no pushes after Unsubscribe"

    async def check_rotate(self) -> str:
        a, box = await self.writer()
        b = await self.connect()
        await b.auth_write(box)
        new = SigningKey.generate()
        r = await a.rotate(box, new, signer=new)
        expect(code(r) == BadSignature.code, f"rotation signed by the new key: {code(r)}")
        expect(isinstance(await a.rotate(box, new), Ok), "valid rotation refused")
        r = await b.post(box, env())
        expect(code(r) == NotAuthorized.code, f"stale write grant: {code(r)}, want 105")
        r = await b.post_signed(box, env())
        expect(code(r) == BadSignature.code, f"PostSigned with old key: {code(r)}, want 104")
        box.write = new
        expect(isinstance(await b.auth_write(box), Ok), "AuthWrite with the new key refused")
        return "rotation needs the current key and revokes other connections' grants"

    async def check_delete_mailbox(self) -> str:
        """SPEC.md §7.7 DeleteMailbox: the read key (the owner) deletes, a
        writer cannot; afterwards the mailbox and its messages are gone."""
        a, box = await self.writer()
        expect(isinstance(await a.post(box, env()), Posted), "post refused")
        wrong = a._sig(box.write, "delete-mailbox", box)
        r = await a.request(DeleteMailbox(a.rid(), box.id, wrong))
        expect(code(r) == BadSignature.code, f"deletion signed by the write key: {code(r)}")
        right = a._sig(box.read, "delete-mailbox", box)
        expect(isinstance(await a.request(DeleteMailbox(a.rid(), box.id, right)), Ok), "refused")
        b = await self.connect()
        r = await b.post_signed(box, env())
        expect(code(r) == UnknownMailbox.code, f"post after deletion: {code(r)}, want 102")
        r = await b.auth_read(box)
        expect(code(r) == UnknownMailbox.code, f"AuthRead after deletion: {code(r)}, want 102")
        r = await a.request(DeleteMailbox(a.rid(), box.id, a._sig(box.read, "delete-mailbox", box)))
        expect(code(r) == UnknownMailbox.code, f"second deletion: {code(r)}, want 102")
        return "only the read key deletes; the mailbox and its messages are gone"

    # -- checks: malformed input ----------------------------------------------------------------

    async def _fatal(self, payload: bytes | str) -> int | str:
        c = await self.connect()
        if isinstance(payload, str):
            await c.ws.send_str(payload)
        else:
            await c.ws.send_bytes(payload)
        try:
            f = await c.recv()
        except ConnectionError:
            raise CheckFailed("closed without an Error frame") from None
        msg = await asyncio.wait_for(c.ws.receive(), TIMEOUT)
        expect(
            msg.type
            in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING),
            f"connection kept after {code(f)}",
        )
        return code(f)

    async def check_bad_frames(self) -> str:
        cases: list[tuple[str, bytes | str]] = [
            ("garbage", b"\x00\x01\x02"),
            ("unknown type", b"\x7e" + bytes(8)),
            ("relay frame from client", Ok(1).encode()),
            ("truncated", Post(1, bytes(32), bytes(16), b"x").encode()[:-1]),
            ("text message", "hello"),
        ]
        for what, payload in cases:
            got = await self._fatal(payload)
            expect(got == BadFrame.code, f"{what}: {got}, want 101 then close")
        return "garbage, unknown type, wrong direction, truncation, text: BadFrame then close"

    async def check_oversized_frame(self) -> str:
        c = await self.connect()
        await c.ws.send_bytes(b"\x06" + os.urandom(70_000))
        msg = await asyncio.wait_for(c.ws.receive(), TIMEOUT)
        if msg.type == aiohttp.WSMsgType.BINARY:
            f = decode_server_frame(msg.data)
            expect(isinstance(f, Error), f"oversized frame answered {type(f).__name__}")
            return f"oversized frame refused with error {code(f)}"
        expect(
            msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED),
            f"oversized frame: {msg.type.name}",
        )
        return f"oversized frame closed the connection ({msg.data})"

    # -- checks: limits ------------------------------------------------------------------

    async def check_quota(self) -> str:
        n = self.opts.mailbox_max_messages
        if not n:
            raise Skip("pass --mailbox-max-messages N to check the message quota")
        c, box = await self.writer()
        first = os.urandom(16)
        for i in range(n):
            r = await c.post(box, env(), first if i == 0 else None)
            expect(is_posted(r), f"post {i + 1} of {n}: {code(r)}")
        r = await c.post(box, env())
        expect(code(r) == QuotaExceeded.code, f"post {n + 1}: {code(r)}, want 108")
        r = await c.post(box, env(), first)
        expect(isinstance(r, Posted) and r.duplicate, "a retry into a full mailbox not Posted")
        await c.auth_read(box)
        assert isinstance(r, Posted)
        await c.ack(box, r.seq)
        expect(is_posted(await c.post(box, env())), "no room after Ack")
        return f"{n} messages accepted, then QuotaExceeded; retries still answered; Ack frees"

    async def check_ttl(self) -> str:
        if not self.opts.ttl_wait:
            raise Skip("pass --ttl-wait SECONDS (>= the relay's expiry interval + 2) to check TTL")
        c = await self.connect()
        box = Box()
        await c.create(box, ttl=1, token=self.token)
        await c.auth_write(box)
        await c.post(box, env())
        await asyncio.sleep(self.opts.ttl_wait)
        d = await self.connect()
        r = await d.auth_read(box)
        expect(code(r) == UnknownMailbox.code, f"after TTL: {code(r)}, want 102 (expired)")
        return "a 1 s mailbox and its message expired"

    # -- checks: blobs ---------------------------------------------------------------------

    async def check_blobs(self) -> str:
        s = self.session
        base = self.origin + self.prefix
        headers = {"Authorization": "Bearer " + self.opts.access_token} if self.token else {}
        async with s.post(f"{base}/blob", headers=headers) as resp:
            expect(resp.status == 201, f"POST /blob: {resp.status}")
            t = BlobTicket.decode(await resp.read())
        expect(t.chunk_size == BLOB_CHUNK_SIZE, f"chunk size {t.chunk_size}")
        url = f"{base}/blob/{t.blob_id.hex()}"
        up = {"Authorization": "Bearer " + t.upload_token.hex()}
        rd = {"Authorization": "Bearer " + t.read_token.hex()}
        chunk = os.urandom(BLOB_CHUNK_SIZE)

        async def status(method: str, path: str, **kw: Any) -> tuple[int, bytes]:
            async with s.request(method, path, **kw) as resp:
                return resp.status, await resp.read()

        st, body = await status("PUT", f"{url}/0", data=chunk[:-1], headers=up)
        expect(st == 400 and code(decode_server_frame(body)) == BadSize.code, f"short chunk: {st}")
        st, _ = await status("PUT", f"{url}/0", data=chunk, headers=rd)
        expect(st == 403, f"upload with the read token: {st}, want 403")
        expect((await status("PUT", f"{url}/0", data=chunk, headers=up))[0] == 201, "upload")
        expect((await status("PUT", f"{url}/0", data=chunk, headers=up))[0] == 200, "retry")
        st, body = await status("GET", f"{url}/0", headers=rd)
        expect(st == 200 and body == chunk, f"download: {st}")
        expect((await status("GET", f"{url}/0", headers=up))[0] == 403, "GET with upload token")
        st, _ = await status("GET", f"{url}/1", headers=rd)
        expect(st == 404, f"missing chunk: {st}")
        expect((await status("DELETE", url, headers=rd))[0] == 403, "DELETE with read token")
        expect((await status("DELETE", url, headers=up))[0] == 204, "DELETE")
        expect((await status("GET", f"{url}/0", headers=rd))[0] == 404, "GET after DELETE")
        return "ticket, exact-size chunks, distinct capabilities, idempotent upload, delete"

    # -- checks: probe resistance -------------------------------------------------------------

    async def check_probe_resistance(self) -> str:
        s = self.session
        o, p = self.origin, self.prefix

        async def snap(method: str, path: str) -> tuple[int, str | None, bytes, str | None]:
            async with s.request(method, o + path) as resp:
                return (
                    resp.status,
                    resp.headers.get("Content-Type"),
                    await resp.read(),
                    resp.headers.get("Server"),
                )

        home = await snap("GET", "/")
        expect(home[0] == 200, f"GET / answered {home[0]}")
        ref = await snap("GET", "/no-such-page-" + os.urandom(4).hex())
        expect(ref[0] == 404, f"a missing page answered {ref[0]}")
        probes = [
            ("GET", f"{p}/ws"),
            ("POST", f"{p}/ws"),
            ("GET", f"{p}/nothing"),
            ("GET", f"{p}/blob/zz/0"),
            ("POST", "/blob" if p else "/blob/x"),
        ]
        if p:
            probes += [("GET", "/ws"), ("GET", p[:-1] + "/ws"), ("GET", "/metrics")]
        for method, path in probes:
            got = await snap(method, path)
            expect(got == ref, f"{method} {path} answered {got[0]} unlike the site's 404")
        # methods a static site does not serve: the site's own answer (nginx: 405)
        ref405 = await snap("DELETE", "/no-such-page-" + os.urandom(4).hex())
        for method, path in [("PUT", f"{p}/blob/{'00' * 16}/x"), ("DELETE", "/")]:
            got = await snap(method, path)
            expect(got == ref405, f"{method} {path} answered {got[0]}, the site {ref405[0]}")
            probes.append((method, path))
        for r in (home, ref, ref405):
            text = (str(r[1]) + r[2].decode(errors="replace") + str(r[3])).lower()
            for word in ("samizdat", "aiohttp", "python"):
                expect(word not in text, f"a response names {word}")
        return f"{len(probes)} probes answered exactly like the decoy site's 404"

    # -- running -------------------------------------------------------------------------------

    def checks(self) -> list[tuple[str, Callable[[], Awaitable[str]]]]:
        return [
            ("challenge", self.check_challenge),
            ("create", self.check_create),
            ("create-bad-values", self.check_create_bad_values),
            ("auth", self.check_auth),
            ("grants", self.check_grants),
            ("padding", self.check_padding),
            ("seq-and-idempotency", self.check_seq_and_idempotency),
            ("post-signed", self.check_post_signed),
            ("subscribe-backfill", self.check_subscribe_backfill),
            ("live-push", self.check_live_push),
            ("flow-control", self.check_flow_control),
            ("ack", self.check_ack),
            ("shared-log", self.check_shared_log),
            ("unsubscribe", self.check_unsubscribe),
            ("rotate-write", self.check_rotate),
            ("delete-mailbox", self.check_delete_mailbox),
            ("bad-frames", self.check_bad_frames),
            ("oversized-frame", self.check_oversized_frame),
            ("quota", self.check_quota),
            ("ttl", self.check_ttl),
            ("blobs", self.check_blobs),
            ("probe-resistance", self.check_probe_resistance),
            # private routing (SPEC.md §7.14)
            ("relay-key", lambda: forward_checks.check_relay_key(self)),
            ("forwarded", lambda: forward_checks.check_forwarded(self)),
            ("forward", lambda: forward_checks.check_forward(self)),
        ]


@dataclass
class Outcome:
    name: str
    status: str  # passed | failed | skipped
    detail: str


async def run_suite(opts: Options, only: list[str] | None = None) -> list[Outcome]:
    out = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        suite = Suite(opts, session)
        for name, check in suite.checks():
            if only and name not in only:
                continue
            try:
                detail = await asyncio.wait_for(check(), 60 + opts.ttl_wait)
                out.append(Outcome(name, "passed", detail))
            except Skip as exc:
                out.append(Outcome(name, "skipped", str(exc)))
            except CheckFailed as exc:
                out.append(Outcome(name, "failed", str(exc)))
            except (TimeoutError, ConnectionError, aiohttp.ClientError, OSError) as exc:
                out.append(Outcome(name, "failed", f"{type(exc).__name__}: {exc}"))
            except Exception as exc:  # a relay answer we cannot even decode
                out.append(Outcome(name, "failed", f"{type(exc).__name__}: {exc}"))
            finally:
                await suite.close()
    return out


def format_outcomes(outcomes: list[Outcome]) -> str:
    tag = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}
    lines = [f"{tag[o.status]} {o.name}: {o.detail}" for o in outcomes]
    passed = sum(o.status == "passed" for o in outcomes)
    failed = sum(o.status == "failed" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    lines.append(f"{passed} passed, {failed} failed, {skipped} skipped")
    return "\n".join(lines)
