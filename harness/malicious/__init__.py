"""The malicious relay: a seeded, fault-injecting proxy in front of a real relay."""

from harness.malicious.faults import KINDS, ConnInfo, Fault, FaultError, FaultEvent, FaultLog
from harness.malicious.proxy import STRIDE, MaliciousRelay, TrafficStats

__all__ = [
    "KINDS",
    "STRIDE",
    "ConnInfo",
    "Fault",
    "FaultError",
    "FaultEvent",
    "FaultLog",
    "MaliciousRelay",
    "TrafficStats",
]
