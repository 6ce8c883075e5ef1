"""MLS wire structs (protocol.mls.tree_structs, protocol.mls.messages): the
messages and deserialization vectors, strictness on truncation, trailing bytes
and unknown closed-enum values, round-trips of unknown open-registry values,
and the signing/hashing helpers."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from typing import Any

import pytest

from harness.conformance import deserialization, messages
from protocol.codec import Reader, Writer, opaque
from protocol.errors import DecodeError, LocalError
from protocol.mls import messages as m
from protocol.mls import tree_structs as ts
from tests.conftest import VECTORS_DIR, run_vector, vector_cases
from tests.required import missing

# --------------------------------------------------------------------------
# Official vectors


@pytest.mark.parametrize("case", vector_cases("messages.json"))
def test_messages_vectors(case: Any) -> None:
    run_vector(messages, case)


@pytest.mark.parametrize("case", vector_cases("deserialization.json"))
def test_deserialization_vectors(case: Any) -> None:
    run_vector(deserialization, case)


@cache
def _message_cases() -> list[dict[str, str]]:
    path = VECTORS_DIR / "messages.json"
    if not path.is_file():
        missing(f"MLS test vectors not found in {VECTORS_DIR}")
    cases: list[dict[str, str]] = json.loads(path.read_text())
    return cases


def _field(name: str, index: int = 0) -> bytes:
    return bytes.fromhex(_message_cases()[index][name])


def _decoder(field: str) -> Callable[[bytes], bytes]:
    """Decode-and-re-encode for one field of a messages case."""
    return messages.ROUNDTRIPS[field]


FIELDS = sorted(messages.ROUNDTRIPS)


# --------------------------------------------------------------------------
# Strictness


@pytest.mark.parametrize("field", FIELDS)
def test_every_truncation_of_a_field_fails(field: str) -> None:
    data = _field(field)
    roundtrip = _decoder(field)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            roundtrip(data[:cut])


@pytest.mark.parametrize("field", FIELDS)
def test_truncation_and_trailing_byte_fail_in_every_case(field: str) -> None:
    roundtrip = _decoder(field)
    for case in _message_cases():
        data = bytes.fromhex(case[field])
        for bad in (data[:-1], data[: len(data) // 2], data + b"\x00", data + b"\xff"):
            with pytest.raises(DecodeError):
                roundtrip(bad)


def _public(field: str = "public_message_commit") -> m.PublicMessage:
    pm = m.MLSMessage.from_bytes(_field(field)).public_message
    assert pm is not None
    return pm


def _key_package() -> ts.KeyPackage:
    kp = m.MLSMessage.from_bytes(_field("mls_key_package")).key_package
    assert kp is not None
    return kp


def test_unknown_protocol_version_rejected() -> None:
    data = _field("mls_welcome")
    for version in (0, 2, 0xFFFF):
        with pytest.raises(DecodeError, match="ProtocolVersion"):
            m.MLSMessage.from_bytes(version.to_bytes(2, "big") + data[2:])
    kp = _key_package().to_bytes()
    with pytest.raises(DecodeError, match="ProtocolVersion"):
        ts.KeyPackage.from_bytes(b"\x00\x02" + kp[2:])


def test_unknown_wire_format_rejected() -> None:
    data = _field("mls_welcome")
    for wf in (0, 6, 0xFFFF):
        with pytest.raises(DecodeError, match="WireFormat"):
            m.MLSMessage.from_bytes(data[:2] + wf.to_bytes(2, "big") + data[4:])


def test_mismatched_wire_format_fails() -> None:
    data = _field("mls_welcome")  # a Welcome body read as a GroupInfo
    with pytest.raises(DecodeError):
        m.MLSMessage.from_bytes(data[:2] + b"\x00\x04" + data[4:])


def _framed_prefix(fc: m.FramedContent) -> int:
    """Offset of FramedContent.content_type inside fc's encoding."""
    w = Writer()
    w.push_opaque(fc.group_id)
    w.push_uint64(fc.epoch)
    fc.sender.encode(w)
    w.push_opaque(fc.authenticated_data)
    return len(w.getvalue())


