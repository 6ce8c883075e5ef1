"""The relay answers a censor's probes byte for byte as a stock nginx does.

``tests/data/nginx/responses.json`` holds a real nginx's answers to the probe
list of ``tests/nginx_probes.py`` (recorded by ``tests/data/nginx/record.py``;
nginx is not needed here).  The relay serves the same site (the built-in
welcome page, or a ``decoy_dir`` holding the same files with the same mtime)
and must give the same bytes.  One normalisation: the value of ``Date`` (the
clock moved between the recording and the test; its format and position are
still compared).  ETag and Last-Modified need none: both derive from the
files' mtime and size, which the test reproduces.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from relay.app import create_app
from relay.static import WELCOME_HTML
from tests.nginx_probes import PROBES, SITE_MTIME, STYLE_CSS, fill, probe
from tests.test_relay_app import make_config

RECORDING = json.loads((Path(__file__).parent / "data" / "nginx" / "responses.json").read_text())
DATE = re.compile(rb"\r\nDate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n")
ETAG = f"{SITE_MTIME:x}-{len(WELCOME_HTML):x}"
LAST_MODIFIED = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(SITE_MTIME))


def normalise(raw: bytes) -> bytes:
    """Blank the Date value (only it): it is the clock, not the server."""
    return DATE.sub(b"\r\nDate: <date>\r\n", raw, count=1)


def site(tmp_path: Path) -> Path:
    d = tmp_path / "site"
    d.mkdir()
    (d / "index.html").write_bytes(WELCOME_HTML)
    (d / "style.css").write_bytes(STYLE_CSS)
    (d / "file.unknownext").write_bytes(STYLE_CSS)
    for f in d.iterdir():
        os.utime(f, (SITE_MTIME, SITE_MTIME))
    return d


@pytest.fixture(params=["decoy_dir", "builtin"])
async def relay_port(request: Any, aiohttp_server: Any, tmp_path: Path) -> int:
    kw: dict[str, Any] = {"prefix": "/k3y-9f"}
    if request.param == "decoy_dir":
        kw["decoy_dir"] = site(tmp_path)
    else:
        # the built-in site has the welcome page only: give it the css too by
        # probing the directory form, which serves both files
        kw["decoy_dir"] = None
    server = await aiohttp_server(create_app(make_config(tmp_path / "data", **kw)))
    port: int = server.port
    return port


def test_recording_is_nginx() -> None:
    assert RECORDING["nginx"].startswith("nginx version: nginx/")
    assert set(RECORDING["responses"]) == set(PROBES)
    for name, raw in RECORDING["responses"].items():
        if name.startswith("http09"):  # HTTP/0.9: a bare body, no headers
            assert not raw.startswith("HTTP/") and raw
            continue
        assert DATE.search(raw.encode("latin-1")), raw[:200]


async def test_relay_answers_probes_like_nginx(relay_port: int, request: Any) -> None:
    builtin = "builtin" in request.node.name
    mismatches = []
    for name, raw in PROBES.items():
        want = RECORDING["responses"][name].encode("latin-1")
        if builtin and (b"tyle.css" in raw or b"unknownext" in raw):  # also /%73tyle.css
            continue  # the built-in site has the welcome page only
        req = fill(raw, ETAG, LAST_MODIFIED)
        got = await asyncio.to_thread(probe, "127.0.0.1", relay_port, req)
        if normalise(got) != normalise(want):
            mismatches.append(
                f"{name}:\n  nginx: {normalise(want)[:300]!r}\n  relay: {normalise(got)[:300]!r}"
            )
    assert not mismatches, f"{len(mismatches)} probes differ:\n" + "\n".join(mismatches)


async def test_requests_in_pieces_are_answered_the_same(relay_port: int, request: Any) -> None:
    """The first-request sniffing (HTTP/0.9, bare-LF heads) waits for whole
    lines without changing what a request sent in pieces gets."""
    names = ["get_root", "http09_missing", "bad_request_line", "tls_raw"]
    if "builtin" not in request.node.name:
        names.append("lf_only")  # it asks for the style sheet
    for name in names:
        want = normalise(RECORDING["responses"][name].encode("latin-1"))
        got = await asyncio.to_thread(probe, "127.0.0.1", relay_port, PROBES[name], 10.0, 3)
        assert normalise(got) == want, name
