"""Second reader's attacks on tree-blob Welcomes (SPEC.md §4.1.1), real engines.

A member forges a group under the id of a conversation the victim holds and
sends it as a ``TreeWelcome`` (Welcome without the tree, the tree as a blob
on a relay the victim trusts, correctly encrypted under the pending epoch's
exporter): the insider check of issue 10 (a Welcome for a known group_id is
refused, RFC 9420 §12.4.3.1) must hold on this path too, and leave the
existing conversation untouched.
"""

from __future__ import annotations

import time

import pytest

from client.core import CAPABILITIES, REQUIRED, SUITE, SUITE_ID, rng
from client.engine import Engine
from client.model import NS_KEY_PACKAGES
from client.tree_welcome import tree_welcomes, upload_tree
from protocol.app.envelope import EnvelopeType
from protocol.app.group_meta import GroupMeta, meta_extension, new_mailbox_ref
from protocol.mls.group import Group
from protocol.mls.messages import MLSMessage
from protocol.mls.welcome import key_package_ref
from tests.client_support import befriend
from tests.test_client_insider import crew, said, snapshot, until

pytestmark = pytest.mark.timeout(180)


async def test_tree_welcome_reusing_a_known_group_id_is_refused(trio: list[Engine]) -> None:
    alice, bob, carol = trio
    gid = await crew(alice, bob, carol)
    await befriend(bob, carol)  # carol holds KeyPackages and an inbox of bob's
    await bob.send_text(gid, "before")
    await until(lambda: "before" in [e.text for e in alice.history(gid)])
    before = snapshot(bob, gid)

    contact = carol.contact(bob.identity.signature_pub)
    assert contact is not None and contact.key_packages
    kp = contact.key_packages.pop(0)
    meta = GroupMeta("crew", (new_mailbox_ref(carol.identity.relays[0], rng),), 0)
    await carol._create_mailboxes(meta.mailboxes)
    evil = Group.create(
        SUITE_ID,
        gid,
        carol.signer,
        rng,
        int(time.time()),
        extensions=(meta_extension(meta), REQUIRED),
        capabilities=CAPABILITIES,
    )
    result = evil.commit(rng, int(time.time()), add=[kp], welcome_tree=False)
    relays = [(url, carol._relay(url)) for url in carol.identity.relays]
    refs, digest, _ = await upload_tree(evil, result, relays)
    evil.merge_pending_commit()
    [(body, inboxes)] = tree_welcomes(evil.suite, result, [(kp, contact.inboxes)], refs, digest)
    await carol._post_to_inboxes(body, inboxes, b"", kind=EnvelopeType.TREE_WELCOME)

    kp_msg = MLSMessage.from_bytes(kp).key_package
    assert kp_msg is not None
    ref = key_package_ref(SUITE, kp_msg)
    await until(lambda: said(bob, None, "refused", "reuses the id"), what="bob refuses it")
    assert bob.store.get(NS_KEY_PACKAGES, ref) is None  # the Welcome opened: used (§16.8)
    assert snapshot(bob, gid) == before, "the TreeWelcome changed the existing conversation"