def test_unknown_content_type_rejected() -> None:
    fc = _public().content
    data = fc.to_bytes()
    at = _framed_prefix(fc)
    for ct in (0, 4, 0xFF):
        with pytest.raises(DecodeError, match="ContentType"):
            m.FramedContent.from_bytes(data[:at] + bytes([ct]) + data[at + 1 :])
    priv = m.MLSMessage.from_bytes(_field("private_message")).private_message
    assert priv is not None
    pdata = priv.to_bytes()
    at = len(opaque(priv.group_id)) + 8
    with pytest.raises(DecodeError, match="ContentType"):
        m.PrivateMessage.from_bytes(pdata[:at] + b"\x00" + pdata[at + 1 :])
    with pytest.raises(DecodeError, match="ContentType"):
        m.SenderDataAAD.from_bytes(opaque(b"g") + bytes(8) + b"\x04")


def test_unknown_sender_type_rejected() -> None:
    for st in (0, 5, 0xFF):
        with pytest.raises(DecodeError, match="SenderType"):
            m.Sender.from_bytes(bytes([st]) + bytes(4))
    fc = _public().content
    data = fc.to_bytes()
    at = len(opaque(fc.group_id)) + 8
    with pytest.raises(DecodeError):
        m.FramedContent.from_bytes(data[:at] + b"\x05" + data[at + 1 :])


def test_unknown_leaf_node_source_rejected() -> None:
    leaf = _key_package().leaf_node
    data = leaf.to_bytes()
    w = Writer()
    w.push_opaque(leaf.encryption_key)
    w.push_opaque(leaf.signature_key)
    leaf.credential.encode(w)
    leaf.capabilities.encode(w)
    at = len(w.getvalue())
    assert data[at] == ts.LeafNodeSource.KEY_PACKAGE
    for src in (0, 4, 0xFF):
        with pytest.raises(DecodeError, match="LeafNodeSource"):
            ts.LeafNode.from_bytes(data[:at] + bytes([src]) + data[at + 1 :])


def test_unknown_node_type_rejected() -> None:
    tree = _field("ratchet_tree")
    nodes = ts.decode_ratchet_tree(tree)
    first = nodes[0]
    assert first is not None
    data = first.to_bytes()
    for nt in (0, 3):
        with pytest.raises(DecodeError, match="NodeType"):
            ts.Node.from_bytes(bytes([nt]) + data[1:])


def test_unknown_psk_enums_rejected() -> None:
    for psktype in (0, 3):
        with pytest.raises(DecodeError, match="PSKType"):
            m.PreSharedKeyID.from_bytes(bytes([psktype]) + opaque(b"id") + opaque(b"n"))
    for usage in (0, 4):
        body = bytes([2, usage]) + opaque(b"g") + bytes(8) + opaque(b"n")
        with pytest.raises(DecodeError, match="ResumptionPSKUsage"):
            m.PreSharedKeyID.from_bytes(body)
    ok = bytes([2, 1]) + opaque(b"g") + bytes(8) + opaque(b"n")
    assert m.PreSharedKeyID.from_bytes(ok).to_bytes() == ok


def test_unknown_proposal_or_ref_type_rejected() -> None:
    for t in (0, 3):
        with pytest.raises(DecodeError, match="ProposalOrRefType"):
            m.ProposalOrRef.from_bytes(bytes([t]) + opaque(b"ref"))


def test_unknown_proposal_type_rejected() -> None:
    remove = m.Proposal.of(m.Remove(3)).to_bytes()
    assert remove == b"\x00\x03\x00\x00\x00\x03"
    for pt in (0, 8, 0x0A0A):
        with pytest.raises(DecodeError, match="proposal type"):
            m.Proposal.from_bytes(pt.to_bytes(2, "big") + remove[2:])


def test_optional_presence_byte_two_rejected() -> None:
    commit = m.Commit.from_bytes(_field("commit"))
    data = m.Commit(commit.proposals, None).to_bytes()
    assert data[-1] == 0
    with pytest.raises(DecodeError):
        m.Commit.from_bytes(data[:-1] + b"\x02")
    gs = m.GroupSecrets(b"j", None, ())
    assert gs.to_bytes() == opaque(b"j") + b"\x00\x00"
    with pytest.raises(DecodeError):
        m.GroupSecrets.from_bytes(opaque(b"j") + b"\x02\x00")


# --------------------------------------------------------------------------
# The ratchet_tree vector (RFC 9420 §12.4.3.3)


