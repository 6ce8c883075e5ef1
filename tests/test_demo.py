"""``samizdat demo``: its picture, and the whole flow in the app under Pilot."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from client.demo import GROUP_NAME, Demo, demo_png
from client.tui.app import SamizdatApp
from client.tui.screens.main import MainScreen
from client.tui.widgets.composer import Composer
from tests.tui_support import screen_text, wait_for

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning"),
]


def test_demo_png_is_a_valid_png() -> None:
    data = demo_png(32, 16)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, tag = struct.unpack(">I4s", data[8:16])
    width, height = struct.unpack(">II", data[16:24])
    assert (tag, length, width, height) == (b"IHDR", 13, 32, 16)
    idat = data.index(b"IDAT")
    (n,) = struct.unpack(">I", data[idat - 4 : idat])
    assert len(zlib.decompress(data[idat + 4 : idat + 4 + n])) == 16 * (1 + 32 * 3)


async def test_demo_flow_in_the_app(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "demo")
    app = SamizdatApp(prepare=demo.prepare, cleanup=demo.stop, inline_images=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), 60, "main screen")
        await wait_for(pilot, lambda: GROUP_NAME in screen_text(app), what="the group")
        await wait_for(pilot, lambda: "sunset.png" in screen_text(app), what="Bob's photo")
        await wait_for(pilot, lambda: "Why Samizdat" in screen_text(app), what="the article")
        assert "relays 2/2 connected" in screen_text(app)
        composer = app.screen.query_one(Composer)
        composer.text = "hello bot"
        composer.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: 'Bob here: I got "hello bot"' in screen_text(app))
        await wait_for(pilot, lambda: "delivered 2 of 2" in screen_text(app), what="receipts")
        await pilot.press("ctrl+q")
    assert not demo.runners  # relays stopped
    assert all(e._closing for e in demo.engines.values())
