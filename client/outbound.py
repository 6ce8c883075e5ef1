"""Sending: application messages, files, sealing per mailbox, the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import json
import mimetypes
import random
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

from client.core import (
    EngineError,
    _history_entry,
    _Mailbox,
    _read_blocks,
    now_ms,
    rng,
)
from client.files import Files
from client.forwarding import ForwarderFailed, Forwarding, forwarder_for
from client.model import (
    NS_CONFIG,
    NS_OUTBOX,
    NS_SEEN,
    NS_STATUS,
    ContactInbox,
    MessageStatus,
    OutboxItem,
)
from client.relay_client import RelayUnavailable
from protocol.app import attachments
from protocol.app.envelope import EnvelopeType, split
from protocol.app.group_meta import (
    GroupMeta,
    find_group_meta,
)
from protocol.app.messages import (
    AnyBody,
    AppMessage,
    Article,
    BlobRef,
    ChunkRef,
    File,
    Text,
)
from protocol.app.sealed import MAX_SEALED_PLAINTEXT, seal, seal_key, unseal
from protocol.errors import CryptoError, RemoteError
from protocol.padding import BLOB_CHUNK_SIZE, ENVELOPE_BUCKETS


class Outbound(Files):
    """Sending: application messages, files, sealing per mailbox, the outbox."""

    _forwarding: Forwarding | None = None  # private routing, made on first use

    # -- sending ----------------------------------------------------------------------

    async def send_text(self, conv_id: bytes, text: str) -> bytes:
        return await self._send_app(conv_id, Text(text))

    async def send_article(self, conv_id: bytes, title: str, markdown: str) -> bytes:
        return await self._send_app(conv_id, Article(title, markdown))

    async def send_file(
        self,
        conv_id: bytes,
        path: Path,
        progress: Callable[[int, int], None] | None = None,
    ) -> bytes:
        """Encrypt ``path`` under a fresh key, upload its chunks to every relay
        of the conversation, then send the File message.  The file is read in
        chunks, never whole; ``progress(done, total)`` counts chunk uploads."""
        meta = self._meta(conv_id)
        if not path.is_file():
            raise EngineError(f"{path} is not a readable file")
        size = path.stat().st_size
        key = attachments.new_file_key(rng)
        encryptor = attachments.FileEncryptor(key)
        n_chunks = attachments.chunk_count(size)
        plain_size = attachments.CHUNK_PLAINTEXT_SIZE

        # Encrypt once into a spool of canonical ciphertext (safe on disk: the
        # key is only in memory); each relay gets its own copy of it, XORed
        # with a keystream for that relay (SPEC §8.7), so no two relays hold
        # the same bytes.
        digest = hashlib.sha256()
        copies: list[list[BlobRef]] = [[] for _ in range(n_chunks)]
        stored = 0
        with tempfile.TemporaryFile() as spool:
            with path.open("rb") as fh:
                for index in range(n_chunks):
                    plain = fh.read(plain_size)
                    chunk = encryptor.encrypt_chunk(index, plain, index == n_chunks - 1)
                    digest.update(chunk)
                    spool.write(chunk)
            total, done = n_chunks * len(meta.mailboxes), 0

            def counted(relay_url: str) -> Iterator[bytes]:
                nonlocal done
                copy_key = attachments.copy_key(key, relay_url)
                spool.seek(0)
                for index in range(n_chunks):
                    yield attachments.copy_chunk(copy_key, index, spool.read(BLOB_CHUNK_SIZE))
                    done += 1
                    if progress is not None:
                        progress(done, total)

            for ref in meta.mailboxes:
                try:
                    client = self._relay(ref.relay_url)
                    blob_id, token = await client.upload_blob(counted(ref.relay_url))
                except (RelayUnavailable, RemoteError) as exc:
                    self._notice(conv_id, f"upload to {ref.relay_url} failed: {exc}", True)
                    continue
                for index in range(n_chunks):
                    copies[index].append(BlobRef(ref.relay_url, blob_id, token))
                stored += 1
        if not stored:
            raise EngineError("no relay accepted the file; nothing was sent")
        body = File(
            path.name,
            mimetypes.guess_type(path.name)[0] or "application/octet-stream",
            size,
            plain_size,
            key,
            tuple(ChunkRef(tuple(c)) for c in copies if c),
            digest.digest(),
        )
        file_id = self.store.write_file(_read_blocks(path))
        return await self._send_app(conv_id, body, file_id=file_id)

    async def _send_app(
        self,
        conv_id: bytes,
        body: AnyBody,
        *,
        history: bool = True,
        file_id: str = "",
    ) -> bytes:
        group = self.groups.get(conv_id)
        conv = self.conversation(conv_id)
        if group is None or conv is None:
            raise EngineError("unknown conversation")
        if not group.active:
            raise EngineError("you are no longer a member of this conversation")
        conv.my_seq += 1
        meta = self._meta(conv_id)
        message = AppMessage.new(
            body,
            rng=rng,
            now_ms=now_ms(),
            sender_seq=conv.my_seq,
            expires_after_ms=meta.disappearing_ms,
        )
        ciphertext = group.encrypt(message.to_bytes(), rng)
        items = self._sealed_items(conv_id, ciphertext, message.message_id)
        # Everything this send changes is one durable transaction: the ratchet
        # position is saved with the outbox entry, before anything is posted.
        with self.store.transaction():
            self._save_conv(conv)
            self._save_group(conv_id)
            if history:
                entry = _history_entry(message, self.identity.signature_pub, outgoing=True)
                if file_id:
                    entry.file["file_id"] = file_id
                self._append_history(conv_id, entry)
                status = MessageStatus(
                    message.message_id, conv_id, recipients=len(group.members()) - 1
                )
                self.store.put(NS_STATUS, message.message_id, status.to_json())
            # our own copy comes back from every relay: known, so dropped unread
            digest = hashlib.sha256(bytes([EnvelopeType.MLS]) + ciphertext).digest()[:16]
            self.store.put(NS_SEEN, digest, b"")
            self._after_send(conv_id, group, message, ciphertext)
            self._queue(items)
        await self._flush_items(items)
        self._emit("message", conv_id)
        return message.message_id

    async def _send_commit(self, conv_id: bytes, commit: bytes) -> None:
        if self._only_member_left(conv_id):
            return  # nobody to tell: the commit merges locally (see _run_commit)
        await self._post_mls(conv_id, commit, b"")

    def _sealed_items(
        self, conv_id: bytes, mls_message: bytes, message_id: bytes
    ) -> list[OutboxItem]:
        """``mls_message`` split and sealed for every mailbox of the conversation."""
        meta = self._meta(conv_id)
        pieces = split(EnvelopeType.MLS, mls_message, rng, max_size=MAX_SEALED_PLAINTEXT)
        full = len(pieces) > 1
        items = []
        for piece in pieces:
            for ref in meta.mailboxes:
                sealed = seal(seal_key(ref.write_seed), ref.mailbox_id, piece, rng, full=full)
                items.append(
                    OutboxItem(
                        ref.relay_url,
                        ref.mailbox_id,
                        rng(16),  # its own id on each relay (SPEC §7.1): nothing to match
                        sealed,
                        conv_id,
                        message_id,
                        now_ms(),
                    )
                )
        return items

    async def _post_mls(self, conv_id: bytes, mls_message: bytes, message_id: bytes) -> None:
        items = self._sealed_items(conv_id, mls_message, message_id)
        self._queue(items)
        await self._flush_items(items)

    async def _post_to_inboxes(
        self,
        payload: bytes,
        inboxes: list[ContactInbox],
        conv_id: bytes,
        *,
        kind: EnvelopeType = EnvelopeType.WELCOME,
        message_id: bytes = b"",
    ) -> None:
        """Post a Welcome (or, on a delivery retry, an MLS application
        message of ``conv_id``) to contacts' inboxes."""
        pieces = split(kind, payload, rng, max_size=MAX_SEALED_PLAINTEXT)
        full = len(pieces) > 1
        items = []
        for piece in pieces:
            for inbox in inboxes:
                sealed = seal(seal_key(inbox.write_seed), inbox.mailbox_id, piece, rng, full=full)
                items.append(
                    OutboxItem(
                        inbox.relay_url,
                        inbox.mailbox_id,
                        rng(16),  # its own id on each relay
                        sealed,
                        conv_id,
                        message_id,
                        now_ms(),
                        write_seed=inbox.write_seed,
                    )
                )
        self._queue(items)
        await self._flush_items(items)

    def _queue(self, items: list[OutboxItem]) -> None:
        with self.store.transaction():
            for item in items:
                self.store.put(NS_OUTBOX, item.msg_id + item.mailbox_id, item.to_json())

    async def _flush_items(self, items: list[OutboxItem], wait: float = 3.0) -> None:
        """Post ``items`` concurrently; return after ``wait`` seconds at most.
        Posts still in flight go on in the background, and anything that
        fails stays in the outbox for the next flush.

        When the items go to several relays, one of them (picked at random)
        gets them at once and each other relay after its own random delay (up
        to ``POST_JITTER`` seconds), so colluding relays do not see one message
        arrive everywhere in the same instant (SPEC §7.1), while the first
        copy, which readers take, is not delayed.  A relay never gets a post
        before one issued earlier: a Welcome still arrives before the messages
        that follow it, on every relay."""
        loop = asyncio.get_running_loop()
        urls = sorted({i.relay_url for i in items})
        first = _jitter.choice(urls) if urls else ""
        start = {}
        for u in urls:
            delay = 0.0 if u == first else _jitter.uniform(0, POST_JITTER)
            start[u] = max(loop.time() + delay, self._post_not_before.get(u, 0.0))
            self._post_not_before[u] = start[u]
        tasks = []
        for item in items:
            key = item.msg_id + item.mailbox_id
            previous = self._post_turns.get(item.relay_url)
            turn = asyncio.Event()  # set once this post went ahead (or ended)
            self._post_turns[item.relay_url] = turn
            task = loop.create_task(self._post_after(item, start[item.relay_url], previous, turn))
            task.add_done_callback(functools.partial(_set_turn, turn))
            self._posting[key] = task
            task.add_done_callback(functools.partial(self._posted, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tasks.append(task)
        batch = _POST_BATCH.get()
        if batch is not None and batch.open and batch.owner is self:
            batch.tasks.extend(tasks)  # awaited once, when the batch ends
        elif tasks:
            await asyncio.wait(tasks, timeout=wait)

    def _posted(self, key: bytes, task: asyncio.Task[bool]) -> None:
        if self._posting.get(key) is task:
            del self._posting[key]

    @contextlib.asynccontextmanager
    async def _posting_together(self, wait: float = 3.0) -> AsyncIterator[None]:
        """Within this block, a send does not wait for its posts: every post
        still goes out at its own jittered time (SPEC §7.1, per relay in the
        order issued), and the block's end waits for all of them at once
        (``wait`` seconds at most; what fails stays queued).  Several sends
        in a row (an accept's Welcome, profile and KeyPackages) then cost one
        jitter window instead of one each.

        The batch belongs to the task that opened it (a context variable):
        sends of other tasks of this engine meanwhile (the app sending a
        message during an accept) wait for their own posts as ever."""
        outer = _POST_BATCH.get()
        if outer is not None and outer.open and outer.owner is self:
            yield  # already inside one: the outer end waits
            return
        batch = _PostBatch(self)
        token = _POST_BATCH.set(batch)
        try:
            yield
        finally:
            batch.open = False  # tasks started inside keep a copy of the variable
            _POST_BATCH.reset(token)
        if batch.tasks:
            await asyncio.wait(batch.tasks, timeout=wait)

    async def _post_after(
        self, item: OutboxItem, start: float, previous: asyncio.Event | None, turn: asyncio.Event
    ) -> bool:
        """Post ``item`` at loop time ``start``, and not before the post
        issued before it to the same relay went ahead (``previous``): sleeps
        alone do not keep that order once posts of several messages are
        under way together (a timer due now runs after a task made now)."""
        delay = start - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        if previous is not None:
            await previous.wait()
        turn.set()
        return await self._post_item(item)

    async def _post_item(self, item: OutboxItem) -> bool:
        mb = self._mailboxes.get(item.mailbox_id)
        if mb is not None and mb.retired:
            moved = self._reseal_for_successor(item, mb)
            if moved is None:
                self.store.delete(NS_OUTBOX, item.msg_id + item.mailbox_id)
                return False
            item = moved
        write_seed = self._write_seed_for(item)
        if write_seed is None:
            self.store.delete(NS_OUTBOX, item.msg_id + item.mailbox_id)
            return False
        try:
            await self._post_via(item, write_seed)
        except RelayUnavailable:
            return False
        except RemoteError as exc:
            kind = type(exc).__name__
            self._refused(item, exc)
            if kind in _NEVER_ACCEPTED:
                self.store.delete(NS_OUTBOX, item.msg_id + item.mailbox_id)
            elif kind in _TRANSIENT:
                self._retry_later(item.relay_url)
            return False
        self._retry_delay.pop(item.relay_url, None)
        changed = False
        with self.store.transaction():
            self.store.delete(NS_OUTBOX, item.msg_id + item.mailbox_id)
            raw = self.store.get(NS_STATUS, item.message_id) if item.message_id else None
            if raw is not None:
                status = MessageStatus.from_json(raw)
                if item.relay_url not in status.relays_stored:
                    status.relays_stored.append(item.relay_url)
                    self.store.put(NS_STATUS, item.message_id, status.to_json())
                    changed = True
        if changed:
            self._emit("status", item.conversation)
        return True

    async def _post_via(self, item: OutboxItem, write_seed: bytes) -> None:
        """Post directly, or through our forwarding relay (SPEC.md §7.14,
        :mod:`client.forwarding`).  A forwarder that fails is reported; the
        post then goes directly only if the user allowed it, else it stays
        queued (``RelayUnavailable``) and is retried with backoff."""
        forwarder = forwarder_for(self.identity.forwarder, item.relay_url)
        if forwarder:
            try:
                if forwarder not in [u.rstrip("/") for u in self.identity.relays]:
                    raise ForwarderFailed(
                        f"forwarding relay {forwarder} is no longer one of your relays "
                        "(choose another: 'samizdat relays forward URL')"
                    )
                await self._forwarder().post(
                    forwarder, item.relay_url, item.mailbox_id, write_seed, item.msg_id, item.sealed
                )
                return
            except RelayUnavailable:
                self._retry_later(item.relay_url)  # no connection of ours will flush it
                raise
            except ForwarderFailed as exc:
                self._forwarder_failed(item, exc)
                if not self.identity.forward_fallback:
                    self._retry_later(item.relay_url)
                    raise RelayUnavailable(str(exc)) from None
        client = self._relay(item.relay_url)
        client.start()
        await client.post(item.mailbox_id, write_seed, item.msg_id, item.sealed)

    def _forwarder_failed(self, item: OutboxItem, exc: ForwarderFailed) -> None:
        """Tell the user, once a minute, that the forwarder failed and what
        became of the post."""
        key = (self.identity.forwarder, type(exc).__name__)
        now = time.monotonic()
        if now - self._refusals.get(key, -1e9) < 60:
            return
        self._refusals[key] = now
        if self.identity.forward_fallback:
            then = f"posting directly to {item.relay_url} instead (fallback allowed)"
        else:
            then = (
                "the message waits and is retried: posting directly would show your "
                f"address to {item.relay_url} (allow it: 'samizdat relays forward URL --fallback')"
            )
        self._notice(item.conversation or None, f"{exc}; {then}", True)

    def _forwarder(self) -> Forwarding:
        """Private routing's HTTP client, with the relay keys saved in the store."""
        if self._forwarding is None:
            raw = self.store.get(NS_CONFIG, RELAY_KEYS)
            saved = {u: bytes.fromhex(k) for u, k in json.loads(raw).items()} if raw else {}

            def save(keys: dict[str, bytes]) -> None:
                data = json.dumps({u: k.hex() for u, k in sorted(keys.items())}).encode()
                self.store.put(NS_CONFIG, RELAY_KEYS, data)

            self._forwarding = Forwarding(self.proxy, saved, save)
        return self._forwarding

    async def connect(self) -> None:
        await super().connect()
        forwarder = self.identity.forwarder
        if forwarder:
            urls = {mb.relay_url for mb in self._mailboxes.values()} | set(self.identity.relays)
            urls |= {i.relay_url for c in self.contacts() for i in c.inboxes}
            urls.discard(forwarder)
            task = asyncio.get_running_loop().create_task(
                self._forwarder().prefetch(urls, via=forwarder)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        await super().close()
        forwarding, self._forwarding = self._forwarding, None
        if forwarding is not None:
            await forwarding.close()

    def _reseal_for_successor(self, item: OutboxItem, mb: _Mailbox) -> OutboxItem | None:
        """An envelope queued for a mailbox that GroupMeta has since replaced
        (a removal or relay move, while we were a commit behind): open it with
        our key of the old mailbox and seal it for the new one on the same
        relay.  None if that relay left the conversation (the others carry it)."""
        group = self.groups.get(mb.conv_id or b"")
        meta = find_group_meta(group.extensions) if group is not None else None
        successor = next(
            (r for r in (meta.mailboxes if meta else ()) if r.relay_url == mb.relay_url), None
        )
        if successor is None:
            return None
        for key in (mb.key, *mb.old_keys):
            try:
                piece = unseal(key, mb.mailbox_id, item.sealed)
                break
            except CryptoError:
                continue
        else:
            return None
        full = len(item.sealed) == ENVELOPE_BUCKETS[-1]
        sealed = seal(seal_key(successor.write_seed), successor.mailbox_id, piece, rng, full=full)
        moved = replace(item, mailbox_id=successor.mailbox_id, sealed=sealed)
        with self.store.transaction():
            self.store.delete(NS_OUTBOX, item.msg_id + item.mailbox_id)
            self.store.put(NS_OUTBOX, moved.msg_id + moved.mailbox_id, moved.to_json())
        return moved

    def _refused(self, item: OutboxItem, exc: RemoteError) -> None:
        """Tell the user a relay refused a message, once a minute per relay
        and kind of refusal (a quota refuses every message, not just one)."""
        self._note_refusal(item.message_id, item.relay_url, exc)
        key = (item.relay_url, type(exc).__name__)
        now = time.monotonic()
        if now - self._refusals.get(key, -1e9) < 60:
            return
        self._refusals[key] = now
        self._notice(
            item.conversation or None, f"relay {item.relay_url} refused a message: {exc}", True
        )

    def _retry_later(self, relay_url: str) -> None:
        """Retry this relay's outbox after a growing delay (2 s doubling to 60 s)."""
        if relay_url in self._retry_tasks:
            return
        delay = min(60.0, self._retry_delay.get(relay_url, 1.0) * 2)
        self._retry_delay[relay_url] = delay

        async def retry() -> None:
            await asyncio.sleep(delay)
            self._retry_tasks.pop(relay_url, None)
            await self.flush_outbox(relay_url)

        task = asyncio.get_running_loop().create_task(retry())
        self._retry_tasks[relay_url] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _write_seed_for(self, item: OutboxItem) -> bytes | None:
        """The current write seed for the item's mailbox: a conversation
        mailbox's seed may have been rotated since the item was queued."""
        mb = self._mailboxes.get(item.mailbox_id)
        if mb is not None:
            return mb.write_seed
        return item.write_seed or None

    def outbox(self) -> list[OutboxItem]:
        return [OutboxItem.from_json(v) for _, v in self.store.items(NS_OUTBOX)]

    async def flush_outbox(self, relay_url: str | None = None) -> int:
        """Retry every queued envelope (for one relay, or all); returns how
        many are still queued."""
        # posts under way finish first (bounded): posting their items again
        # now would skip their jittered delay and overtake them on their relay
        inflight = list(self._posting.values())
        if inflight:
            await asyncio.wait(inflight, timeout=POST_JITTER + 2.5)
        async with self._flush_lock:
            items = [
                i
                for i in self.outbox()
                if (relay_url is None or i.relay_url == relay_url)
                and i.msg_id + i.mailbox_id not in self._posting
            ]
            items.sort(key=lambda i: i.created_ms)
            for item in items:
                await self._post_item(item)
        return len(self.outbox())

    def _meta(self, conv_id: bytes) -> GroupMeta:
        group = self.groups.get(conv_id)
        if group is None:
            raise EngineError("unknown conversation")
        meta = find_group_meta(group.extensions)
        if meta is None:
            raise EngineError("conversation has no relay list")
        return meta

    def status(self, message_id: bytes) -> MessageStatus | None:
        raw = self.store.get(NS_STATUS, message_id)
        return MessageStatus.from_json(raw) if raw else None


class _PostBatch:
    """The posts of one :meth:`Outbound._posting_together` block."""

    def __init__(self, owner: Outbound) -> None:
        self.owner = owner
        self.tasks: list[asyncio.Task[bool]] = []
        self.open = True


# the batch open in the current task (its context), if any
_POST_BATCH: contextvars.ContextVar[_PostBatch | None] = contextvars.ContextVar(
    "samizdat_post_batch", default=None
)


def _set_turn(turn: asyncio.Event, _task: asyncio.Task[bool]) -> None:
    turn.set()  # a post that ended (even cancelled) never holds up the next


# NS_CONFIG key of the relays' forwarding keys (JSON {url: hex}), SPEC.md §7.14
RELAY_KEYS = b"relay-keys"

# The most a post to one relay waits after a post of the same message to
# another (bounded and small: it delays delivery by at most this much).
POST_JITTER = 0.5
_jitter = random.SystemRandom()

# Refusals after which a message can never be accepted by that relay (dropped
# there; the conversation's other relays still carry it), and refusals that
# pass with time (retried with backoff).  Others (authorization) are retried
# on the next epoch or connection.
_NEVER_ACCEPTED = frozenset({"BadSize", "TooLarge", "BadFrame", "BadRequest"})
_TRANSIENT = frozenset(
    {
        "RateLimited",
        "QuotaExceeded",
        "StorageFull",
        "Unavailable",
        "SlowConsumer",
        "ShuttingDown",
        "UnknownMailbox",
    }
)
