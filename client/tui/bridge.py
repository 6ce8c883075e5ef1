"""From engine listener callbacks to Textual messages.

The engine calls its listeners synchronously from inside its own coroutines
(on the app's event loop).  A listener must never touch widgets directly:
:class:`EngineBridge` only posts a message to its target, and the target
batches what changed before it redraws (see ``MainScreen``).
"""

from __future__ import annotations

from typing import Any

from textual.message import Message
from textual.message_pump import MessagePump


class EngineBridge:
    """An engine listener that forwards ``(what, conv_id)`` as a message."""

    class Changed(Message):
        """The engine reported a change: message, status, conversation, relay, notice."""

        def __init__(self, what: str, conv_id: bytes | None) -> None:
            super().__init__()
            self.what = what
            self.conv_id = conv_id

    def __init__(self, engine: Any, target: MessagePump) -> None:
        self.engine = engine
        self.target = target

    def __call__(self, what: str, conv_id: bytes | None) -> None:
        # post_message is safe from any thread and never blocks the engine.
        self.target.post_message(self.Changed(what, conv_id))

    def attach(self) -> None:
        if self not in self.engine.listeners:
            self.engine.listeners.append(self)

    def detach(self) -> None:
        if self in self.engine.listeners:
            self.engine.listeners.remove(self)
