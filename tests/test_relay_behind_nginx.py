"""The recommended deployment, run: nginx in front of a relay process, both
configured with SPEC §7.13's own snippets.

The ``nginx`` block and the ``relay.toml`` block are read from SPEC.md and
only their machine-specific values are replaced (ports, certificate paths,
the site's directory, the data directory); each replaced value must be
present, so a SPEC edit that changes them fails here rather than being
silently untested.  Through nginx over TLS: the mailbox protocol (WebSocket
upgrade through the secret prefix), a 256 KiB blob chunk up and down (within
``client_max_body_size``), nginx's own site outside the prefix, and a wrong
path under the prefix answered with the same 404 page as one outside it.

Needs nginx (``apt-get install nginx-light``; ``.ci/run`` installs it):
missing, the test skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from protocol.padding import BLOB_CHUNK_SIZE
from protocol.relay_frames import BlobTicket, Ok, Posted, Subscribed
from tests.relay_support import Client, Mailbox, envelope
from tests.required import missing
from tests.test_relay_process import ROOT, RelayProcess, _self_signed, free_port

SPEC = (ROOT / "SPEC.md").read_text()
PREFIX = "/k3y-9f2c41"


def spec_block(lang: str, marker: str) -> str:
    """The first ```lang code block of SPEC.md that contains ``marker``."""
    for block in re.findall(rf"```{lang}\n(.*?)```", SPEC, re.S):
        if marker in block:
            return str(block)
    raise AssertionError(f"SPEC.md has no {lang} block with {marker!r}")


def replace(text: str, old: str, new: str) -> str:
    assert old in text, f"SPEC snippet no longer contains {old!r}"
    return text.replace(old, new)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((proc.stderr.read() if proc.stderr else b"").decode())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    nginx = nginx_binary()
    if nginx is None:
        missing("nginx is not installed (apt-get install nginx-light)")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>My bakery</h1>\n")
    cert, key = _self_signed(tmp_path)

    relay_port, nginx_port = free_port(), free_port()
    toml = spec_block("toml", "forwarded_for")
    toml = replace(toml, "port = 8480", f"port = {relay_port}")
    toml = replace(toml, '"/srv/www/site"', f'"{site}"')
    toml = f'data_dir = "{tmp_path / "data"}"\n' + toml
    (tmp_path / "relay.toml").write_text(toml)
    relay = RelayProcess(tmp_path / "data", "--config", str(tmp_path / "relay.toml"))
    relay.port = relay_port

    server = spec_block("nginx", "proxy_pass")
    server = replace(server, "listen 443 ssl http2;", f"listen 127.0.0.1:{nginx_port} ssl;")
    server = replace(server, "/etc/letsencrypt/live/example.org/fullchain.pem", str(cert))
    server = replace(server, "/etc/letsencrypt/live/example.org/privkey.pem", str(key))
    server = replace(server, "root /srv/www/site;", f"root {site};")
    server = replace(server, "http://127.0.0.1:8480", f"http://127.0.0.1:{relay_port}")
    assert f"location {PREFIX}/" in server
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        # as root, nginx's workers would run as nobody, who cannot enter
        # pytest's private temporary directory
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/nginx-error.log;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n    include /etc/nginx/mime.types;\n    access_log off;\n"
        f"    server_tokens off;\n"
        + "".join(
            f"    {k}_temp_path {tmp_path}/{k};\n"
            for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + server
        + "}\n"
    )
    relay.start()
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(conf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(nginx_port, proc)
        yield nginx_port, cert
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        if relay.proc is not None and relay.proc.poll() is None:
            relay.kill(signal.SIGTERM)


async def test_relay_behind_nginx_with_the_spec_config(deployment: tuple[int, Path]) -> None:
    port, cert = deployment
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    base = f"https://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as s:
        home = await s.get(f"{base}/", ssl=ctx)
        assert home.status == 200 and "My bakery" in await home.text()
        w = await Client.connect(s, f"wss://127.0.0.1:{port}{PREFIX}/ws", ssl=ctx)
        r = await Client.connect(s, f"wss://127.0.0.1:{port}{PREFIX}/ws", ssl=ctx)
        mb = Mailbox()
        assert isinstance(await w.create(mb), Ok)
        assert isinstance(await w.auth_write(mb), Ok)
        assert isinstance(await r.auth_read(mb), Ok)
        assert isinstance(await r.subscribe(mb), Subscribed)
        posted = await w.post(mb, envelope(b"through nginx"))
        assert isinstance(posted, Posted)
        (got,) = await r.wait_delivered(1)
        assert got.seq == posted.seq and got.envelope == envelope(b"through nginx")

        # a blob chunk streams through the proxy both ways
        resp = await s.post(f"{base}{PREFIX}/blob", ssl=ctx)
        assert resp.status == 201
        t = BlobTicket.decode(await resp.read())
        url = f"{base}{PREFIX}/blob/{t.blob_id.hex()}/0"
        chunk = os.urandom(BLOB_CHUNK_SIZE)
        up = {"Authorization": "Bearer " + t.upload_token.hex()}
        put = await s.put(url, data=chunk, headers=up, ssl=ctx)
        assert put.status == 201
        await put.read()  # released: an unreleased connection warns when collected
        down = await s.get(url, headers={"Authorization": "Bearer " + t.read_token.hex()}, ssl=ctx)
        assert down.status == 200 and await down.read() == chunk

        # under the prefix or not, a wrong path gets the same 404 page
        outside = await s.get(f"{base}/nothing", ssl=ctx)
        inside = await s.get(f"{base}{PREFIX}/nothing", ssl=ctx)
        assert outside.status == inside.status == 404
        assert await outside.read() == await inside.read()
        assert outside.headers["Server"] == inside.headers["Server"] == "nginx"
        await w.close()
        await r.close()
