"""Interop with mls-rs, an independent Rust MLS implementation, both ways.

Suite 1, at least three members and more than ten epochs in each direction:
joins from each other's Welcomes, application messages both ways, commits
(add, remove, update) made by one side and processed by the other, and the
exporter and epoch authenticator agreeing after every epoch.
"""

from __future__ import annotations

import time

import pytest

# tests.interop.mlsrs skips (locally) or fails (CI=true) when the mls-rs wheel is missing.
from protocol.mls.events import ApplicationMessageReceived
from protocol.mls.group import Group
from tests.interop.mlsrs import RsMember
from tests.mls_harness import Party

LABEL, CONTEXT = "samizdat interop", b"ctx"
# mls-rs stamps its KeyPackages with the wall clock, and we check lifetimes.
NOW = int(time.time())


class Mixed:
    """Samizdat parties and mls-rs members in one group, one relay order."""

    def __init__(self) -> None:
        self.sam: dict[str, Party] = {}
        self.rs: dict[str, RsMember] = {}

    def deliver(self, sender: str, message: bytes) -> None:
        for name, party in self.sam.items():
            if name != sender and party.group is not None and party.group.active:
                party.group.process(message)
        for name, member in self.rs.items():
            if name != sender:
                member.process(message)

    def sam_commit(self, name: str, **kwargs: object) -> bytes | None:
        party = self.sam[name]
        result = party.g.commit(party.rng, NOW, **kwargs)  # type: ignore[arg-type]
        self.deliver(name, result.commit)
        party.g.merge_pending_commit()
        return result.welcome

    def check(self) -> None:
        exports = {p.g.export_secret(LABEL, CONTEXT, 32) for p in self.sam.values() if p.group}
        exports |= {m.export_secret(LABEL.encode(), CONTEXT, 32) for m in self.rs.values()}
        auths = {p.g.epoch_authenticator for p in self.sam.values() if p.group}
        auths |= {m.epoch_authenticator() for m in self.rs.values()}
        epochs = {p.g.epoch for p in self.sam.values() if p.group} | {
            m.epoch() for m in self.rs.values()
        }
        assert len(exports) == 1 and len(auths) == 1 and len(epochs) == 1, epochs

    def chat(self, text: str) -> None:
        """Every member sends; every other member must read it."""
        for name, party in self.sam.items():
            msg = party.g.encrypt(f"{text} from {name}".encode(), party.rng)
            for rs_name, member in self.rs.items():
                kind, data = member.process(msg)
                assert (kind, data) == ("application", f"{text} from {name}".encode()), rs_name
            for other, peer in self.sam.items():
                if other != name:
                    (event,) = peer.g.process(msg)
                    assert isinstance(event, ApplicationMessageReceived)
                    assert event.data == f"{text} from {name}".encode()
        for name, member in self.rs.items():
            msg = member.encrypt(f"{text} from {name}".encode())
            for other, peer_rs in self.rs.items():
                if other != name:
                    assert peer_rs.process(msg) == ("application", f"{text} from {name}".encode())
            for party in self.sam.values():
                (event,) = party.g.process(msg)
                assert isinstance(event, ApplicationMessageReceived)
                assert event.data == f"{text} from {name}".encode()


@pytest.mark.parametrize("tree_in_welcome", [True, False], ids=["tree-in-welcome", "tree-apart"])
def test_mlsrs_creates_group_samizdat_joins(tree_in_welcome: bool) -> None:
    mix = Mixed()
    alice = RsMember.new(b"alice", ratchet_tree_extension=tree_in_welcome)
    bob = RsMember.new(b"bob", ratchet_tree_extension=tree_in_welcome)
    alice.create_group()
    mix.rs = {"alice": alice}
    sam = Party("sam", now=NOW)
    bundle = sam.key_package()
    commit, welcome = alice.add([bundle.key_package_bytes(), bob.key_package()])
    assert welcome is not None
    tree = None if tree_in_welcome else alice.last_ratchet_tree
    sam.group = Group.join(welcome, bundle, ratchet_tree=tree)
    bob.join(welcome, tree)
    mix.sam["sam"] = sam
    mix.rs["bob"] = bob
    mix.check()
    mix.chat("epoch1")

    # 12 more epochs, commits alternating between the implementations
    carol = Party("carol", now=NOW)
    dave = RsMember.new(b"dave")
    for step in range(12):
        if step == 0:  # Samizdat adds a Samizdat member
            cb = carol.key_package()
            welcome = mix.sam_commit("sam", add=[cb])
            assert welcome is not None
            carol.group = Group.join(welcome, cb)
            mix.sam["carol"] = carol
        elif step == 1:  # mls-rs adds an mls-rs member
            commit, welcome = bob.add([dave.key_package()])
            assert welcome is not None
            mix.deliver("bob", commit)
            dave.join(welcome, None if tree_in_welcome else bob.last_ratchet_tree)
            mix.rs["dave"] = dave
        elif step == 2:  # Samizdat removes an mls-rs member
            mix.sam_commit("sam", remove=[dave.leaf_index()])
            del mix.rs["dave"]
        elif step == 3:  # mls-rs removes a Samizdat member
            commit = alice.remove(carol.g.own_leaf_index)
            mix.deliver("alice", commit)
            assert not carol.g.active
            del mix.sam["carol"]
        elif step % 2:  # mls-rs update (path commit)
            committer = alice if step % 4 == 1 else bob
            name = "alice" if committer is alice else "bob"
            mix.deliver(name, committer.update())
        else:  # Samizdat update (path commit), PrivateMessage and PublicMessage
            mix.sam_commit("sam", public=step % 4 == 0)
        mix.check()
        mix.chat(f"step{step}")
    assert sam.g.epoch >= 13


def test_samizdat_creates_group_mlsrs_joins() -> None:
    mix = Mixed()
    sam = Party("sam", now=NOW)
    sam.group = Group.create(1, b"samizdat-group", sam.identity, sam.rng, NOW)
    mix.sam["sam"] = sam
    alice, bob = RsMember.new(b"alice"), RsMember.new(b"bob")
    kim = Party("kim", now=NOW)
    kim_bundle = kim.key_package()
    result = sam.g.commit(sam.rng, NOW, add=[alice.key_package(), bob.key_package(), kim_bundle])
    sam.g.merge_pending_commit()
    assert result.welcome is not None
    alice.join(result.welcome)
    bob.join(result.welcome, result.ratchet_tree)
    kim.group = Group.join(result.welcome, kim_bundle)
    mix.rs = {"alice": alice, "bob": bob}
    mix.sam["kim"] = kim
    mix.check()
    mix.chat("hello")

    eve = RsMember.new(b"eve")
    for step in range(11):
        if step == 0:
            commit, welcome = alice.add([eve.key_package()])
            assert welcome is not None
            mix.deliver("alice", commit)
            eve.join(welcome)
            mix.rs["eve"] = eve
        elif step == 1:
            mix.sam_commit("kim", remove=[eve.leaf_index()])
            del mix.rs["eve"]
        elif step % 3 == 0:
            mix.deliver("bob", bob.update())
        elif step % 3 == 1:
            mix.sam_commit("sam")
        else:
            mix.sam_commit("kim", public=True)
        mix.check()
        mix.chat(f"step{step}")
    assert sam.g.epoch >= 12
