"""The decoy web site: what every request outside the relay's endpoints sees.

Probe resistance: a wrong path, a wrong prefix, a plain GET on the WebSocket
endpoint, a bad blob path and a port scan all get the same answers an
ordinary static site gives (a home page, a 404 page, the same headers).
With ``decoy_dir`` set the operator's own files are served; otherwise a
stock web-server welcome page, so a default install looks like millions of
others rather than like a Samizdat relay.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

WELCOME_HTML = b"""<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""

NOT_FOUND_HTML = b"""<html>
<head><title>404 Not Found</title></head>
<body>
<center><h1>404 Not Found</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""


class Decoy:
    """Serves the decoy site; :meth:`not_found` is the one 404 of the relay."""

    def __init__(self, decoy_dir: Path | None) -> None:
        self.root = decoy_dir.resolve() if decoy_dir is not None else None

    def not_found(self) -> web.Response:
        return web.Response(status=404, body=NOT_FOUND_HTML, content_type="text/html")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return self.not_found()
        path = request.path
        if self.root is None:
            if path in ("/", "/index.html"):
                return web.Response(body=WELCOME_HTML, content_type="text/html")
            return self.not_found()
        rel = path.lstrip("/") or "index.html"
        if rel.endswith("/"):
            rel += "index.html"
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return self.not_found()
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return web.FileResponse(target, headers={"Content-Type": ctype})


def set_server_header(
    value: str,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook giving every response the same Server."""

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        if value:
            response.headers["Server"] = value
        else:
            response.headers.popall("Server", None)

    return hook