def test_ratchet_tree_blank_tail_and_empty_rejected() -> None:
    nodes = ts.decode_ratchet_tree(_field("ratchet_tree"))
    assert nodes[-1] is not None
    good = ts.encode_ratchet_tree(nodes)
    w = Writer()
    ts.push_ratchet_tree(w, [*nodes, None, None])
    with pytest.raises(DecodeError, match="blank"):
        ts.decode_ratchet_tree(w.getvalue())
    with pytest.raises(DecodeError, match="empty"):
        ts.decode_ratchet_tree(b"\x00")
    with pytest.raises(LocalError):
        ts.encode_ratchet_tree([*nodes, None])
    assert ts.strip_blank_tail([*nodes, None, None]) == nodes
    assert ts.decode_ratchet_tree(good) == nodes


def test_ratchet_tree_node_in_wrong_position_rejected() -> None:
    nodes = ts.decode_ratchet_tree(_field("ratchet_tree"))
    leaf = nodes[0]
    assert leaf is not None and leaf.node_type == ts.NodeType.LEAF
    w = Writer()
    ts.push_ratchet_tree(w, [leaf, leaf, leaf])
    with pytest.raises(DecodeError, match="node 1"):
        ts.decode_ratchet_tree(w.getvalue())


# --------------------------------------------------------------------------
# Open registries round-trip unknown (GREASE) values


def test_unknown_credential_and_extension_types_roundtrip() -> None:
    leaf = _key_package().leaf_node
    odd = replace(
        leaf,
        credential=ts.Credential(0x0A0A, content=b"opaque credential body"),
        capabilities=replace(
            leaf.capabilities,
            versions=(1, 0x0B0B),
            cipher_suites=(1, 0x1A1A),
            extensions=(0x2A2A,),
            proposals=(0x3A3A,),
            credentials=(1, 0x0A0A),
        ),
        extensions=(ts.Extension(0x2A2A, b"grease"), ts.Extension(0xFFFF, b"")),
    )
    data = odd.to_bytes()
    back = ts.LeafNode.from_bytes(data)
    assert back == odd
    assert back.to_bytes() == data
    kp = replace(_key_package(), leaf_node=odd, cipher_suite=0x1A1A)
    msg = m.MLSMessage.of(kp)
    assert m.MLSMessage.from_bytes(msg.to_bytes()) == msg


def test_x509_credential_roundtrip() -> None:
    cred = ts.Credential.x509([b"leaf cert", b"ca cert"])
    data = cred.to_bytes()
    assert data == b"\x00\x02" + opaque(opaque(b"leaf cert") + opaque(b"ca cert"))
    assert ts.Credential.from_bytes(data) == cred
    sender = ts.ExternalSender(b"sig key", cred)
    blob = ts.encode_external_senders([sender, sender])
    assert ts.decode_external_senders(blob) == (sender, sender)


def test_credential_arms_checked() -> None:
    with pytest.raises(LocalError):
        ts.Credential(ts.CredentialType.BASIC)
    with pytest.raises(LocalError):
        ts.Credential(ts.CredentialType.BASIC, identity=b"a", content=b"b")
    with pytest.raises(LocalError):
        ts.Credential(0x0A0A, identity=b"a")


# --------------------------------------------------------------------------
# Variants, constructors and helpers


def test_structs_are_frozen_and_hashable() -> None:
    msg = m.MLSMessage.from_bytes(_field("mls_welcome"))
    assert hash(msg) == hash(m.MLSMessage.from_bytes(_field("mls_welcome")))
    with pytest.raises(AttributeError):
        msg.version = ts.ProtocolVersion.MLS10  # type: ignore[misc]


def test_variant_consistency_checked() -> None:
    leaf = _key_package().leaf_node
    with pytest.raises(LocalError):
        replace(leaf, leaf_node_source=ts.LeafNodeSource.COMMIT)
    with pytest.raises(LocalError):
        m.Sender(m.SenderType.MEMBER)
    with pytest.raises(LocalError):
        m.Proposal(ts.ProposalType.ADD, m.Remove(1))
    with pytest.raises(LocalError):
        m.MLSMessage(ts.ProtocolVersion.MLS10, m.WireFormat.MLS_WELCOME, _key_package())
    with pytest.raises(LocalError):
        replace(_public().content, content_type=m.ContentType.APPLICATION)
    with pytest.raises(LocalError):
        m.PublicMessage(_public().content, m.FramedContentAuthData(b"sig"), b"tag")
    with pytest.raises(LocalError):
        m.SenderData(0, 0, b"abc")


