"""Relay URLs as a person types them: one check for every front end (the CLI's
``--relay`` and ``relay`` subcommands, the app's setup form and relays screen)."""

from __future__ import annotations

import urllib.parse

RELAY_SCHEMES = ("http", "https", "ws", "wss")


def check_relay_url(text: str) -> str:
    """``text`` stripped if it is an http(s) or ws(s) URL with a host (and, if
    given, a valid port); else ValueError with a one-line reason to show."""
    url = text.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in RELAY_SCHEMES or not parts.hostname:
        raise ValueError(f"{text!r} is not a relay URL (expected https://HOST[:PORT][/PREFIX])")
    try:
        parts.port  # noqa: B018 - raises on a malformed or out-of-range port
    except ValueError:
        raise ValueError(f"{text!r} is not a relay URL (bad port)") from None
    return url
