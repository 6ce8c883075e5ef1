"""Pure helpers that turn engine records into the strings the app shows.

Nothing here touches the network; every function takes the engine (or a
record) and returns text, so screens stay thin and tests can check wording.
"""

from __future__ import annotations

import time
from typing import Any

from client.model import Contact, Conversation, HistoryEntry, MessageStatus

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp")


def clock(ms: int) -> str:
    """Local ``HH:MM`` of a timestamp (tests pin ``TZ``)."""
    return time.strftime("%H:%M", time.localtime(ms / 1000))


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def duration(seconds: int) -> str:
    if seconds <= 0:
        return "now"
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds // span}{unit}"
    return f"{seconds}s"


def plural(n: int, noun: str) -> str:
    """``1 member``, ``3 members``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def markdown_plain(text: str) -> str:
    """Markdown as the plain words a reader sees: ``**must**`` -> ``must``,
    ``[this](https://...)`` -> ``this``; block structure becomes lines."""
    from markdown_it import MarkdownIt

    lines: list[str] = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type != "inline" or not token.children:
            continue
        words = []
        for child in token.children:
            if child.type in ("text", "code_inline"):
                words.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                words.append(" ")
            elif child.type == "image":
                words.append(child.content or "[image]")
        lines.append("".join(words))
    return "\n".join(lines)


def article_preview(text: str, limit: int = 160) -> str:
    """The first paragraph of an article that is not a heading, in plain words."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(text)
    for i, token in enumerate(tokens):
        if token.type == "inline" and not (i > 0 and tokens[i - 1].type == "heading_open"):
            plain = markdown_plain(token.content).replace("\n", " ").strip()
            if plain:
                return plain[:limit]
    return ""


def conversation_title(engine: Any, conv: Conversation) -> str:
    """A group's name, or the other member's name in a direct chat."""
    if conv.name:
        return conv.name
    me = engine.identity.signature_pub
    others = [k for k in engine.members(conv.group_id) if k != me]
    return engine.display_name(others[0]) if others else "(waiting for contact)"


def conversation_relays(engine: Any, conv_id: bytes) -> list[str]:
    """The relay URLs of one conversation, in ordering-relay order.

    The engine has no public accessor yet (see the app's report); this reads
    the conversation's GroupMeta from the public ``groups`` mapping.
    """
    getter = getattr(engine, "conversation_relays", None)
    if getter is not None:
        return list(getter(conv_id))
    from protocol.app.group_meta import find_group_meta

    group = engine.groups.get(conv_id)
    meta = find_group_meta(group.extensions) if group is not None else None
    return list(meta.relay_urls) if meta is not None else []


def relay_health(engine: Any, conv_id: bytes) -> tuple[int, int]:
    """(relays connected, relays of the conversation)."""
    states = engine.relay_states()
    urls = conversation_relays(engine, conv_id)
    return sum(1 for u in urls if states.get(u) == "connected"), len(urls)


def delivery_text(status: MessageStatus | None) -> str:
    """sent -> on relay (n) -> delivered n of m."""
    if status is None:
        return "sent"
    if status.delivered_to and status.recipients:
        return f"delivered {len(status.delivered_to)} of {status.recipients}"
    if status.relays_stored:
        return f"on relay ({len(status.relays_stored)})"
    return "sent"


def entry_summary(entry: HistoryEntry) -> str:
    """One line for notifications and the tmux-readable view."""
    if entry.kind == "article":
        return f"[article] {entry.title}"
    if entry.kind == "file":
        return f"[file] {entry.file.get('name', '?')}"
    return entry.text


def is_image(entry: HistoryEntry) -> bool:
    return entry.kind == "file" and str(entry.file.get("media_type", "")) in IMAGE_TYPES


def photo_image(data: bytes) -> Any:
    """A decoded in-memory ``PIL.Image`` of a received photo, or None if it
    is not an image Pillow reads safely.  Photos are shown from memory only:
    a decrypted photo never goes to a file outside the encrypted store."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        return None
    return image


def contact_label(contact: Contact) -> str:
    name = contact.name or contact.identity_key.hex()[:8]
    if contact.key_changed:
        return f"{name} (KEY CHANGED)"
    return f"{name} (verified)" if contact.verified else name


def safety_rows(number: str, per_row: int = 4) -> list[str]:
    groups = number.split()
    return ["  ".join(groups[i : i + per_row]) for i in range(0, len(groups), per_row)]


def qr_text(data: str) -> str:
    """A QR code as text: two modules per character cell (half blocks)."""
    import io

    import qrcode

    qr = qrcode.QRCode(border=1, error_correction=qrcode.constants.ERROR_CORRECT_L)
    qr.add_data(data)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue().rstrip("\n")