def test_sender_constructors() -> None:
    assert m.Sender.member(5).to_bytes() == b"\x01\x00\x00\x00\x05"
    assert m.Sender.external(2).to_bytes() == b"\x02\x00\x00\x00\x02"
    assert m.Sender.new_member_proposal().to_bytes() == b"\x03"
    assert m.Sender.new_member_commit().to_bytes() == b"\x04"
    for s in (m.Sender.member(5), m.Sender.external(2), m.Sender.new_member_commit()):
        assert m.Sender.from_bytes(s.to_bytes()) == s


def test_content_views() -> None:
    for field, ct in (
        ("public_message_application", m.ContentType.APPLICATION),
        ("public_message_proposal", m.ContentType.PROPOSAL),
        ("public_message_commit", m.ContentType.COMMIT),
    ):
        fc = _public(field).content
        assert fc.content_type == ct
        views = (fc.application_data, fc.proposal, fc.commit)
        assert sum(v is not None for v in views) == 1
        assert views[ct - 1] is fc.content


def test_leaf_node_tbs() -> None:
    leaf = _key_package().leaf_node
    full = leaf.to_bytes()
    tbs = leaf.tbs_bytes()
    assert full == tbs + opaque(leaf.signature)
    with pytest.raises(LocalError):
        leaf.tbs_bytes(b"group", 0)
    updated = replace(leaf, leaf_node_source=ts.LeafNodeSource.UPDATE, lifetime=None)
    tbs = updated.tbs_bytes(b"group", 7)
    assert tbs.endswith(opaque(b"group") + b"\x00\x00\x00\x07")
    assert updated.to_bytes() == tbs[: -len(opaque(b"group")) - 4] + opaque(leaf.signature)
    with pytest.raises(LocalError):
        updated.tbs_bytes()


def test_key_package_and_group_info_tbs() -> None:
    kp = _key_package()
    assert kp.to_bytes() == kp.tbs_bytes() + opaque(kp.signature)
    gi = m.MLSMessage.from_bytes(_field("mls_group_info")).group_info
    assert gi is not None
    assert gi.to_bytes() == gi.tbs_bytes() + opaque(gi.signature)


def _context(group_id: bytes) -> m.GroupContext:
    return m.GroupContext(ts.ProtocolVersion.MLS10, 1, group_id, 3, b"th", b"cth", ())


def test_framed_content_tbs() -> None:
    fc = _public().content
    wf = m.WireFormat.MLS_PUBLIC_MESSAGE
    assert fc.sender.sender_type == m.SenderType.MEMBER
    ctx = _context(fc.group_id)
    tbs = m.framed_content_tbs(wf, fc, ctx)
    assert tbs == b"\x00\x01\x00\x01" + fc.to_bytes() + ctx.to_bytes()
    with pytest.raises(LocalError):
        m.framed_content_tbs(wf, fc, None)
    ext = replace(fc, sender=m.Sender.external(0))
    assert m.framed_content_tbs(wf, ext, None) == b"\x00\x01\x00\x01" + ext.to_bytes()
    with pytest.raises(LocalError):
        m.framed_content_tbs(wf, ext, ctx)


def test_authenticated_content_and_transcript_inputs() -> None:
    pm = _public()
    ac = m.AuthenticatedContent(m.WireFormat.MLS_PUBLIC_MESSAGE, pm.content, pm.auth)
    data = ac.to_bytes()
    assert m.AuthenticatedContent.from_bytes(data) == ac
    assert pm.auth.confirmation_tag is not None
    assert data == b"\x00\x01" + pm.content.to_bytes() + pm.auth.to_bytes()
    confirmed = m.confirmed_transcript_hash_input(ac.wire_format, pm.content, pm.auth.signature)
    interim = m.interim_transcript_hash_input(pm.auth.confirmation_tag)
    assert confirmed + interim == data
    tbs = m.framed_content_tbs(ac.wire_format, pm.content, _context(pm.content.group_id))
    assert m.authenticated_content_tbm(tbs, pm.auth) == tbs + pm.auth.to_bytes()


def test_auth_data_needs_content_type() -> None:
    auth = m.FramedContentAuthData(b"sig", b"tag")
    data = auth.to_bytes()
    assert m.FramedContentAuthData.from_bytes(data, m.ContentType.COMMIT) == auth
    with pytest.raises(DecodeError):
        m.FramedContentAuthData.from_bytes(data, m.ContentType.PROPOSAL)
    plain = m.FramedContentAuthData(b"sig")
    assert m.FramedContentAuthData.from_bytes(plain.to_bytes(), m.ContentType.APPLICATION) == plain


