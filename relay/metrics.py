"""Aggregate relay metrics in the Prometheus text exposition format.

Only process-wide counters and gauges exist here: no label ever holds a
mailbox id, an address or a per-connection figure, so ``/metrics`` cannot be
used to follow one user.
"""

from __future__ import annotations

from collections import Counter

_HELP = {
    "samizdat_relay_connections": ("gauge", "Open WebSocket connections."),
    "samizdat_relay_connections_total": ("counter", "WebSocket connections accepted."),
    "samizdat_relay_sockets": ("gauge", "Open client sockets (WebSocket and HTTP)."),
    "samizdat_relay_sockets_refused_total": (
        "counter",
        "Client sockets closed at once: over the socket budget or out of descriptors.",
    ),
    "samizdat_relay_requests_refused_total": (
        "counter",
        "HTTP requests and uploads refused by concurrency caps.",
    ),
    "samizdat_relay_timeouts_total": ("counter", "Requests closed for sending too slowly."),
    "samizdat_relay_frames_total": ("counter", "Client frames received, by type."),
    "samizdat_relay_errors_total": ("counter", "Error frames sent, by code."),
    "samizdat_relay_posts_total": ("counter", "Envelopes stored."),
    "samizdat_relay_duplicate_posts_total": ("counter", "Posts answered from the dedup index."),
    "samizdat_relay_deliveries_total": ("counter", "Deliver frames queued to subscribers."),
    "samizdat_relay_bytes_in_total": ("counter", "Envelope bytes stored."),
    "samizdat_relay_slow_consumers_total": ("counter", "Connections closed as slow consumers."),
    "samizdat_relay_rate_limited_total": ("counter", "Requests refused by rate limits."),
    "samizdat_relay_blob_chunks_uploaded_total": ("counter", "Blob chunks stored."),
    "samizdat_relay_blob_chunks_downloaded_total": ("counter", "Blob chunks served."),
    "samizdat_relay_expired_total": ("counter", "Messages and mailboxes removed by TTL."),
    "samizdat_relay_forwards_total": (
        "counter",
        "Sealed posts this relay forwarded to another relay (private routing).",
    ),
    "samizdat_relay_forwarded_total": ("counter", "Sealed posts received from forwarding relays."),
}


class Metrics:
    """Plain counters; ``render()`` produces the exposition text."""

    def __init__(self) -> None:
        self.values: Counter[str] = Counter()
        self.labelled: dict[str, Counter[str]] = {
            "samizdat_relay_frames_total": Counter(),
            "samizdat_relay_errors_total": Counter(),
        }

    def inc(self, name: str, n: int = 1) -> None:
        self.values[name] += n

    def dec(self, name: str, n: int = 1) -> None:
        self.values[name] -= n

    def inc_label(self, name: str, label: str, n: int = 1) -> None:
        self.labelled[name][label] += n

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, text) in _HELP.items():
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            if name in self.labelled:
                key = "type" if "frames" in name else "code"
                for label, value in sorted(self.labelled[name].items()):
                    lines.append(f'{name}{{{key}="{label}"}} {value}')
            else:
                lines.append(f"{name} {self.values[name]}")
        return "\n".join(lines) + "\n"
