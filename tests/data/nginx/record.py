"""Record a stock nginx's answers to the probe list of ``tests/nginx_probes.py``.

Run from the repository root (needs nginx: ``apt-get install nginx-light``):

    python tests/data/nginx/record.py [/usr/sbin/nginx]

It serves a temporary directory holding the relay's built-in welcome page as
``index.html`` and a small ``style.css`` (both with mtime ``SITE_MTIME``) with
the configuration below: the stock ``nginx.conf`` essentials plus
``server_tokens off`` (the usual hardening; the relay's default ``Server``
header is the bare ``nginx`` this gives).  The answers go to
``tests/data/nginx/responses.json`` with the nginx version.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from relay.static import WELCOME_HTML  # noqa: E402
from tests.nginx_probes import PROBES, SITE_MTIME, STYLE_CSS, fill, probe  # noqa: E402

CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 65;
    server_tokens off;
    access_log off;
    client_body_temp_path {tmp}/body;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/site;
        index index.html;
    }}
}}
"""


def main() -> int:
    nginx = sys.argv[1] if len(sys.argv) > 1 else "/usr/sbin/nginx"
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # the worker (user nobody) must read the site
        site = Path(tmp, "site")
        site.mkdir()
        (site / "index.html").write_bytes(WELCOME_HTML)
        (site / "style.css").write_bytes(STYLE_CSS)
        (site / "file.unknownext").write_bytes(STYLE_CSS)
        for f in site.iterdir():
            os.utime(f, (SITE_MTIME, SITE_MTIME))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = Path(tmp, "nginx.conf")
        conf.write_text(CONF.format(tmp=tmp, port=port))
        proc = subprocess.Popen([nginx, "-p", tmp, "-c", str(conf)])
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            etag = f"{SITE_MTIME:x}-{len(WELCOME_HTML):x}"
            lm = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(SITE_MTIME))
            answers = {
                name: probe("127.0.0.1", port, fill(raw, etag, lm)).decode("latin-1")
                for name, raw in PROBES.items()
            }
        finally:
            proc.terminate()
            proc.wait(10)
    out = Path(__file__).with_name("responses.json")
    doc = {"nginx": version, "config": CONF.strip(), "responses": answers}
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"{version}: {len(answers)} answers written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
