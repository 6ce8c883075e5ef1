"""Storage backends behind one interface (:class:`relay.storage.base.Storage`).

``sqlite`` is the embedded default; ``nats`` (JetStream) lets several relay
processes serve the same mailboxes.
"""

from relay.storage.base import LiveHub, MailboxInfo, Storage

__all__ = ["LiveHub", "MailboxInfo", "Storage"]
