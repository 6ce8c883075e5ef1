"""A received (or sent) file: preview photos, save anywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Static

from client.files import safe_file_name
from client.model import HistoryEntry
from client.tui.format import human_size, is_image, photo_image

# The widget class differs by terminal (textual_image picks it at import), so only
# "something that builds a widget from a photo" is promised; None: no preview.
PhotoImage: Callable[..., Widget] | None
try:
    from textual_image.widget import Image as PhotoImage
except Exception:  # pragma: no cover
    PhotoImage = None


class FileDialog(ModalScreen[Path | None]):
    """Dismisses with the path to save to, or None.  The proposed name is the
    received one made safe (:func:`client.files.safe_file_name`); ``preview``
    is the photo's bytes, held in memory only."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, entry: HistoryEntry, preview: bytes | None, default_dir: Path) -> None:
        super().__init__(classes="dialog-screen")
        self.entry, self.preview, self.default_dir = entry, preview, default_dir

    def compose(self) -> ComposeResult:
        name = safe_file_name(str(self.entry.file.get("name", "")))
        size = human_size(int(self.entry.file.get("size", 0)))
        image = photo_image(self.preview) if self.preview is not None else None
        with Vertical(id="file-dialog", classes="dialog"):
            yield Label(
                f"{name} ({size}, {self.entry.file.get('media_type')})",
                classes="dialog-title",
                markup=False,
            )
            if is_image(self.entry) and image is not None and PhotoImage is not None:
                yield PhotoImage(image, id="photo-preview")
            elif is_image(self.entry):
                yield Static(
                    "[photo: this terminal cannot show images; save it to open it]",
                    id="photo-placeholder",
                )
            yield Input(str(self.default_dir / name), id="save-path")
            with Horizontal(classes="buttons"):
                yield Button("Close", id="close")
                yield Button("Save", variant="primary", id="save")

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        value = self.query_one("#save-path", Input).value.strip()
        self.dismiss(Path(value).expanduser() if value else None)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)
