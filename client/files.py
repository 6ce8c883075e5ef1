"""Receiving attachments: bounded downloads from the conversation's relays,
and safe names for saving them.

Theory of operation
-------------------
A ``File`` message is written by a member who may be hostile, and its chunk
copies name relays and blobs of the sender's choosing (SPEC §8.7).  So:

* **Where.**  A chunk is downloaded only from a relay of the conversation
  (its GroupMeta list) or one of our own relays, unless the caller names
  another relay in ``allow_relays`` (the user said yes).  Contacting a server
  the sender picked would tell its operator our address and that we opened
  the message, and could reach into our local network.  An outside relay is
  used over a one-off HTTP session, never a supervised connection.
* **How much.**  The File must use the standard chunk size, and its declared
  size must fit what the caller is prepared to hold (``max_size``).  Every
  chunk download is capped at one chunk (``BLOB_CHUNK_SIZE``) by the relay
  client, which stops reading past it; the decrypted total must equal the
  declared size and the ciphertext digest must match, or nothing is kept.
* **Where to.**  :func:`safe_file_name` turns a received name into one plain
  file name (no directories, control characters, leading dot, reserved
  device names; at most 200 UTF-8 bytes with the extension kept).  Saving
  never replaces an existing file unless asked (``overwrite``); the data is
  written to a hidden temporary file in the target directory and linked into
  place only when complete, so a failed download leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

from client.core import EngineError
from client.expiry import Expiry
from client.relay_client import RelayClient, RelayUnavailable
from client.sessions import RelaySessions
from protocol.app import attachments
from protocol.app.group_meta import find_group_meta
from protocol.app.messages import File
from protocol.errors import CryptoError, RemoteError

MAX_NAME_BYTES = 200
_MAX_SUFFIX_BYTES = 32
# device names Windows reserves in any directory, with or without an extension
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)
_UNSAFE_CHARS = frozenset('<>:"|?*')


class OutsideRelay(EngineError):
    """A File's chunks are only on relays that are not the conversation's."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(
            f"the file is stored on {', '.join(urls)}, not a relay of this conversation;"
            " downloading from it would reveal your address to whoever runs it"
        )
        self.urls = urls


class DestinationExists(EngineError):
    """Saving would replace an existing file and overwriting was not asked for."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists")
        self.path = path


def safe_file_name(name: str) -> str:
    """A received file name made safe to create in a directory of our choice."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Unicode categories C*: controls (incl. NUL, escapes, newlines), format
    # characters (bidi overrides that disguise an extension), unassigned.
    base = "".join(
        "_" if ch in _UNSAFE_CHARS else ch
        for ch in base
        if not unicodedata.category(ch).startswith("C")
    )
    base = base.strip().lstrip(".").rstrip(". ")
    if base.split(".", 1)[0].strip().lower() in _RESERVED:
        base = "file-" + base
    stem, dot, suffix = base.rpartition(".")
    if not dot or not stem or len(suffix.encode()) > _MAX_SUFFIX_BYTES:
        stem, suffix = base, ""
    suffix = "." + suffix if suffix else ""
    room = MAX_NAME_BYTES - len(suffix.encode())
    stem = stem.encode()[:room].decode("utf-8", errors="ignore").rstrip(". ")
    return stem + suffix if stem else "file" + suffix