def test_private_message_content_padding() -> None:
    auth = m.FramedContentAuthData(b"sig")
    pmc = m.PrivateMessageContent(b"hello", auth, bytes(5))
    assert pmc.content_type == m.ContentType.APPLICATION
    data = pmc.to_bytes()
    assert data == opaque(b"hello") + opaque(b"sig") + bytes(5)
    assert m.PrivateMessageContent.from_bytes(data, m.ContentType.APPLICATION) == pmc
    with pytest.raises(DecodeError, match="padding"):
        m.PrivateMessageContent.from_bytes(data + b"\x01", m.ContentType.APPLICATION)
    with pytest.raises(LocalError):
        m.PrivateMessageContent(b"hello", auth, b"\x00\x01")
    commit = m.Commit.from_bytes(_field("commit"))
    cpmc = m.PrivateMessageContent(commit, m.FramedContentAuthData(b"s", b"t"))
    again = m.PrivateMessageContent.from_bytes(cpmc.to_bytes(), m.ContentType.COMMIT)
    assert again == cpmc and again.commit == commit
    with pytest.raises(LocalError):
        m.PrivateMessageContent(commit, auth)  # a commit needs a confirmation_tag


def test_sender_data_and_aads() -> None:
    sd = m.SenderData(1, 2, b"\xaa\xbb\xcc\xdd")
    assert sd.to_bytes() == bytes.fromhex("0000000100000002aabbccdd")
    assert m.SenderData.from_bytes(sd.to_bytes()) == sd
    aad = m.PrivateContentAAD(b"g", 9, m.ContentType.PROPOSAL, b"ad")
    assert aad.to_bytes() == opaque(b"g") + (9).to_bytes(8, "big") + b"\x02" + opaque(b"ad")
    assert m.PrivateContentAAD.from_bytes(aad.to_bytes()) == aad
    sda = m.SenderDataAAD(b"g", 9, m.ContentType.COMMIT)
    assert m.SenderDataAAD.from_bytes(sda.to_bytes()) == sda


def test_psk_label_and_ids() -> None:
    ext = m.PreSharedKeyID.external(b"id", b"nonce")
    res = m.PreSharedKeyID.resumption(m.ResumptionPSKUsage.BRANCH, b"g", 4, b"nonce")
    for psk in (ext, res):
        assert m.PreSharedKeyID.from_bytes(psk.to_bytes()) == psk
    label = m.PSKLabel(ext, 0, 2)
    assert label.to_bytes() == ext.to_bytes() + b"\x00\x00\x00\x02"
    with pytest.raises(LocalError):
        m.PreSharedKeyID(m.PSKType.EXTERNAL, psk_nonce=b"n")


def test_proposal_or_ref_and_commit_views() -> None:
    commit = m.Commit.from_bytes(_field("commit"))
    ref = m.ProposalOrRef.of_reference(b"\x01" * 32)
    assert ref.to_bytes() == b"\x02" + opaque(b"\x01" * 32)
    by_value = m.ProposalOrRef.of_proposal(m.Proposal.of(m.Remove(1)))
    c2 = replace(commit, proposals=(ref, by_value))
    assert m.Commit.from_bytes(c2.to_bytes()) == c2


def test_group_info_extensions_external_pub() -> None:
    ep = m.ExternalPub(b"pub")
    assert m.ExternalPub.from_bytes(ep.to_bytes()) == ep
    ext = ts.Extension(ts.ExtensionType.EXTERNAL_PUB, ep.to_bytes())
    assert ts.find_extension([ext], ts.ExtensionType.EXTERNAL_PUB) is ext
    assert ts.find_extension([ext], ts.ExtensionType.RATCHET_TREE) is None
    rc = ts.RequiredCapabilities((0x0A0A,), (8,), (1,))
    assert ts.RequiredCapabilities.from_bytes(rc.to_bytes()) == rc


def test_welcome_structure() -> None:
    w = m.MLSMessage.from_bytes(_field("mls_welcome")).welcome
    assert w is not None
    assert w.secrets
    for s in w.secrets:
        assert isinstance(s.encrypted_group_secrets, ts.HPKECiphertext)
    gs = m.GroupSecrets.from_bytes(_field("group_secrets"))
    assert gs.to_bytes() == _field("group_secrets")


