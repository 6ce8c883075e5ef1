"""Welcomes whose ratchet tree is posted once as a blob (SPEC.md §4.1.1).

Theory of operation
-------------------
A Welcome carries the group's ratchet tree, and each joiner's inbox gets the
whole Welcome: an add of N joiners posts the tree N times.  With
post-quantum suites a leaf is ~2.7 KB, so this grows fast (N = 30 joiners
of a 40-member group: 3 MB).  When the tree would be repeated more than
:data:`TREE_BLOB_THRESHOLD` bytes, the committer instead

1. builds the commit without the tree in the Welcome (``welcome_tree=False``),
2. encrypts the new epoch's tree once under ``MLS-Exporter("samizdat ratchet
   tree", "", 32)`` of the *pending* epoch, in the attachment chunk format,
   and uploads it to its own relays (one copy each, per-relay keystream as
   for files, SPEC §8.7) before the commit is sent; if no relay takes it,
   the commit is dropped and nothing is sent,
3. posts each joiner a ``TreeWelcome``: its single-entry Welcome plus the
   blob's references, in an envelope of type ``tree_welcome``.

A joiner derives the same key from its Welcome (``welcome_export``),
downloads from relays it already uses or knows as a contact's (never a
server the sender picked: that would reveal its address to it), checks the
digest and every chunk's tag, and joins with the tree, which MLS checks
against the GroupContext's tree hash (RFC 9420 §12.4.3.1).  Anything wrong
is a notice and the Welcome is not taken; nothing is stored before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from client.core import EngineError
from client.model import ContactInbox
from client.relay_client import RelayClient, RelayUnavailable
from client.sessions import RelaySessions
from protocol.app.attachments import copy_chunk, copy_chunks, copy_key
from protocol.app.messages import MAX_CHUNK_COPIES, BlobRef, ChunkRef
from protocol.app.tree_welcome import (
    TREE_KEY_LEN,
    TREE_LABEL,
    TreeWelcome,
    decrypt_tree,
    encrypt_tree,
)
from protocol.errors import RemoteError, SamizdatError
from protocol.mls.crypto import CipherSuite
from protocol.mls.group import CommitResult, Group
from protocol.mls.key_package import KeyPackageBundle
from protocol.mls.messages import MLSMessage
from protocol.mls.welcome import key_package_ref, split_welcome, welcome_export

#: Bytes of ratchet tree repeated across one add's Welcomes above which the
#: tree is posted once as a blob (one envelope's worth).
TREE_BLOB_THRESHOLD = 64 * 1024


def tree_blob_wanted(group: Group, key_packages: list[bytes], threshold: int) -> bool:
    """Would posting the whole Welcome to each joiner repeat more than
    ``threshold`` bytes of tree?  (The tree after the add is about the
    current one plus the joiners' leaves.)"""
    tree = len(group.ratchet_tree()) + sum(len(kp) for kp in key_packages)
    return len(key_packages) > 1 and len(key_packages) * tree > threshold


async def upload_tree(
    group: Group, result: CommitResult, relays: Iterable[tuple[str, RelayClient | RelaySessions]]
) -> tuple[tuple[ChunkRef, ...], bytes, list[str]]:
    """Encrypt the pending epoch's tree and upload a copy to each relay of
    ``relays`` (ours; at most four).  Returns the chunk references, the
    ciphertext digest and the errors of relays that refused."""
    key = group.pending_export_secret(TREE_LABEL, b"", TREE_KEY_LEN)
    chunks, digest = encrypt_tree(key, result.ratchet_tree)
    copies: list[BlobRef] = []
    errors: list[str] = []
    for url, client in relays:
        try:
            blob_id, token = await client.upload_blob(copy_chunks(key, url, chunks))
        except (RelayUnavailable, RemoteError) as exc:
            errors.append(f"{url}: {exc}")
            continue
        copies.append(BlobRef(url, blob_id, token))
        if len(copies) == MAX_CHUNK_COPIES:
            break
    if not copies:
        raise EngineError("no relay accepted the group's ratchet tree: " + "; ".join(errors))
    return tuple(ChunkRef(tuple(copies)) for _ in chunks), digest, errors


def tree_welcomes(
    suite: CipherSuite,
    result: CommitResult,
    items: list[tuple[bytes, list[ContactInbox]]],
    refs: tuple[ChunkRef, ...],
    digest: bytes,
) -> list[tuple[bytes, list[ContactInbox]]]:
    """One encoded ``TreeWelcome`` per joiner, with the inboxes to post it to."""
    assert result.welcome is not None
    parts = dict(split_welcome(result.welcome))
    out = []
    for kp_bytes, inboxes in items:
        kp = MLSMessage.from_bytes(kp_bytes).key_package
        assert kp is not None
        part = parts[key_package_ref(suite, kp)]
        body = TreeWelcome(part, len(result.ratchet_tree), refs, digest)
        out.append((body.to_bytes(), inboxes))
    return out


async def fetch_tree(
    body: TreeWelcome,
    bundle: KeyPackageBundle,
    trusted: Iterable[str],
    relay: Callable[[str], RelayClient | RelaySessions],
) -> bytes:
    """The ratchet tree a ``TreeWelcome`` names, downloaded only from
    ``trusted`` relays (``relay(url)`` gives their clients), checked and
    decrypted.  EngineError (fit to show) if it cannot be had."""
    try:
        key = welcome_export(
            body.welcome, bundle.key_package, bundle.init_priv, TREE_LABEL, TREE_KEY_LEN
        )
    except SamizdatError as exc:
        raise EngineError(f"the invitation's Welcome does not open: {exc}") from None
    allowed = {u.rstrip("/") for u in trusted}
    chunks: list[bytes] = []
    for index, ref in enumerate(body.chunks):
        reason = "no copy on a relay we use"
        for copy in ref.copies:
            url = copy.relay_url.rstrip("/")
            if url not in allowed:
                continue
            try:
                copied = await relay(url).download_chunk(copy.blob_id, index, copy.download_token)
            except (RelayUnavailable, RemoteError) as exc:
                reason = f"{url}: {exc}"
                continue
            chunks.append(copy_chunk(copy_key(key, copy.relay_url), index, copied))
            break
        else:
            raise EngineError(f"the group's ratchet tree is unavailable ({reason})")
    try:
        return decrypt_tree(key, body, chunks)
    except SamizdatError as exc:
        raise EngineError(f"the group's ratchet tree does not match its Welcome: {exc}") from None
