"""The composer: multi-line input, Enter sends, input history, ``/commands``."""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea


class Composer(TextArea):
    """Enter sends; Ctrl+J (or Shift+Enter where the terminal reports it)
    inserts a newline; Up on the first line and Down on the last line walk
    the input history."""

    class Submitted(Message):
        """The user pressed Enter with some text."""

        def __init__(self, composer: Composer, text: str) -> None:
            super().__init__()
            self.composer = composer
            self.text = text

    HISTORY_SIZE = 200

    def __init__(self, **kwargs: object) -> None:
        super().__init__(soft_wrap=True, tab_behavior="focus", **kwargs)  # type: ignore[arg-type]
        self.show_line_numbers = False
        self.sent_history: list[str] = []
        self._browse: int | None = None  # index into history while browsing
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            text = self.text.strip("\n")
            if text.strip():
                self.remember(text)
                self.post_message(self.Submitted(self, text))
                self.clear()
            return
        if event.key in ("ctrl+j", "shift+enter", "alt+enter"):
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        row = self.cursor_location[0]
        if event.key == "up" and row == 0 and self.sent_history:
            event.prevent_default()
            event.stop()
            self._walk(-1)
            return
        if event.key == "down" and self._browse is not None and row == self.document.line_count - 1:
            event.prevent_default()
            event.stop()
            self._walk(+1)
            return
        await super()._on_key(event)

    def remember(self, text: str) -> None:
        if not self.sent_history or self.sent_history[-1] != text:
            self.sent_history.append(text)
            del self.sent_history[: -self.HISTORY_SIZE]
        self._browse = None

    def _walk(self, step: int) -> None:
        if self._browse is None:
            self._draft = self.text
            index = len(self.sent_history) + step
        else:
            index = self._browse + step
        if index < 0:
            index = 0
        if index >= len(self.sent_history):
            self._browse = None
            self.text = self._draft
        else:
            self._browse = index
            self.text = self.sent_history[index]
        last = self.document.line_count - 1
        self.move_cursor((last, len(self.document.get_line(last))))