def test_memoised_encodings_match_fresh_encoding() -> None:
    """UpdatePathNode keeps its received ciphertext bytes and FramedContent its
    encoding (issue 12); both must equal a fresh encoding, and a copy made
    with ``dataclasses.replace`` must not inherit them."""
    import dataclasses
    import random

    from protocol.mls.messages import Commit, ContentType, FramedContent, Sender
    from protocol.mls.tree_structs import HPKECiphertext, UpdatePathNode

    rnd = random.Random(7)
    cts = tuple(
        HPKECiphertext(rnd.randbytes(rnd.choice([0, 32, 63, 64, 200])), rnd.randbytes(48))
        for _ in range(40)
    )
    node = UpdatePathNode(rnd.randbytes(32), cts)
    data = node.to_bytes()
    decoded = UpdatePathNode.from_bytes(data)
    assert decoded == node and decoded.to_bytes() == data
    fewer = dataclasses.replace(decoded, encrypted_path_secret=cts[:3])
    assert fewer.to_bytes() == UpdatePathNode(node.encryption_key, cts[:3]).to_bytes()
    framed = FramedContent(b"g", 3, Sender.member(1), b"", ContentType.COMMIT, Commit((), None))
    first = framed.to_bytes()
    assert framed.to_bytes() == first == FramedContent.from_bytes(first).to_bytes()
    from protocol.mls.tree_structs import (
        Capabilities,
        Credential,
        LeafNode,
        LeafNodeSource,
        Lifetime,
    )

    leaf = LeafNode(
        rnd.randbytes(32),
        rnd.randbytes(32),
        Credential.basic(b"x"),
        Capabilities((1,), (1,), (), (), (1,)),
        LeafNodeSource.KEY_PACKAGE,
        Lifetime(1, 2),
        None,
        (),
        rnd.randbytes(64),
    )
    encoded = leaf.to_bytes()
    assert leaf.tbs_bytes() == encoded[: len(leaf.tbs_bytes())] and leaf.to_bytes() == encoded
    rekeyed = dataclasses.replace(leaf, encryption_key=b"k" * 32)
    assert rekeyed.to_bytes() != encoded
    assert LeafNode.from_bytes(rekeyed.to_bytes()) == rekeyed
    later = dataclasses.replace(framed, epoch=4)
    assert (
        later.to_bytes() != first
        and later.epoch == FramedContent.from_bytes(later.to_bytes()).epoch
    )


def test_leaf_node_decoding_is_canonical() -> None:
    """A decoded LeafNode keeps its received body as the encoding memo (issue
    12), which is sound only if whatever decodes re-encodes to the same
    bytes.  Mutate valid leaves of every shape at random: each mutant that
    still decodes must re-encode (from a fresh object, no memo) byte for byte."""
    import dataclasses
    import random

    from protocol.errors import DecodeError
    from protocol.mls.tree_structs import (
        Capabilities,
        Certificate,
        Credential,
        Extension,
        LeafNode,
        LeafNodeSource,
        Lifetime,
    )

    rnd = random.Random(11)
    caps = Capabilities((1,), (1, 2, 0x0A0A), (0x0A0A,), (7,), (1, 2))
    leaves = [
        LeafNode(
            rnd.randbytes(32),
            rnd.randbytes(32),
            Credential.basic(rnd.randbytes(70)),
            caps,
            LeafNodeSource.KEY_PACKAGE,
            Lifetime(5, 2**40),
            None,
            (Extension(0x0A0A, rnd.randbytes(3)),),
            rnd.randbytes(64),
        ),
        LeafNode(
            rnd.randbytes(32),
            rnd.randbytes(32),
            Credential(2, certificates=(Certificate(rnd.randbytes(100)),)),
            caps,
            LeafNodeSource.COMMIT,
            None,
            rnd.randbytes(32),
            (),
            rnd.randbytes(64),
        ),
        LeafNode(
            rnd.randbytes(32),
            rnd.randbytes(32),
            Credential(0x0B0B, content=rnd.randbytes(9)),
            caps,
            LeafNodeSource.UPDATE,
            None,
            None,
            (),
            rnd.randbytes(64),
        ),
    ]
    decoded_mutants = 0
    for leaf in leaves:
        data = leaf.to_bytes()
        for _ in range(1500):
            mutant = bytearray(data)
            for _ in range(rnd.randint(1, 2)):
                i = rnd.randrange(len(mutant))
                byte = rnd.choice([0, 1, 2, 0x40, 0x80, rnd.randrange(256)])
                op = rnd.randrange(3)
                if op == 0:
                    mutant[i] = byte
                elif op == 1:
                    mutant.insert(i, byte)  # e.g. 0x40 before a length: non-minimal
                else:
                    del mutant[i]
            try:
                got = LeafNode.from_bytes(bytes(mutant))
            except DecodeError:
                continue
            decoded_mutants += 1
            fresh = dataclasses.replace(got)  # a new object: no memo
            assert fresh.to_bytes() == bytes(mutant)
            args = (None, None) if got.leaf_node_source == LeafNodeSource.KEY_PACKAGE else (b"g", 3)
            assert got.tbs_bytes(*args) == fresh.tbs_bytes(*args)
    assert decoded_mutants > 300  # many mutations of keys and signatures still decode


