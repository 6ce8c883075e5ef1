"""The conversation list: names, unread counts and each conversation's relay health."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from client.tui.format import conversation_title, relay_health


class Sidebar(OptionList):
    """One option per conversation; the option id is the group id in hex."""

    def refresh_from(self, engine: Any) -> None:
        highlighted = self.highlighted_option.id if self.highlighted_option else None
        # a removal we could not confirm stays listed, attributed (SPEC §8.11)
        convs = [c for c in engine.conversations() if not c.left or c.removed_by]
        contacts = engine.contacts()
        changed_keys = {c.conversation for c in contacts if c.key_changed}
        verified = {c.conversation for c in contacts if c.verified and not c.key_changed}
        options = []
        for conv in convs:
            up, total = relay_health(engine, conv.group_id)
            label = Text(no_wrap=True, overflow="ellipsis")
            icon = "#" if conv.kind == "group" else "@"
            label.append(f"{icon} ", style="dim")
            label.append(conversation_title(engine, conv), style="bold" if conv.unread else "")
            if conv.kind == "direct" and conv.group_id in verified:
                label.append(" ✓", style="bold green")  # safety number compared
            if conv.unread:
                label.append(f" ({conv.unread})", style="bold cyan")
            if conv.removed_by:
                who = engine.display_name(conv.removed_by)
                label.append(f" (removed, per {who})", style="dim red")
            if conv.group_id in changed_keys or engine.missing(conv):
                label.append(" !", style="bold red")
            colour = "green" if up == total and total else ("yellow" if up else "red")
            label.append(f"  {up}/{total}", style=colour)
            options.append(Option(label, id=conv.group_id.hex()))
        self.set_options(options)
        if highlighted is not None:
            try:
                self.highlighted = self.get_option_index(highlighted)
            except Exception:
                self.highlighted = 0 if options else None
