"""In-memory multi-party MLS harness (STYLE.md convention 7).

``Party`` is one member; ``Harness`` owns a list of them and a fake ordering
relay: every handshake message is delivered to every other member in one
global order, exactly as a Samizdat ordering relay would.  ``deliver_all``
has a loop guard so a bug cannot spin forever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harness.conformance import seeded_rng as make_rng
from protocol.mls.crypto import get_suite
from protocol.mls.events import GroupEvent
from protocol.mls.group import CommitResult, Group
from protocol.mls.key_package import KeyPackageBundle, SigningIdentity, create_key_package

NOW = 1_790_000_000


@dataclass
class Party:
    name: str
    suite_id: int = 1
    now: int = NOW
    rng: Callable[[int], bytes] = field(init=False)
    identity: SigningIdentity = field(init=False)
    group: Group | None = None
    received: list[GroupEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = make_rng(self.name.encode())
        self.identity = SigningIdentity.generate(
            get_suite(self.suite_id), self.name.encode(), self.rng
        )

    def key_package(self) -> KeyPackageBundle:
        return create_key_package(get_suite(self.suite_id), self.identity, self.now, self.rng)

    @property
    def g(self) -> Group:
        assert self.group is not None, f"{self.name} is not in a group"
        return self.group


class Harness:
    """N parties in one group behind an in-order fake relay."""

    def __init__(self, names: list[str], suite_id: int = 1) -> None:
        self.parties = {n: Party(n, suite_id) for n in names}
        creator = self.parties[names[0]]
        creator.group = Group.create(
            suite_id, b"group-" + names[0].encode(), creator.identity, creator.rng, NOW
        )
        for name in names[1:]:
            self.add(names[0], name)

    def __getitem__(self, name: str) -> Party:
        return self.parties[name]

    def members(self) -> list[Party]:
        return [p for p in self.parties.values() if p.group is not None and p.group.active]

    def broadcast(self, sender: str, message: bytes) -> None:
        """Deliver ``message`` to every member but the sender, in order."""
        for party in self.members():
            if party.name != sender:
                party.received.extend(party.g.process(message))

    def commit(self, committer: str, **kwargs: object) -> CommitResult:
        party = self.parties[committer]
        result = party.g.commit(party.rng, NOW, **kwargs)  # type: ignore[arg-type]
        self.broadcast(committer, result.commit)
        party.g.process(result.commit)  # our own commit, echoed in order: merges
        return result

    def add(self, committer: str, joiner: str) -> None:
        bundle = self.parties[joiner].key_package()
        result = self.commit(committer, add=[bundle])
        assert result.welcome is not None
        self.parties[joiner].group = Group.join(result.welcome, bundle)

    def assert_converged(self) -> None:
        members = self.members()
        auths = {p.g.epoch_authenticator for p in members}
        epochs = {p.g.epoch for p in members}
        exports = {p.g.export_secret("test", b"ctx", 32) for p in members}
        assert len(auths) == len(epochs) == len(exports) == 1, (epochs, len(auths))