# -- EncryptedPathSecrets: an UpdatePathNode's ciphertexts, built on access ----------------------


def _strict_entries(body: bytes) -> tuple[object, ...]:
    """The entries an entry-by-entry strict parse gives (the reference)."""
    r = Reader(body)
    out = []
    while not r.eof():
        out.append(ts.HPKECiphertext.decode(r))
    return tuple(out)


def _entry(kem: bytes, ct: bytes) -> bytes:
    return ts.HPKECiphertext(kem, ct).to_bytes()


def test_encrypted_path_secrets_read_exactly_what_a_strict_parse_reads() -> None:
    """The shape shortcut must never misplace an entry: bodies that look
    uniform at one of the two length positions but not the other, one odd
    entry anywhere, long (two-byte) lengths, empty entries."""
    rnd = random.Random(12)
    bodies = [b""]
    for _ in range(300):
        count = rnd.randint(1, 12)
        kem_len, ct_len = rnd.choice([(32, 48), (0, 0), (63, 63), (32, 64), (1, 2)])
        shapes = [(kem_len, ct_len)] * count
        twist = rnd.random()
        if twist < 0.3:  # one entry moves a byte from its kem_output to its ciphertext
            i = rnd.randrange(count)
            if shapes[i][0]:
                shapes[i] = (shapes[i][0] - 1, shapes[i][1] + 1)
        elif twist < 0.5:  # one entry of another size
            shapes[rnd.randrange(count)] = (rnd.randint(0, 70), rnd.randint(0, 70))
        bodies.append(b"".join(_entry(rnd.randbytes(k), rnd.randbytes(c)) for k, c in shapes))
    # kem lengths line up at every stride but a ciphertext length does not
    a, b = _entry(bytes(32), bytes(48)), _entry(bytes(32), bytes(47))
    c = bytearray(_entry(bytes(32), bytes(49)))
    c[1] = 32  # the byte where a third uniform entry would have its kem length
    bodies.append(a + b + bytes(c))
    # ciphertext lengths line up at every stride but a kem_output length does not
    d = bytearray(_entry(bytes(31), bytes(49)))
    d[33] = 48  # the byte where a second uniform entry would have its ciphertext length
    bodies.append(a + bytes(d))
    for body in bodies:
        expected = _strict_entries(body)
        got = ts.EncryptedPathSecrets(body)
        assert len(got) == len(expected)
        assert tuple(got) == expected
        assert [got[i] for i in range(len(got))] == list(expected)
        assert got[-1:] == expected[-1:] and got[:2] == expected[:2]
        assert got == expected and hash(got) == hash(expected)


def test_encrypted_path_secrets_refuse_what_a_strict_parse_refuses() -> None:
    good = _entry(bytes(32), bytes(48)) * 3
    for bad in (
        good[:-1],  # the last ciphertext is short
        good + b"\x05",  # a length with nothing after it
        good + _entry(bytes(4), b"")[:5],  # a kem_output without its ciphertext
        b"\x40\x20" + bytes(32) + b"\x00",  # a two-byte length that fits in one
    ):
        with pytest.raises(DecodeError):
            _strict_entries(bad)
        with pytest.raises(DecodeError):
            ts.EncryptedPathSecrets(bad)
    with pytest.raises(IndexError):
        ts.EncryptedPathSecrets(good)[3]
