"""The hostile member: attacks an insider (a member or ex-member of a group)
can make with the keys it legitimately held, run against full client engines
over real relays (SPEC.md §10.7)."""

from harness.hostile.attacks import ATTACKS, AttackRecord, HostileMember, check_insider

__all__ = ["ATTACKS", "AttackRecord", "HostileMember", "check_insider"]
