"""A stateful model test of the Group API (Hypothesis RuleBasedStateMachine).

Up to four members of one suite-1 group commit (adds, removes, path
updates, pending proposals, competing commits), propose and exchange
application messages, delivered late and out of order.  An adversarial
member meanwhile injects mutated, replayed, stale-epoch and forged messages
(content signed with its own key but claiming another member's leaf, an
outsider's group with the same id, an external proposal with no
external_senders).

Handshakes go through one in-order "relay" as in Samizdat; application
messages wait in per-recipient queues and are delivered in any order.

Invariants, after every step:

* members in the same epoch agree on the epoch authenticator and on who
  the members are, and the members are exactly the parties the model says;
* every accepted application message is one a member really sent, credited
  to that member's credential (so none is accepted from a non-member or
  from the wrong member, even when its leaf is reused);
* a valid application message within the kept epochs is accepted exactly
  once;
* rejected input changes nothing (``to_bytes`` and the pending commit).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol.errors import RemoteError
from protocol.mls.errors import StateError
from protocol.mls.events import (
    ApplicationMessageReceived,
    GroupEvent,
    PendingCommitDiscarded,
    RemovedFromGroup,
)
from protocol.mls.framing import protect_private, sign_content
from protocol.mls.group import Group, external_proposal
from protocol.mls.group_state import MAX_PAST_EPOCHS
from protocol.mls.messages import (
    ContentType,
    FramedContent,
    MLSMessage,
    Proposal,
    Remove,
    Sender,
    WireFormat,
)
from tests.mls_harness import NOW, Harness, Party

NAMES = ["a", "b", "c", "d", "e"]
MAX_MEMBERS = 4
_pick = st.integers(min_value=0, max_value=1_000)


@dataclass(frozen=True)
class Sent:
    """An application message a member really sent."""

    name: str
    identity: bytes
    signature_key: bytes
    data: bytes
    epoch: int


class GroupMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.parties = {n: Party(n) for n in NAMES}
        self.joined: dict[str, int] = {}  # name -> epoch it (last) joined at
        self.sent: dict[bytes, Sent] = {}
        self.inbox: dict[str, list[bytes]] = {n: [] for n in NAMES}
        self.accepted: dict[str, list[bytes]] = {n: [] for n in NAMES}
        self.recent: list[bytes] = []  # handshakes and app messages, for mutation
        self.counter = 0

    # -- model helpers ------------------------------------------------------------------

    def members(self) -> list[Party]:
        return [p for p in self.parties.values() if p.group is not None and p.group.active]

    def outsiders(self) -> list[Party]:
        return [p for p in self.parties.values() if p.group is None or not p.group.active]

    @staticmethod
    def choose(items: list[Party], index: int) -> Party:
        return items[index % len(items)]

    def remember(self, message: bytes) -> None:
        self.recent = [*self.recent[-15:], message]

    def broadcast(self, sender: Party, message: bytes) -> None:
        """The ordering relay: every other member processes it, in order."""
        for party in self.members():
            if party is not sender:
                events = party.g.process(message, now=NOW)
                self.check_events(party, events)
                self.accepted[party.name].append(message)
        self.remember(message)

    def check_events(self, party: Party, events: list[GroupEvent]) -> None:
        for item in events:
            if isinstance(item, ApplicationMessageReceived):
                raise AssertionError(f"{party.name}: application event from a handshake")

    def after_epoch_change(self) -> None:
        for party in self.parties.values():
            if party.group is not None and not party.group.active:
                self.inbox[party.name].clear()  # a removed member reads no more

    def expect_rejected(self, party: Party, message: bytes) -> None:
        """``message`` must be refused by ``party`` (an active member) as the
        remote's fault, and change nothing."""
        group = party.g
        before, pending = group.to_bytes(), group.has_pending_commit
        try:
            events = group.process(message, now=NOW)
        except RemoteError:
            assert group.to_bytes() == before, "a rejected message changed the state"
            assert group.has_pending_commit == pending
            return
        raise AssertionError(f"{party.name} accepted hostile input: {events}")

    # -- setup --------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        creator = self.parties["a"]
        creator.group = Group.create(1, b"stateful", creator.identity, creator.rng, NOW)
        self.joined["a"] = 0
        for name in ("b", "c"):
            self.do_commit(creator, add=self.parties[name])

    # -- honest behaviour ---------------------------------------------------------------

    def do_commit(
        self,
        committer: Party,
        *,
        add: Party | None = None,
        remove: Party | None = None,
        public: bool = False,
    ) -> None:
        bundle = add.key_package() if add is not None else None
        result = committer.g.commit(
            committer.rng,
            NOW,
            add=[bundle] if bundle is not None else [],
            remove=[remove.g.own_leaf_index] if remove is not None else [],
            public=public,
        )
        self.broadcast(committer, result.commit)
        committer.g.process(result.commit, now=NOW)  # echoed in order: merges
        assert not committer.g.has_pending_commit
        if add is not None:
            assert result.welcome is not None and bundle is not None
            add.group = Group.join(result.welcome, bundle)
            self.joined[add.name] = add.g.epoch
            self.inbox[add.name].clear()
            self.accepted[add.name].clear()
        self.after_epoch_change()

    @rule(
        kind=st.sampled_from(["path", "public", "add", "remove", "replace"]),
        who=_pick,
        other=_pick,
        joiner=_pick,
    )
    def commit(self, kind: str, who: int, other: int, joiner: int) -> None:
        """A commit (with every pending proposal): a bare path update, as a
        PublicMessage too, an add, a remove, or a remove plus an add in one
        commit, where the newcomer takes the freed leaf while the removed
        member's messages are still queued."""
        members = self.members()
        committer = self.choose(members, who)
        others = [p for p in members if p is not committer]
        outsiders = self.outsiders()
        if kind == "add" and len(members) < MAX_MEMBERS:
            self.do_commit(committer, add=self.choose(outsiders, joiner))
        elif kind == "remove" and len(members) > 2:
            self.do_commit(committer, remove=self.choose(others, other))
        elif kind == "replace" and others:
            gone = self.choose(others, other)
            self.send_application(members.index(gone))
            self.do_commit(committer, add=self.choose(outsiders, joiner), remove=gone)
        else:
            self.do_commit(committer, public=kind == "public")

    @rule(who=_pick, joiner=_pick)
    def external_join(self, who: int, joiner: int) -> None:
        """An outsider joins by external commit from a member's GroupInfo."""
        if len(self.members()) >= MAX_MEMBERS:
            return
        info = self.choose(self.members(), who).g.group_info()
        newcomer = self.choose(self.outsiders(), joiner)
        group, commit = Group.join_external(info, newcomer.identity, newcomer.rng, NOW)
        self.broadcast(newcomer, commit)
        newcomer.group = group
        self.joined[newcomer.name] = group.epoch
        self.inbox[newcomer.name].clear()
        self.accepted[newcomer.name].clear()
        self.after_epoch_change()

    @rule(who=_pick)
    def restart(self, who: int) -> None:
        """A member's client restarts from its stored state."""
        party = self.choose(self.members(), who)
        party.group = Group.from_bytes(party.g.to_bytes())

    @rule(who=_pick)
    def propose_update(self, who: int) -> None:
        proposer = self.choose(self.members(), who)
        self.broadcast(proposer, proposer.g.propose_update(proposer.rng))

    @rule(who=_pick, victim=_pick)
    def propose_remove(self, who: int, victim: int) -> None:
        members = self.members()
        if len(members) <= 2:
            return
        proposer = self.choose(members, who)
        target = self.choose(members, victim)
        proposal = Proposal.of(Remove(target.g.own_leaf_index))
        self.broadcast(proposer, proposer.g.propose(proposal, proposer.rng))

    @rule(first=_pick, second=_pick)
    def competing_commits(self, first: int, second: int) -> None:
        """Two members commit in the same epoch; the relay orders ``first``'s
        first, so ``second``'s is void and must be refused everywhere."""
        members = self.members()
        if len(members) < 2:
            return
        winner = self.choose(members, first)
        loser = self.choose([p for p in members if p is not winner], second)
        losing = loser.g.commit(loser.rng, NOW).commit
        winning = winner.g.commit(winner.rng, NOW).commit
        events = loser.g.process(winning, now=NOW)
        assert any(isinstance(e, PendingCommitDiscarded) for e in events)
        assert not loser.g.has_pending_commit
        self.accepted[loser.name].append(winning)
        for party in self.members():
            if party is not winner and party is not loser:
                party.g.process(winning, now=NOW)
                self.accepted[party.name].append(winning)
        winner.g.process(winning, now=NOW)
        self.remember(winning)
        self.after_epoch_change()
        for party in self.members():
            self.expect_rejected(party, losing)

    @rule(who=_pick)
    def send_application(self, who: int) -> None:
        sender = self.choose(self.members(), who)
        self.counter += 1
        data = f"{sender.name}#{self.counter}".encode()
        message = sender.g.encrypt(data, sender.rng)
        self.sent[message] = Sent(
            sender.name,
            sender.name.encode(),
            sender.identity.signature_pub,
            data,
            sender.g.epoch,
        )
        for party in self.members():
            if party is not sender:
                self.inbox[party.name].append(message)
        self.remember(message)

    @rule(who=_pick, which=_pick, store_fails=st.booleans())
    def deliver_application(self, who: int, which: int, store_fails: bool) -> None:
        """Deliver one queued message, in any order, possibly epochs late;
        perhaps first once more whose result the caller fails to store."""
        ready = [p for p in self.members() if self.inbox[p.name]]
        if ready:
            party = self.choose(ready, who)
            queue = self.inbox[party.name]
            self.deliver(party, queue.pop(which % len(queue)), store_fails)

    @rule(who=_pick, shuffle=st.randoms(use_true_random=False))
    def deliver_burst(self, who: int, shuffle: random.Random) -> None:
        """A member comes online: everything queued for it, shuffled."""
        ready = [p for p in self.members() if self.inbox[p.name]]
        if ready:
            party = self.choose(ready, who)
            queue, self.inbox[party.name] = self.inbox[party.name], []
            shuffle.shuffle(queue)
            for message in queue:
                self.deliver(party, message)

    def deliver(self, party: Party, message: bytes, store_fails: bool = False) -> None:
        sent = self.sent[message]
        age = party.g.epoch - sent.epoch
        if self.joined[party.name] > sent.epoch or age > MAX_PAST_EPOCHS:
            event("application message too old for the recipient: refused")
            self.expect_rejected(party, message)  # no keys for that epoch (any more)
            return
        if store_fails:
            # accepted, but the caller could not persist it: back to the snapshot
            snapshot, before = party.g.snapshot(), party.g.to_bytes()
            party.g.process(message, now=NOW)
            party.g.restore(snapshot)
            assert party.g.to_bytes() == before
        (received,) = party.g.process(message, now=NOW)
        assert isinstance(received, ApplicationMessageReceived)
        assert received.data == sent.data
        assert received.epoch == sent.epoch
        assert received.sender_identity == sent.identity, (received, sent)
        assert received.sender_signature_key == sent.signature_key
        self.accepted[party.name].append(message)
        if age:
            event("late application message accepted")
            holders = [key for i, _, key in party.g.members() if i == received.sender]
            if not holders:
                event("late application message from a now blank leaf")
            elif holders[0] != sent.signature_key:
                event("late application message from a leaf someone else holds now")

    @rule(who=_pick)
    def removed_member_cannot_send(self, who: int) -> None:
        gone = [p for p in self.outsiders() if p.group is not None]
        if not gone:
            return
        party = self.choose(gone, who)
        before = party.g.to_bytes()
        try:
            party.g.encrypt(b"from outside", party.rng)
        except StateError:
            assert party.g.to_bytes() == before
            return
        raise AssertionError("a removed member could still encrypt")

    # -- the adversary ---------------------------------------------------------------

    @rule(who=_pick, which=_pick, position=_pick, xor=st.integers(min_value=1, max_value=255))
    def inject_mutated(self, who: int, which: int, position: int, xor: int) -> None:
        if not self.recent:
            return
        sample = bytearray(self.recent[which % len(self.recent)])
        sample[position % len(sample)] ^= xor
        self.expect_rejected(self.choose(self.members(), who), bytes(sample))

    @rule(who=_pick, which=_pick)
    def inject_replay(self, who: int, which: int) -> None:
        """Anything a member already accepted (application, proposal, or a
        commit of an older epoch) is refused the second time."""
        ready = [p for p in self.members() if self.accepted[p.name]]
        if not ready:
            return
        party = self.choose(ready, who)
        history = self.accepted[party.name]
        self.expect_rejected(party, history[which % len(history)])

    @rule(who=_pick, victim=_pick, as_proposal=st.booleans())
    def inject_forged_sender(self, who: int, victim: int, as_proposal: bool) -> None:
        """A member can derive every leaf's ratchet keys, so it can encrypt a
        message claiming another member's leaf; only the signature (made
        with its own key) betrays it (RFC 9420 §6.1)."""
        members = self.members()
        if len(members) < 2:
            return
        adversary = self.choose(members, who)
        others = [p for p in members if p is not adversary]
        claimed = self.choose(others, victim)
        state = adversary.g.state
        content: bytes | Proposal = b"forged words"
        content_type = ContentType.APPLICATION
        if as_proposal:
            content = Proposal.of(Remove(adversary.g.own_leaf_index))
            content_type = ContentType.PROPOSAL
        framed = FramedContent(
            state.context.group_id,
            state.context.epoch,
            Sender.member(claimed.g.own_leaf_index),
            b"",
            content_type,
            content,
        )
        auth = sign_content(
            state.suite,
            WireFormat.MLS_PRIVATE_MESSAGE,
            framed,
            state.context,
            state.signature_priv,
        )
        forged = protect_private(
            state.suite,
            auth,
            state.secret_tree.copy(),  # the adversary's own state stays as it was
            state.sender_data_secret,
            adversary.rng,
        )
        message = MLSMessage.of(forged).to_bytes()
        for party in members:
            if party is not adversary:
                self.expect_rejected(party, message)

    @rule(who=_pick, outsider=_pick)
    def inject_from_outsider(self, who: int, outsider: int) -> None:
        """A non-member: its own group under this group's id, and an
        external proposal though the group lists no external senders."""
        target = self.choose(self.members(), who)
        stranger = Party(f"stranger{outsider}")
        fake = Group.create(1, target.g.group_id, stranger.identity, stranger.rng, NOW)
        self.expect_rejected(target, fake.encrypt(b"let me in", stranger.rng))
        proposal = external_proposal(
            1,
            target.g.group_id,
            target.g.epoch,
            Proposal.of(Remove(target.g.own_leaf_index)),
            0,
            stranger.identity.signature_priv,
        )
        self.expect_rejected(target, proposal)

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def members_agree(self) -> None:
        members = self.members()
        by_epoch: dict[int, set[bytes]] = {}
        for party in self.parties.values():
            if party.group is not None:
                by_epoch.setdefault(party.g.epoch, set()).add(party.g.epoch_authenticator)
        assert all(len(auths) == 1 for auths in by_epoch.values()), by_epoch
        assert len({p.g.epoch for p in members}) == 1
        names = sorted(p.name.encode() for p in members)
        for party in members:
            assert sorted(identity for _, identity, _ in party.g.members()) == names
            assert not party.g.has_pending_commit

    @invariant()
    def state_round_trips(self) -> None:
        for party in self.members():
            data = party.g.to_bytes()
            assert Group.from_bytes(data).to_bytes() == data


def test_losing_committer_still_processes_the_winning_commit() -> None:
    """Found by the machine above (``competing_commits`` after a pending
    Remove of the loser): a member whose own commit left a cached proposal
    out (it cannot remove itself) must keep that proposal cached, because the
    commit that wins the race may reference it (RFC 9420 §12.4.2).  If the
    loser forgets it, it cannot process the winner and is stuck on a fork."""
    h = Harness(["a", "b", "c"])
    a, b, c = h["a"], h["b"], h["c"]
    h.broadcast("a", a.g.propose(Proposal.of(Remove(b.g.own_leaf_index)), a.rng))
    b.g.commit(b.rng, NOW)  # loses the race: the relay orders c's first
    winning = c.g.commit(c.rng, NOW).commit
    events = b.g.process(winning, now=NOW)
    assert any(isinstance(e, PendingCommitDiscarded) for e in events)
    assert any(isinstance(e, RemovedFromGroup) for e in events)
    assert not b.g.active
    a.g.process(winning, now=NOW)
    c.g.process(winning, now=NOW)
    assert a.g.epoch_authenticator == c.g.epoch_authenticator


TestGroupStateMachine = GroupMachine.TestCase
TestGroupStateMachine.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
