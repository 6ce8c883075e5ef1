"""Insider attacks against real engines, and the ``insider`` check.

Theory of operation
-------------------
Each attack is one scenario action, ``do = "attack"`` with a ``kind`` from
:data:`ATTACKS`.  The attacker is a member engine of the scenario; it uses
only what it legitimately holds or held: its group state (copied, so its own
engine is not disturbed unless the attack says so), the group's mailbox
capabilities, its contacts' inboxes and KeyPackages.  The attack is made,
the world is given ``observe`` seconds, and then the *victim's* state is
compared with what SPEC.md promises.  The outcome is recorded as an
:class:`AttackRecord`: ``held`` (the promise held: the attack was refused or
had no effect) or ``broken`` (the attack worked), with what was attempted,
what the clients did and the promise, for the report.

Where the attacker needs a relay's help to time a message (a message sent
in one epoch and delivered after a membership change), the harness plays
the relay: it hands the withheld envelope to the victim's receive path, as a
relay that held it back would deliver it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from unittest import mock

from client.engine import Engine, EngineError
from harness.scenario.checks import CheckResult
from protocol.app.messages import AppMessage, Text
from protocol.errors import SamizdatError
from protocol.mls import group as group_module
from protocol.mls import group_join
from protocol.mls.group import Group
from protocol.mls.key_package import SigningIdentity, sign_leaf_node
from protocol.mls.key_schedule import confirmation_tag as real_confirmation_tag
from protocol.mls.messages import (
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    PSKType,
    Remove,
    Update,
)
from protocol.mls.tree_structs import LeafNodeSource

OBSERVE = 4.0  # seconds the world gets to react before the outcome is read


def _rng(n: int) -> bytes:
    return os.urandom(n)


@dataclass
class AttackRecord:
    kind: str
    attacker: str
    victim: str
    attempted: str
    promise: str
    observed: str = ""
    outcome: str = "error"  # held | broken | error

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Attack:
    attempted: str
    promise: str


ATTACKS: dict[str, _Attack] = {
    "welcome_hijack": _Attack(
        "after being removed, the attacker sends the victim a Welcome to a group with the "
        "same group_id (the old relay list, the attacker as a member)",
        "a Welcome never replaces an existing conversation (RFC 9420 §12.4.3.1: the "
        "group_id must be new); SPEC §8.11",
    ),
    "poison_proposal": _Attack(
        "the attacker proposes a PreSharedKey nobody has, then the admin removes the attacker",
        "no cached proposal blocks a commit: the committer drops what it cannot validate "
        "(RFC 9420 §12.2); SPEC §4.3",
    ),
    "key_reuse_update": _Attack(
        "the attacker proposes an Update whose leaf reuses the victim's encryption key, then "
        "an honest member commits",
        "encryption keys are unique across leaves, Updates included (RFC 9420 §7.3, "
        "§12.1.2); SPEC §4.3",
    ),
    "foreign_remove": _Attack(
        "the attacker (not an admin) proposes to remove the victim, then an honest member commits",
        "only a member's own Remove is auto-committed; removing others needs the admin "
        "policy; SPEC §8.3",
    ),
    "external_remove": _Attack(
        "the attacker exports the group's GroupInfo and joins by external commit with a new "
        "identity, removing the victim in the same commit",
        "an external commit may remove only the joiner's own earlier leaf "
        "(RFC 9420 §12.4.3.2); SPEC §4.3",
    ),
    "late_misattribution": _Attack(
        "the attacker encrypts a message in epoch N; it is removed, a newcomer takes its leaf, "
        "and a relay delivers the held message to the victim afterwards",
        "a message is attributed to its sender's credential in the epoch it was sent "
        "(RFC 9420 §6.1); SPEC §4.4",
    ),
    "forged_removal": _Attack(
        "the attacker commits the victim's removal with a forged confirmation tag",
        "the victim keeps its conversation and history and is told who claims it was "
        "removed (RFC 9420 §12.4.2); SPEC §8.11",
    ),
}


class HostileMember:
    """A mixin for the scenario world: the ``attack`` action."""

    attacks: list[AttackRecord]
    members: dict[str, Any]
    sent: list[Any]
    groups: dict[str, Any]

    # The world (harness.scenario.world.World) provides engine(name),
    # group(label) and befriend(a, b); only it mixes this class in.
    if TYPE_CHECKING:

        def engine(self, name: str) -> Engine: ...

        def group(self, label: str) -> Any: ...

        async def befriend(self, a: str, b: str, timeout: float = 60.0) -> None: ...

    async def do_attack(self, a: dict[str, Any]) -> str:
        kind = str(a.get("kind", ""))
        if kind not in ATTACKS:
            raise EngineError(f"unknown attack {kind!r} (one of {', '.join(sorted(ATTACKS))})")
        rec = self.group(str(a.get("group", "g")))
        attacker = str(a.get("by", "m1"))
        victim = str(a.get("victim", "m2"))
        spec = ATTACKS[kind]
        record = AttackRecord(kind, attacker, victim, spec.attempted, spec.promise)
        if not hasattr(self, "attacks"):
            self.attacks = []
        self.attacks.append(record)
        run: Callable[..., Awaitable[tuple[bool, str]]] = getattr(self, "_attack_" + kind)
        try:
            held, observed = await run(rec, attacker, victim, a)
        except (SamizdatError, TimeoutError, OSError, RuntimeError, AssertionError) as exc:
            record.observed = f"the attack could not be completed: {type(exc).__name__}: {exc}"
            record.outcome = "error"
            return record.observed
        record.outcome = "held" if held else "broken"
        record.observed = observed
        return f"{kind}: {record.outcome}: {observed}"

    # -- helpers ------------------------------------------------------------------------------

    def _copy(self, name: str, conv_id: bytes) -> Group:
        """A scratch copy of ``name``'s group: attacks never disturb the engine."""
        return Group.from_bytes(self.engine(name).groups[conv_id].to_bytes())

    def _leaf_of(self, group: Group, name: str) -> int:
        key = self.engine(name).identity.signature_pub
        leaf = next((i for i, _, k in group.members() if k == key), None)
        if leaf is None:
            raise EngineError(f"{name} is not a member")
        return leaf

    async def _observe(self, a: dict[str, Any]) -> None:
        await asyncio.sleep(float(a.get("observe", OBSERVE)))

    def _state(self, name: str, conv_id: bytes) -> tuple[int, bytes, set[bytes]]:
        group = self.engine(name).groups.get(conv_id)
        if group is None:
            return (-1, b"", set())
        return (group.epoch, group.epoch_authenticator, {k for _, _, k in group.members()})

    async def _converged(self, names: list[str], conv_id: bytes, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            auths = {self._state(n, conv_id)[1] for n in names}
            if len(auths) == 1 and b"" not in auths:
                return True
            await asyncio.sleep(0.2)
        return False

    def _honest(self, rec: Any, *exclude: str) -> list[str]:
        """The members still in the group by their own account (a member told
        it was removed, e.g. by a forged removal, no longer follows it)."""

        def active(n: str) -> bool:
            group = self.engine(n).groups.get(rec.conv_id)
            return group is not None and group.active

        return sorted(n for n in rec.members if n not in exclude and active(n))

    def _name_of(self, key: bytes) -> str:
        for name in self.members:
            if self.engine(name).identity.signature_pub == key:
                return name
        return key.hex()[:8]

    # -- the attacks ---------------------------------------------------------------------------

    async def _attack_welcome_hijack(
        self, rec: Any, attacker: str, victim: str, a: dict[str, Any]
    ) -> tuple[bool, str]:
        await self.befriend(attacker, victim)
        ea = self.engine(attacker)
        meta_ext = ea.groups[rec.conv_id].extensions
        admin = str(a.get("admin", rec.creator))
        await self.engine(admin).remove_member(rec.conv_id, ea.identity.signature_pub)
        rec.members.discard(attacker)
        honest = self._honest(rec)
        await self._converged(honest, rec.conv_id)
        before = self._state(victim, rec.conv_id)
        # A fresh group that reuses the old group_id and the old relay list.
        fake = Group.create(1, rec.conv_id, ea.signer, _rng, int(time.time()), extensions=meta_ext)
        contact = ea.contact(self.engine(victim).identity.signature_pub)
        assert contact is not None and contact.key_packages, "no KeyPackage of the victim"
        result = fake.commit(_rng, int(time.time()), add=[contact.key_packages.pop(0)])
        fake.merge_pending_commit()
        assert result.welcome is not None
        await ea._post_to_inboxes(result.welcome, contact.inboxes, rec.conv_id)
        await self._observe(a)
        # The removal is followed by a second commit that moves the group's
        # mailboxes (SPEC.md §8.3): the victim may still be reading it when
        # the observation window ends, so give it time to catch up with the
        # admin (bounded).  A replaced group never does: it is another group.
        await self._converged([victim, admin], rec.conv_id)
        after = self._state(victim, rec.conv_id)
        admin_state = self._state(admin, rec.conv_id)
        if after[1] == admin_state[1] and after[0] >= before[0]:
            return True, (
                f"the victim stayed in epoch {after[0]} with the honest members; "
                "the Welcome did not replace the conversation"
            )
        return False, (
            f"the victim's group went from epoch {before[0]} to {after[0]} and no longer "
            "matches the honest members: the Welcome replaced it"
        )

    async def _attack_poison_proposal(
        self, rec: Any, attacker: str, victim: str, a: dict[str, Any]
    ) -> tuple[bool, str]:
        ea = self.engine(attacker)
        group = ea.groups[rec.conv_id]
        psk = PreSharedKeyID(PSKType.EXTERNAL, psk_id=_rng(16), psk_nonce=_rng(32))
        message = group.propose(Proposal.of(PreSharedKey(psk)), _rng)
        await ea._post_mls(rec.conv_id, message, b"")
        await self._observe(a)
        admin = str(a.get("admin", rec.creator))
        try:
            await asyncio.wait_for(
                self.engine(admin).remove_member(rec.conv_id, ea.identity.signature_pub), 30
            )
        except (SamizdatError, TimeoutError) as exc:
            return False, f"the admin could not remove the attacker: {exc}"
        rec.members.discard(attacker)
        honest = self._honest(rec)
        if not await self._converged(honest, rec.conv_id):
            return False, "after the removal the honest members did not converge"
        members = self._state(victim, rec.conv_id)[2]
        if ea.identity.signature_pub in members:
            return False, "the attacker is still a member"
        return True, f"the attacker was removed; {len(honest)} members converged"

    async def _attack_key_reuse_update(
        self, rec: Any, attacker: str, victim: str, a: dict[str, Any]
    ) -> tuple[bool, str]:
        ea = self.engine(attacker)
        group = ea.groups[rec.conv_id]
        state = group.state
        victim_leaf = self._leaf_of(group, victim)
        stolen = group.member_leaf(victim_leaf).encryption_key
        own = group.member_leaf(group.own_leaf_index)
        leaf = dataclasses.replace(
            own,
            encryption_key=stolen,
            leaf_node_source=LeafNodeSource.UPDATE,
            lifetime=None,
            parent_hash=None,
        )
        leaf = sign_leaf_node(
            state.suite, leaf, state.signature_priv, group.group_id, group.own_leaf_index
        )
        message = group.propose(Proposal.of(Update(leaf)), _rng)
        await ea._post_mls(rec.conv_id, message, b"")
        await self._observe(a)
        committer = str(a.get("admin", rec.creator))
        try:
            await asyncio.wait_for(
                self.engine(committer).set_disappearing(rec.conv_id, 7 * 86_400_000), 30
            )
        except (SamizdatError, TimeoutError) as exc:
            return False, f"the honest commit failed: {exc}"
        await self._observe(a)
        tree = self.engine(committer).groups[rec.conv_id]
        keys = [tree.member_leaf(i).encryption_key for i, _, _ in tree.members()]
        if len(set(keys)) != len(keys):
            return False, "two leaves now share an encryption key: no one can join"
        honest = self._honest(rec, attacker)
        if not await self._converged(honest, rec.conv_id):
            return False, "the honest members did not converge after the commit"
        return True, "the Update was refused; the leaves' encryption keys stay unique"

    async def _attack_foreign_remove(
        self, rec: Any, attacker: str, victim: str, a: dict[str, Any]
    ) -> tuple[bool, str]:
        ea = self.engine(attacker)
        group = ea.groups[rec.conv_id]
        message = group.propose(Proposal.of(Remove(self._leaf_of(group, victim))), _rng)
        await ea._post_mls(rec.conv_id, message, b"")
        await self._observe(a)
        committer = str(a.get("admin", rec.creator))
        try:
            await asyncio.wait_for(
                self.engine(committer).set_disappearing(rec.conv_id, 5 * 86_400_000), 30
            )
        except (SamizdatError, TimeoutError) as exc:
            return False, f"the honest commit failed: {exc}"
        await self._observe(a)
        vkey = self.engine(victim).identity.signature_pub
        removed_for = [
            n for n in self._honest(rec, victim) if vkey not in self._state(n, rec.conv_id)[2]
        ]
        if removed_for:
            return False, f"the victim was removed (as seen by {', '.join(removed_for)})"
        return True, "the victim is still a member for everyone"

    async def _attack_external_remove(
        self, rec: Any, attacker: str, victim: str, a: dict[str, Any]
    ) -> tuple[bool, str]:
        ea = self.engine(attacker)
        group = self._copy(attacker, rec.conv_id)
        info = group.group_info(with_tree=True, external_pub=True)
        joiner = SigningIdentity.generate(group.suite, b"external-" + _rng(8), _rng)
        # A hostile client skips its own library's refusal to build this
        # commit (§12.4.3.2); receivers must refuse it on their own.
        # (the builder's check lives in group_join since group.py was split)
        with mock.patch.object(group_join, "check_external_joiner", lambda *_: None):
            _, commit = Group.join_external(
                info, joiner, _rng, int(time.time()), remove_prior=self._leaf_of(group, victim)
            )
        before = {n: self._state(n, rec.conv_id) for n in self._honest(rec, attacker)}
        await ea._post_mls(rec.conv_id, commit, b"")
        await self._observe(a)
        vkey = self.engine(victim).identity.signature_pub
        changed = [
            n
            for n, (_, auth, members) in before.items()
            if self._state(n, rec.conv_id)[1] != auth or vkey not in self._state(n, rec.conv_id)[2]
        ]
        if any(vkey not in self._state(n, rec.conv_id)[2] for n in before):
            return False, "the external joiner removed the victim"
        if changed:
            return False, f"the external commit was applied by {', '.join(changed)}"
        return True, "every member refused the external commit; the victim stays"

    async def _attack_late_misattribution(
        self, rec: Any, attacker: str, victim: str, a: dict[str, Any]
    ) -> tuple[bool, str]:
        ea, ev = self.engine(attacker), self.engine(victim)
        newcomer = str(a.get("newcomer", ""))
        if not newcomer or newcomer in rec.members:
            raise EngineError("late_misattribution needs a `newcomer` who is not a member yet")
        group = self._copy(attacker, rec.conv_id)
        canary = f"HELD-{_rng(4).hex()}"
        from harness.scenario.world import Sent  # the world imports this module

        text = f"{canary} from {attacker}"
        sent_ms = int(time.time() * 1000)
        message = AppMessage.new(Text(text), rng=_rng, now_ms=sent_ms, sender_seq=10_000)
        # a real message of the attacker's: no_forgery must know it was sent
        # (by whom); no member is expected to receive it (the harness hands it
        # to the victim alone)
        self.sent.append(Sent(message.message_id, rec.label, attacker, "text", text, sent_ms, []))
        ciphertext = group.encrypt(message.to_bytes(), _rng)
        held = ea._sealed_items(rec.conv_id, ciphertext, message.message_id)
        admin = str(a.get("admin", rec.creator))
        await self.engine(admin).remove_member(rec.conv_id, ea.identity.signature_pub)
        rec.members.discard(attacker)
        await self.befriend(admin, newcomer)
        contact = self.engine(admin).contact(self.engine(newcomer).identity.signature_pub)
        assert contact is not None
        await self.engine(admin).add_members(rec.conv_id, [contact])
        rec.members.add(newcomer)
        deadline = time.monotonic() + 30
        while rec.conv_id not in self.engine(newcomer).groups and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await self._converged(self._honest(rec), rec.conv_id)
        # The relay releases the envelope it held back.
        for item in held:
            async with ev._lock:
                await ev._receive(item.relay_url, item.mailbox_id, 0, item.sealed)
        await self._observe(a)
        shown = [e for e in ev.history(rec.conv_id) if canary in e.text]
        if not shown:
            return True, "the late message was not shown (it could not be attributed)"
        who = {self._name_of(e.sender) for e in shown}
        if who == {attacker}:
            return True, f"the late message is shown from {attacker}, its real sender"
        return False, f"the late message is shown from {', '.join(sorted(who))}"

    async def _attack_forged_removal(
        self, rec: Any, attacker: str, victim: str, a: dict[str, Any]
    ) -> tuple[bool, str]:
        ea, ev = self.engine(attacker), self.engine(victim)
        group = self._copy(attacker, rec.conv_id)
        history_before = len(ev.history(rec.conv_id))
        real = real_confirmation_tag

        def forged(*args: Any) -> bytes:
            tag = real(*args)
            return bytes([tag[0] ^ 0xFF]) + tag[1:]

        with mock.patch.object(group_module, "confirmation_tag", forged):
            result = group.commit(_rng, int(time.time()), remove=[self._leaf_of(group, victim)])
        await ea._post_mls(rec.conv_id, result.commit, b"")
        await self._observe(a)
        conv = ev.conversation(rec.conv_id)
        if conv is None or rec.conv_id not in ev.groups:
            return False, "the victim's client deleted the conversation"
        if len(ev.history(rec.conv_id)) < history_before:
            return False, "the victim lost history"
        vkey = ev.identity.signature_pub
        if any(vkey not in self._state(n, rec.conv_id)[2] for n in self._honest(rec, victim)):
            return False, "the honest members applied the forged removal"
        display = ea.identity.name
        claims = [n.text for n in ev.notices if n.conversation == rec.conv_id]
        if ev.groups[rec.conv_id].active:
            return True, "the victim refused the forged commit and stays a member"
        named = [t for t in claims if display and display in t]
        if named:
            return True, f"the victim kept its history and was told: {named[-1]!r}"
        return False, "the victim believes it was removed and is not told by whom"


def check_insider(attacks: list[AttackRecord]) -> CheckResult:
    """``insider``: every attack of the scenario was refused (SPEC §10.7)."""
    if not attacks:
        return CheckResult("insider", "passed", "no insider attack in this scenario")
    broken = [r for r in attacks if r.outcome != "held"]
    held = len(attacks) - len(broken)
    summary = f"{held}/{len(attacks)} attacks refused" + (
        "; " + "; ".join(f"{r.kind}: {r.outcome}: {r.observed}" for r in broken) if broken else ""
    )
    return CheckResult(
        "insider",
        "failed" if broken else "passed",
        summary,
        {"attacks": [r.to_json() for r in attacks]},
    )