class Files(Expiry):
    """Downloading received files (see the module docstring)."""

    def _trusted_relays(self, conv_id: bytes) -> set[str]:
        group = self.groups.get(conv_id)
        meta = find_group_meta(group.extensions) if group is not None else None
        if meta is None:
            raise EngineError("unknown conversation")
        urls = list(meta.relay_urls) + list(self.identity.relays)
        return {u.rstrip("/") for u in urls}

    def outside_relays(self, conv_id: bytes, body: File) -> list[str]:
        """Relays a download of ``body`` would need that are neither the
        conversation's nor ours (empty: it can be fetched without asking)."""
        trusted = self._trusted_relays(conv_id)
        needed: list[str] = []
        for ref in body.chunks:
            urls = [c.relay_url.rstrip("/") for c in ref.copies]
            if not any(u in trusted for u in urls):
                needed.extend(u for u in urls if u not in needed)
        return needed

    async def fetch_file(
        self,
        conv_id: bytes,
        body: File,
        dest: Path,
        *,
        allow_relays: Iterable[str] = (),
        overwrite: bool = False,
    ) -> Path:
        """Download, check and decrypt a received file into ``dest``.

        ``dest`` is used as given (the caller chose it; received names go
        through :func:`safe_file_name` first).  DestinationExists if it exists
        and ``overwrite`` is false; nothing is left at or next to ``dest`` if
        any chunk is missing, oversized or altered."""
        dest = Path(dest)
        if dest.is_dir():
            raise EngineError(f"{dest} is a directory")
        if not overwrite and (dest.exists() or dest.is_symlink()):
            raise DestinationExists(dest)
        fd, tmp_name = tempfile.mkstemp(prefix=".samizdat-", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                await self._download(conv_id, body, out.write, allow_relays, None)
                out.flush()
                os.fsync(out.fileno())
            _place(tmp, dest, overwrite)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    async def fetch_bytes(
        self,
        conv_id: bytes,
        body: File,
        *,
        max_size: int,
        allow_relays: Iterable[str] = (),
    ) -> bytes:
        """A received file in memory only (a photo to show), if it declares
        at most ``max_size`` bytes; never written to disk."""
        data = bytearray()
        await self._download(conv_id, body, data.extend, allow_relays, max_size)
        return bytes(data)

    async def _download(
        self,
        conv_id: bytes,
        body: File,
        write: Callable[[bytes], object],
        allow_relays: Iterable[str],
        max_size: int | None,
    ) -> None:
        if body.chunk_plaintext_size != attachments.CHUNK_PLAINTEXT_SIZE:
            raise EngineError(f"{body.name!r} uses an unsupported chunk size")
        if max_size is not None and body.size > max_size:
            raise EngineError(f"{body.name!r} is larger than {max_size} bytes")
        trusted = self._trusted_relays(conv_id)
        allowed = trusted | {u.rstrip("/") for u in allow_relays}
        outside = [u for u in self.outside_relays(conv_id, body) if u not in allowed]
        if outside:
            raise OutsideRelay(outside)
        decryptor = attachments.FileEncryptor(body.key)
        digest = hashlib.sha256()
        total = 0
        transient: dict[str, RelayClient] = {}  # outside relays: one-off HTTP only
        try:
            for index, ref in enumerate(body.chunks):
                last = index == len(body.chunks) - 1
                reason = "no copy"
                for copy in ref.copies:
                    url = copy.relay_url.rstrip("/")
                    if url not in allowed:
                        continue
                    try:
                        client = self._blob_client(url, trusted, transient)
                        copied = await client.download_chunk(
                            copy.blob_id, index, copy.download_token
                        )
                        # each relay holds its own copy (SPEC §8.7): back to canonical
                        key = attachments.copy_key(body.key, copy.relay_url)
                        chunk = attachments.copy_chunk(key, index, copied)
                        plain = decryptor.decrypt_chunk(index, chunk, last)
                        break
                    except (RelayUnavailable, RemoteError, CryptoError) as exc:
                        reason = f"{url}: {exc}"
                        continue
                else:
                    raise EngineError(
                        f"chunk {index} of {body.name!r} is unavailable on every relay ({reason})"
                    )
                total += len(plain)
                if total > body.size:
                    raise EngineError(f"{body.name!r} is longer than declared ({body.size} B)")
                digest.update(chunk)
                write(plain)
        finally:
            for client in transient.values():
                await client.close()
        if total != body.size:
            raise EngineError(f"{body.name!r} has {total} bytes, {body.size} declared")
        if digest.digest() != body.ciphertext_digest:
            raise EngineError(f"{body.name!r}: the downloaded ciphertext does not match")

    def _blob_client(
        self, url: str, trusted: set[str], transient: dict[str, RelayClient]
    ) -> RelayClient | RelaySessions:
        """The supervised client for our relays and the conversation's; a
        one-off unstarted one (HTTP only, no subscription) for another."""
        if url in trusted:
            return self._relay(url)
        if url not in transient:
            transient[url] = RelayClient(url, _no_delivery, proxy=self.proxy)
        return transient[url]


async def _no_delivery(url: str, mailbox_id: bytes, seq: int, sealed: bytes) -> None:
    """A one-off blob client subscribes to nothing, so nothing is delivered."""


def _place(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Move the finished download into place without replacing a file that
    appeared meanwhile (a hard link fails if ``dest`` exists)."""
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise DestinationExists(dest) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # a file system without hard links: check, then rename (a small race)
        if dest.exists() or dest.is_symlink():
            raise DestinationExists(dest) from None
        os.replace(tmp, dest)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
