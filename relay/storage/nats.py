"""The scale-out backend: NATS JetStream, shared by any number of relay processes.

Theory of operation
-------------------
* Mailboxes are subjects ``sz.m.<shard>.<key hex>`` of a few streams
  ``SZ_MBX_<shard>`` (shard = first byte of the hashed mailbox key mod the
  shard count).  No consumer exists per mailbox: backfill is a batched
  *direct get* (``next_by_subj``), checked against the stream leader's last
  sequence because a replica may answer direct gets while it lags; live
  push is the stream's RePublish to
  ``sz.l.<shard>.<key hex>``, to which a relay process holds one core NATS
  subscription per mailbox that has local subscribers.
* A mailbox's seq is the stream sequence of its message: increasing per
  mailbox, with gaps.  Each republished message carries
  ``Nats-Last-Sequence``, the previous sequence on the same subject; if it is
  above the last sequence this process pushed for the mailbox, a message was
  missed on the core subscription (reconnect, slow consumer) and the gap is
  filled by direct get before the new one is pushed.  Pushes stay in order
  because the subscription callback runs messages one at a time.
* De-duplication: ``Nats-Msg-Id`` is the hashed dedup key; JetStream answers
  a retry inside its duplicate window with the original sequence.
* Posts are pipelined: the posts made in one event-loop iteration are
  published back to back, each with a reply subject under one inbox
  subscription of this process, and no post waits for another's PubAck; one
  timer per batch fails those unanswered after :data:`REQUEST_TIMEOUT`.  A
  post is acknowledged only once its PubAck (the stream has it, synced) is
  back.  Publishes leave in call order on one connection, so a mailbox's
  seqs follow arrival order.
* Ack is ``purge`` of the subject with ``seq = up_to + 1``.  Expiry is
  JetStream's own: per-message ``Nats-TTL`` (the mailbox TTL) and the
  metadata KV bucket's max age.  Quotas: ``max_msgs_per_subject`` with
  per-subject discard-new, and ``max_bytes`` per stream.
* Metadata (read key, write key, TTL) lives in the KV bucket ``sz_mailboxes``
  under the hashed key; rotation is a compare-and-set update.  Post
  authorization reads it through a cache of :data:`INFO_TTL` seconds, so a
  rotation made through another relay process takes effect there within that
  time; through this process it is immediate.  Each process also watches
  the bucket (an ordered consumer, headers only, new changes only) and drops
  a changed key from its cache; every ``INFO_TTL / 4`` it confirms that the
  watch has caught up with the bucket's last sequence, as read at a time
  *c*.  While the last confirmation is under :data:`INFO_TTL` old, an entry
  may be used up to :data:`INFO_MAX_AGE` after it was read: a change
  committed before *c* has been seen and dropped the entry, so a stale entry
  serves posts at most :data:`INFO_TTL` after the change (as before), while
  a busy mailbox is read from the KV every ``INFO_MAX_AGE / 2`` seconds
  instead of every :data:`INFO_TTL` (with 1,000 busy mailboxes, 500 KV reads
  a second, each also sending every other post down the slow path behind
  it).  Without a fresh confirmation (the watch broke, NATS is down), the
  plain :data:`INFO_TTL` applies.  Entries are re-read in the background once
  half their allowed age has passed, so busy mailboxes' posts never wait for
  the KV.  Expiry of the metadata by the bucket's max age sends no change:
  :data:`INFO_MAX_AGE` bounds that lag, far inside the hour to which every
  stored time is rounded (SPEC.md §7.12).
* Blobs: chunks in the object store ``sz_blobs``, capability hashes and the
  chunk count in KV ``sz_blobmeta``; both expire with the blob TTL.
* Durability is the server's: run JetStream with ``sync_interval: always``
  (SPEC.md §7); with replicas 3 a publish is acknowledged after a quorum
  has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from protocol.relay_frames import (
    MODE_QUEUE,
    MODE_SHARED_LOG,
    MailboxExists,
    NotAuthorized,
    QuotaExceeded,
    RelayError,
    StorageFull,
    Unavailable,
    UnknownMailbox,
)
from relay.config import Limits
from relay.storage.base import BlobMeta, LiveHub, MailboxInfo, Storage, blob_key

INFO_TTL = 2.0
INFO_MAX_AGE = 30.0
DEDUP_WINDOW = 600.0
REQUEST_TIMEOUT = 5.0
MBX_BUCKET = "sz_mailboxes"
BLOB_META_BUCKET = "sz_blobmeta"
BLOB_BUCKET = "sz_blobs"
_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, OSError)


class NatsStorage(Storage):
    def __init__(
        self,
        url: str,
        limits: Limits,
        *,
        spool_dir: Path,
        shards: int = 4,
        replicas: int = 1,
    ) -> None:
        self.servers = [u.strip() for u in url.split(",") if u.strip()]
        self.limits = limits
        self.spool_dir = Path(spool_dir)
        self.shards = shards
        self.replicas = replicas
        self.hub = LiveHub()
        self.hub.on_first = self._watch
        self.hub.on_last = self._unwatch
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._blob_kv: Any = None
        self._obs: Any = None
        self._cache: dict[bytes, tuple[float, MailboxInfo]] = {}
        # when a key's metadata last changed (through this process, or seen by
        # the watch): no KV read of it sent before then may be cached, as it
        # may predate the change; pruned after 2 * REQUEST_TIMEOUT
        self._changed: dict[bytes, float] = {}
        self._to_refresh: set[bytes] = set()
        self._refresher: asyncio.Task[None] | None = None
        # the metadata watch: last bucket sequence seen, last confirmation
        self._kv_seen = 0
        self._confirmed_at = -INFO_TTL
        self._confirmer: asyncio.Task[None] | None = None
        self._watch_sub: Any = None
        self._live: dict[bytes, asyncio.Task[Any]] = {}
        self._last_pushed: dict[bytes, int] = {}
        self._closing: set[asyncio.Future[None]] = set()
        # pipelined posts (see the module docstring)
        self._acks_prefix = ""
        self._outgoing: list[tuple[str, bytes, dict[str, str], asyncio.Future[Any]]] = []
        self._awaiting: dict[str, asyncio.Future[tuple[int, bool]]] = {}
        self._next_token = 0
        self._slow_posts = 0
        self._publishers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._nc = await nats.connect(
                servers=self.servers,
                name="samizdat-relay",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                connect_timeout=REQUEST_TIMEOUT,
            )
            self._js = self._nc.jetstream(timeout=REQUEST_TIMEOUT)
            self._acks_prefix = self._nc.new_inbox()
            await self._nc.subscribe(self._acks_prefix + ".*", cb=self._on_pub_ack)
            await self._ensure_streams()
            await self._watch_metadata()
        except _NATS_ERRORS as exc:
            await self.close()
            raise Unavailable(f"cannot reach NATS: {type(exc).__name__}") from exc

    async def _ensure_streams(self) -> None:
        lim = self.limits
        per_shard = max(lim.total_max_bytes // self.shards, lim.max_envelope_size)
        for i in range(self.shards):
            cfg = api.StreamConfig(
                name=f"SZ_MBX_{i}",
                subjects=[f"sz.m.{i}.>"],
                storage=api.StorageType.FILE,
                num_replicas=self.replicas,
                allow_direct=True,
                allow_msg_ttl=True,
                duplicate_window=DEDUP_WINDOW,
                max_age=float(lim.max_ttl),
                max_bytes=per_shard,
                # JetStream counts headers (Nats-Msg-Id, Nats-TTL) in the size
                max_msg_size=lim.max_envelope_size + 1024,
                max_msgs_per_subject=lim.mailbox_max_messages,
                discard=api.DiscardPolicy.NEW,
                discard_new_per_subject=True,
                republish=api.RePublish(src=f"sz.m.{i}.>", dest=f"sz.l.{i}.>"),
            )
            await self._add_or_update(cfg)
        try:
            self._kv = await self._js.create_key_value(
                bucket=MBX_BUCKET,
                history=1,
                ttl=float(lim.max_ttl),
                replicas=self.replicas,
                storage=api.StorageType.FILE,
            )
        except nats.js.errors.BadRequestError:
            # it exists, with the max_msgs set below (by another process)
            self._kv = await self._js.key_value(MBX_BUCKET)
        # One KV message per mailbox: JetStream itself caps their number for
        # every relay process sharing it (discard=new: a Create is refused).
        kv_stream = await self._js.stream_info(f"KV_{MBX_BUCKET}")
        if kv_stream.config.max_msgs != lim.max_mailboxes:
            kv_stream.config.max_msgs = lim.max_mailboxes
            await self._js.update_stream(kv_stream.config)
        self._blob_kv = await self._js.create_key_value(
            bucket=BLOB_META_BUCKET,
            history=1,
            ttl=float(lim.blob_ttl),
            replicas=self.replicas,
            storage=api.StorageType.FILE,
        )
        self._obs = await self._js.create_object_store(
            BLOB_BUCKET,
            config=api.ObjectStoreConfig(
                ttl=float(lim.blob_ttl),
                max_bytes=lim.total_max_bytes,
                replicas=self.replicas,
                storage=api.StorageType.FILE,
            ),
        )

    async def _watch_metadata(self) -> None:
        """Start the metadata watch and its confirmations (module docstring)."""
        self._watch_sub = await self._js.subscribe(
            f"$KV.{MBX_BUCKET}.>",
            stream=f"KV_{MBX_BUCKET}",
            cb=self._on_metadata_change,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
            headers_only=True,
        )
        # changes stored after the consumer was made are delivered, those
        # before it were never cached (the cache is empty at start)
        info = await self._js.stream_info(f"KV_{MBX_BUCKET}")
        self._kv_seen = max(self._kv_seen, int(info.state.last_seq))
        self._confirmer = asyncio.get_running_loop().create_task(self._confirm_loop())

    async def _on_metadata_change(self, msg: Any) -> None:
        key = msg.subject.rsplit(".", 1)[-1]
        with contextlib.suppress(ValueError):
            self._forget(bytes.fromhex(key))
        self._kv_seen = max(self._kv_seen, int(msg.metadata.sequence.stream))

    async def _confirm_loop(self) -> None:
        while True:
            await asyncio.sleep(INFO_TTL / 4)
            asked = time.monotonic()
            # a read sent that long ago has been answered or has timed out
            old = [k for k, t in self._changed.items() if t < asked - 2 * REQUEST_TIMEOUT]
            for k in old:
                del self._changed[k]
            try:
                info = await self._js.stream_info(f"KV_{MBX_BUCKET}")
            except _NATS_ERRORS:
                continue
            last = int(info.state.last_seq)
            # a bounded wait for the watch to deliver up to ``last``
            for _ in range(int(INFO_TTL / 0.02)):
                if self._kv_seen >= last:
                    self._confirmed_at = asked
                    break
                await asyncio.sleep(0.02)

    def _max_age(self, now: float) -> float:
        """How old a cached entry may be at ``now`` (module docstring)."""
        return INFO_MAX_AGE if now - self._confirmed_at < INFO_TTL else INFO_TTL

    async def _add_or_update(self, cfg: api.StreamConfig) -> None:
        try:
            await self._js.add_stream(cfg)
        except nats.js.errors.BadRequestError:
            await self._js.update_stream(cfg)

    async def close(self) -> None:
        for task in (self._refresher, self._confirmer):
            if task is not None:
                task.cancel()
        for task in self._live.values():
            task.cancel()
        self._live.clear()
        if self._nc is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await self._nc.drain()
            self._nc = None

    # ------------------------------------------------------------ naming

    def _shard(self, key: bytes) -> int:
        return key[0] % self.shards

    def _subject(self, key: bytes) -> str:
        return f"sz.m.{self._shard(key)}.{key.hex()}"

    def _stream(self, key: bytes) -> str:
        return f"SZ_MBX_{self._shard(key)}"

    # ------------------------------------------------------------ mailboxes

    async def create_mailbox(
        self,
        key: bytes,
        read_key: bytes,
        write_key: bytes,
        ttl: int,
        now: int,
        mode: int = MODE_QUEUE,
    ) -> None:
        # read key, write key, ttl, then the mode byte (absent: a queue)
        value = read_key + write_key + ttl.to_bytes(4, "big")
        if mode != MODE_QUEUE:
            value += bytes([mode])
        try:
            try:
                await self._kv.create(key.hex(), value)
            except nats.js.errors.KeyWrongLastSequenceError:
                entry = await self._kv.get(key.hex())
                if entry.value[:64] != value[:64] or entry.value[68:] != value[68:]:
                    raise MailboxExists("mailbox exists") from None
                await self._kv.put(key.hex(), value)  # refreshes the metadata's age
        except nats.js.errors.APIError as exc:
            if "maximum messages" in str(exc.description or ""):
                raise StorageFull("relay holds its maximum number of mailboxes") from exc
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc
        except _NATS_ERRORS as exc:
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc
        self._forget(key)

    async def _info(self, key: bytes, fresh: bool = False) -> MailboxInfo | None:
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and not fresh and now - hit[0] < self._max_age(now):
            return hit[1]
        try:
            entry = await self._kv.get(key.hex())
        except nats.js.errors.KeyNotFoundError:
            self._cache.pop(key, None)
            return None
        except _NATS_ERRORS as exc:
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc
        info = _decode_info(entry.value)
        if len(self._cache) > 100_000:
            self._cache.clear()
        if now > self._changed.get(key, 0.0):
            self._cache[key] = (now, info)
        return info

    def _forget(self, key: bytes) -> None:
        """After a change to ``key``'s metadata (a create, rotation or delete
        through this process, or one the watch saw): the next post reads the
        new metadata, and no read of it already under way is cached."""
        self._cache.pop(key, None)
        self._changed[key] = time.monotonic()

    async def get_mailbox(self, key: bytes) -> MailboxInfo | None:
        info = await self._info(key, fresh=True)
        if info is None:
            return None
        head = await self._leader_last(key)
        return MailboxInfo(info.read_key, info.write_key, info.ttl, head, info.mode)

    async def rotate_write_key(self, key: bytes, new_key: bytes) -> None:
        try:
            entry = await self._kv.get(key.hex())
            value = entry.value[:32] + new_key + entry.value[64:]  # ttl, mode
            await self._kv.update(key.hex(), value, last=entry.revision)
        except nats.js.errors.KeyNotFoundError:
            raise UnknownMailbox("unknown mailbox") from None
        except nats.js.errors.KeyWrongLastSequenceError:
            raise Unavailable("concurrent rotation; retry") from None
        except _NATS_ERRORS as exc:
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc
        self._forget(key)

    async def delete_mailbox(self, key: bytes) -> None:
        try:
            await self._kv.get(key.hex())
            await self._kv.purge(key.hex())
            await self._js.purge_stream(self._stream(key), subject=self._subject(key))
        except nats.js.errors.KeyNotFoundError:
            raise UnknownMailbox("unknown mailbox") from None
        except _NATS_ERRORS as exc:
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc
        finally:
            self._forget(key)

    async def post(
        self, key: bytes, dkey: bytes, envelope: bytes, now: int, write_key: bytes | None = None
    ) -> tuple[int, bool]:
        info = await self._info(key)
        if info is not None and write_key is not None and info.write_key != write_key:
            info = await self._info(key, fresh=True)
        if info is None:
            raise UnknownMailbox("unknown mailbox")
        if write_key is not None and info.write_key != write_key:
            raise NotAuthorized("the write key was rotated")
        return await self._publish(key, dkey, envelope, info.ttl)

    def post_nowait(
        self, key: bytes, dkey: bytes, envelope: bytes, now: int, write_key: bytes | None = None
    ) -> asyncio.Future[tuple[int, bool]]:
        """With the mailbox's metadata cached (and no earlier post still
        loading it, which would let this one overtake), the post joins this
        iteration's pipelined batch with no task of its own."""
        hit = self._cache.get(key)
        mono = time.monotonic()
        max_age = self._max_age(mono)
        age = mono - hit[0] if hit is not None else max_age
        if (
            hit is None
            or self._slow_posts
            or age >= max_age
            or (write_key is not None and hit[1].write_key != write_key)
        ):
            self._slow_posts += 1
            fut = asyncio.ensure_future(self.post(key, dkey, envelope, now, write_key))
            fut.add_done_callback(self._slow_done)
            return fut
        if age >= max_age / 2:
            self._refresh_soon(key)
        return self._publish(key, dkey, envelope, hit[1].ttl)

    def _refresh_soon(self, key: bytes) -> None:
        """Re-read ``key``'s metadata in the background (see the module docstring)."""
        self._to_refresh.add(key)
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while self._to_refresh:
            keys, self._to_refresh = self._to_refresh, set()
            sent = time.monotonic()
            # skip those re-read since they were queued (by this loop's last
            # round or a post's own read)
            due = self._max_age(sent) / 2
            keys = {k for k in keys if sent - self._cache.get(k, (0.0,))[0] >= due}
            results = await asyncio.gather(
                *(self._kv.get(k.hex()) for k in keys), return_exceptions=True
            )
            for key, entry in zip(keys, results, strict=True):
                hit = self._cache.get(key)
                if hit is None or hit[0] > sent or sent <= self._changed.get(key, 0.0):
                    # dropped or changed meanwhile (a create, rotation or delete
                    # through this process) or already re-read: this answer may
                    # be older
                    continue
                if isinstance(entry, nats.js.errors.KeyNotFoundError):
                    self._cache.pop(key, None)  # deleted: the next post finds out
                elif not isinstance(entry, BaseException):
                    self._cache[key] = (sent, _decode_info(entry.value))
                # any other error: the entry ages out and a post re-reads it itself

    def _slow_done(self, _: asyncio.Future[Any]) -> None:
        self._slow_posts -= 1

    def _publish(
        self, key: bytes, dkey: bytes, envelope: bytes, ttl: int
    ) -> asyncio.Future[tuple[int, bool]]:
        """Queue one JetStream publish for this iteration's batch; its PubAck's future."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, bool]] = loop.create_future()
        headers = {"Nats-Msg-Id": dkey.hex(), api.Header.MSG_TTL.value: str(int(ttl))}
        self._outgoing.append((self._subject(key), envelope, headers, fut))
        if len(self._outgoing) == 1:
            task = loop.create_task(self._publish_batch())
            self._publishers.add(task)
            task.add_done_callback(self._publishers.discard)
        return fut

    async def _publish_batch(self) -> None:
        batch, self._outgoing = self._outgoing, []
        tokens: list[str] = []
        for i, (subject, payload, headers, fut) in enumerate(batch):
            self._next_token += 1
            token = str(self._next_token)
            self._awaiting[token] = fut
            tokens.append(token)
            try:
                await self._nc.publish(
                    subject, payload, reply=f"{self._acks_prefix}.{token}", headers=headers
                )
            except (*_NATS_ERRORS, AttributeError) as exc:  # AttributeError: closed
                err = Unavailable(f"storage error: {type(exc).__name__}")
                for _, _, _, f in batch[i:]:
                    if not f.done():
                        f.set_exception(err)
                break
        asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self._expire_acks, tokens)

    def _expire_acks(self, tokens: list[str]) -> None:
        for token in tokens:
            fut = self._awaiting.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_exception(Unavailable("storage error: TimeoutError"))

    async def _on_pub_ack(self, msg: Any) -> None:
        fut = self._awaiting.pop(msg.subject.rsplit(".", 1)[-1], None)
        if fut is None or fut.done():
            return
        status = (msg.headers or {}).get("Status")
        try:
            resp = json.loads(msg.data) if msg.data else {}
        except ValueError:
            resp = {}
        if "error" in resp:
            err: RelayError = Unavailable("storage error")
            try:
                nats.js.errors.APIError.from_error(resp["error"])  # raises the typed error
            except nats.js.errors.APIError as exc:
                err = _map_api_error(exc)
            fut.set_exception(err)
        elif "seq" in resp:
            fut.set_result((int(resp["seq"]), bool(resp.get("duplicate", False))))
        else:  # e.g. 503: no stream answers for the subject
            fut.set_exception(Unavailable(f"storage error: status {status or 'unknown'}"))

    async def fetch(
        self, key: bytes, from_seq: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        """Batched direct get, completed from the stream leader if it came up short.

        A direct get may be answered by a replica that lags the leader; when a
        page ends early, the leader's last sequence on the subject says whether
        messages are missing, and the rest is read from the leader one by one.
        With ``max_bytes`` the page ends with the message that reaches it.
        """
        ready = self._live.get(key)
        if ready is not None and not ready.done():
            await asyncio.shield(ready)
        from_seq = max(from_seq, 1)
        if max_bytes is not None:
            # a bounded batch: never more than max_bytes plus one envelope in memory
            limit = max(1, min(limit, max_bytes // 256 + 1))
        rows = await self._batch_get(key, from_seq, limit, max_bytes)
        total = sum(len(data) for _, data in rows)
        if len(rows) < limit and (max_bytes is None or total < max_bytes):
            have = rows[-1][0] if rows else from_seq - 1
            last = await self._leader_last(key)
            try:
                while (
                    have < last and len(rows) < limit and (max_bytes is None or total < max_bytes)
                ):
                    msg = await self._js.get_msg(
                        self._stream(key), seq=have + 1, subject=self._subject(key), next=True
                    )
                    rows.append((int(msg.seq), bytes(msg.data or b"")))
                    total += len(rows[-1][1])
                    have = int(msg.seq)
            except nats.js.errors.NotFoundError:
                pass
            except _NATS_ERRORS as exc:
                raise Unavailable(f"storage error: {type(exc).__name__}") from exc
        return rows

    async def _leader_last(self, key: bytes) -> int:
        """The last sequence on the mailbox's subject, read from the stream leader."""
        try:
            msg = await self._js.get_msg(self._stream(key), subject=self._subject(key))
        except nats.js.errors.NotFoundError:
            return 0
        except _NATS_ERRORS as exc:
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc
        return int(msg.seq)

    async def _batch_get(
        self, key: bytes, from_seq: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        nc = self._nc
        inbox = nc.new_inbox()
        out: list[tuple[int, bytes]] = []
        total = 0
        try:
            sub = await nc.subscribe(inbox)
            try:
                req: dict[str, int | str] = {
                    "seq": from_seq,
                    "next_by_subj": self._subject(key),
                    "batch": limit,
                }
                if max_bytes is not None:
                    req["max_bytes"] = max_bytes  # the server stops the batch there
                await nc.publish(
                    f"$JS.API.DIRECT.GET.{self._stream(key)}", json.dumps(req).encode(), reply=inbox
                )
                while True:
                    msg = await sub.next_msg(timeout=REQUEST_TIMEOUT)
                    hdrs = msg.headers or {}
                    if hdrs.get("Status"):
                        break
                    out.append((int(hdrs["Nats-Sequence"]), msg.data))
                    total += len(msg.data)
                    if len(out) >= limit or (max_bytes is not None and total >= max_bytes):
                        break
            finally:
                await sub.unsubscribe()
        except _NATS_ERRORS as exc:
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc
        return out

    async def ack(self, key: bytes, up_to_seq: int) -> None:
        info = await self._info(key)
        if info is None:
            raise UnknownMailbox("unknown mailbox")
        if up_to_seq < 1 or info.mode == MODE_SHARED_LOG:
            return  # a shared log: the reader's cursor is its own (SPEC.md §7.7)
        try:
            await self._js.purge_stream(
                self._stream(key), subject=self._subject(key), seq=up_to_seq + 1
            )
        except _NATS_ERRORS as exc:
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc

    async def expire(self, now: int) -> int:
        return 0  # JetStream expires messages (Nats-TTL), metadata and blobs (max age)

    # ------------------------------------------------------------ live push

    def _watch(self, key: bytes, mailbox_id: bytes) -> None:
        self._live[key] = asyncio.ensure_future(self._subscribe_live(key))

    def _unwatch(self, key: bytes) -> None:
        task = self._live.pop(key, None)
        self._last_pushed.pop(key, None)
        if task is not None:
            closing = asyncio.ensure_future(_unsubscribe(task))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _subscribe_live(self, key: bytes) -> Any:
        subject = f"sz.l.{self._shard(key)}.{key.hex()}"

        async def on_msg(msg: Any) -> None:
            hdrs = msg.headers or {}
            try:
                seq = int(hdrs["Nats-Sequence"])
                prev = int(hdrs.get("Nats-Last-Sequence", 0))
            except (KeyError, ValueError):
                return
            last = self._last_pushed.get(key)
            if last is not None and seq <= last:
                return
            if last is not None and prev > last:
                with contextlib.suppress(RelayError):
                    for s, data in await self.fetch(key, last + 1, 10_000):
                        if s >= seq:
                            break
                        self.hub.publish(key, s, data)
            if key in self._live:
                self._last_pushed[key] = seq
            self.hub.publish(key, seq, msg.data)

        return await self._nc.subscribe(subject, cb=on_msg)

    # ------------------------------------------------------------ blobs

    async def blob_create(
        self, blob_id: bytes, upload_hash: bytes, read_hash: bytes, expires: int
    ) -> None:
        value = upload_hash + read_hash + expires.to_bytes(8, "big") + (0).to_bytes(4, "big")
        try:
            await self._blob_kv.create(blob_key(blob_id).hex(), value)
        except _NATS_ERRORS as exc:
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc

    async def _blob_entry(self, blob_id: bytes) -> Any:
        try:
            return await self._blob_kv.get(blob_key(blob_id).hex())
        except nats.js.errors.KeyNotFoundError:
            return None
        except _NATS_ERRORS as exc:
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc

    async def blob_meta(self, blob_id: bytes) -> BlobMeta | None:
        entry = await self._blob_entry(blob_id)
        if entry is None:
            return None
        v = entry.value
        return BlobMeta(
            v[:32], v[32:64], int.from_bytes(v[64:72], "big"), int.from_bytes(v[72:76], "big")
        )

    def _chunk_name(self, blob_id: bytes, index: int) -> str:
        return f"{blob_key(blob_id).hex()}.{index}"

    async def blob_put_chunk(self, blob_id: bytes, index: int, spool: Path) -> bool:
        name = self._chunk_name(blob_id, index)
        try:
            try:
                await self._obs.get_info(name)
                return False
            except nats.js.errors.NotFoundError:
                pass
            for _ in range(10):
                entry = await self._blob_entry(blob_id)
                if entry is None:
                    raise UnknownMailbox("unknown blob")
                v = entry.value
                chunks = int.from_bytes(v[72:76], "big")
                if chunks >= self.limits.blob_max_chunks:
                    raise QuotaExceeded("blob has its maximum number of chunks")
                try:
                    await self._blob_kv.update(
                        blob_key(blob_id).hex(),
                        v[:72] + (chunks + 1).to_bytes(4, "big"),
                        last=entry.revision,
                    )
                    break
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
            else:
                raise Unavailable("blob metadata contention")
            with open(spool, "rb") as fh:
                await self._obs.put(name, fh)
        except nats.js.errors.APIError as exc:
            raise _map_api_error(exc) from exc
        except _NATS_ERRORS as exc:
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc
        finally:
            spool.unlink(missing_ok=True)
        return True

    async def blob_open_chunk(self, blob_id: bytes, index: int) -> AsyncIterator[bytes] | None:
        fd, tmp = tempfile.mkstemp(dir=self.spool_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                await self._obs.get(self._chunk_name(blob_id, index), writeinto=fh)
        except nats.js.errors.NotFoundError:
            Path(tmp).unlink(missing_ok=True)
            return None
        except _NATS_ERRORS as exc:
            Path(tmp).unlink(missing_ok=True)
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc
        return _iter_and_delete(Path(tmp))

    async def blob_delete(self, blob_id: bytes) -> None:
        meta = await self.blob_meta(blob_id)
        if meta is None:
            return
        try:
            # Chunks are uploaded 0..n-1 in practice; any straggler becomes
            # unreachable with the metadata and expires with the bucket's TTL.
            for i in range(meta.chunks):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self._obs.delete(self._chunk_name(blob_id, i))
            await self._blob_kv.purge(blob_key(blob_id).hex())
        except _NATS_ERRORS as exc:
            raise Unavailable(f"storage error: {type(exc).__name__}") from exc


def _decode_info(v: bytes) -> MailboxInfo:
    """A ``sz_mailboxes`` value: read key, write key, ttl, then the mode byte
    (absent: a queue).  The head seq is not kept there (0)."""
    mode = v[68] if len(v) > 68 else MODE_QUEUE
    return MailboxInfo(v[:32], v[32:64], int.from_bytes(v[64:68], "big"), 0, mode)


def _map_api_error(exc: Any) -> RelayError:
    code = getattr(exc, "err_code", None)
    text = str(getattr(exc, "description", "") or "")
    if code == 10077 or "per subject" in text:
        return QuotaExceeded("mailbox quota exceeded")
    if "bytes" in text or "resources" in text or "storage" in text:
        return StorageFull("relay storage full")
    return Unavailable(f"storage error: {text or type(exc).__name__}")


async def _unsubscribe(task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError, *_NATS_ERRORS):
        sub = await task
        await sub.unsubscribe()


async def _iter_and_delete(path: Path) -> AsyncIterator[bytes]:
    try:
        with open(path, "rb") as fh:
            while True:
                piece = await asyncio.to_thread(fh.read, 64 * 1024)
                if not piece:
                    return
                yield piece
    finally:
        path.unlink(missing_ok=True)
