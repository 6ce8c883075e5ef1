"""The Samizdat relay: a dumb mailbox relay for self-hosting operators.

It stores and forwards opaque, padded ciphertext (protocol/relay_frames.py over
WebSocket, blobs over HTTP) on SQLite or NATS JetStream, and answers every
other request like an ordinary static web site.  ``create_app(config)`` in
:mod:`relay.app` builds the aiohttp application; ``samizdat-relay`` runs it.
"""

from relay.app import create_app
from relay.config import Limits, RelayConfig

__all__ = ["Limits", "RelayConfig", "create_app"]
