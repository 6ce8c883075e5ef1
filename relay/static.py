"""The decoy web site: what every request outside the relay's endpoints sees.

Probe resistance (SPEC §7.2): a wrong path, a wrong prefix, a plain GET on
the WebSocket endpoint, a bad blob path, an unusual method, a Range or
conditional request and a malformed request all get, byte for byte, what a
stock nginx (1.22, ``server_tokens off``) serving the same static site
answers: its status codes and reason phrases (405 ``Not Allowed``, 206,
304, 416, 414, 505), its error pages (CRLF lines), its header order
(``Server, Date, Content-Type, Content-Length, Last-Modified, Connection,
ETag, Accept-Ranges``), its ``ETag`` (``"<mtime hex>-<size hex>"``) and its
``Connection`` handling.  ``tests/test_relay_nginx.py`` compares against a
recording of the real nginx.  With ``decoy_dir`` set the operator's own
files are served; otherwise nginx's stock welcome page.

Requests aiohttp's parser rejects before any handler (bad request line,
bad header, over-long URI or header) never reach this module's handlers:
:class:`DecoyRequestHandler` replaces aiohttp's error answer
(``Server: Python/… aiohttp/…`` and parser text) and its log line (which
named the client's address) with the nginx page and no address.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import posixpath
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger("relay")

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
# The built-in welcome page's modification time (its ETag/Last-Modified), a
# plausible package install date rather than the relay's start time, which
# would tell a prober when the relay last restarted.
WELCOME_MTIME = 1700000000

# nginx's reason phrases (ngx_http_status_lines), which differ from RFC 9110's
# in places ("Not Allowed", "Request-URI Too Large", "Temporarily").
REASONS = {
    200: "OK",
    206: "Partial Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Not Allowed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    416: "Requested Range Not Satisfiable",
    500: "Internal Server Error",
    503: "Service Temporarily Unavailable",
    505: "HTTP Version Not Supported",
}
BIG_HEADER = "Request Header Or Cookie Too Large"

# The common part of nginx's mime.types; anything else is its default_type.
MIME_TYPES = {
    "html": "text/html", "htm": "text/html", "shtml": "text/html", "css": "text/css",
    "xml": "text/xml", "gif": "image/gif", "jpeg": "image/jpeg", "jpg": "image/jpeg",
    "js": "application/javascript", "txt": "text/plain", "png": "image/png",
    "svg": "image/svg+xml", "svgz": "image/svg+xml", "webp": "image/webp",
    "ico": "image/x-icon", "json": "application/json", "pdf": "application/pdf",
    "woff": "font/woff", "woff2": "font/woff2", "zip": "application/zip",
    "mp4": "video/mp4", "webm": "video/webm", "mp3": "audio/mpeg",
}  # fmt: skip
DEFAULT_TYPE = "application/octet-stream"


def error_page(status: int, detail: str = "") -> bytes:
    """nginx's built-in error page for ``status`` (CRLF lines, like nginx)."""
    title = f"{status} {detail or REASONS[status]}"
    lines = [
        "<html>",
        f"<head><title>{title}</title></head>",
        "<body>",
        f"<center><h1>{status} {REASONS[status]}</h1></center>",
    ]
    if detail:
        lines.append(f"<center>{detail}</center>")
    lines += ["<hr><center>nginx</center>", "</body>", "</html>", ""]
    return "\r\n".join(lines).encode()


class NginxResponse(web.Response):
    """A response whose status line and headers are written exactly as given.

    aiohttp would echo the request's version in the status line (nginx always
    says ``HTTP/1.1``) and append ``Date``/``Server`` after the other
    headers; here the caller's order stands and nothing is added.
    """

    def __init__(
        self, status: int, headers: list[tuple[str, str]], body: bytes, close: bool
    ) -> None:
        super().__init__(status=status, reason=REASONS[status], body=body, headers=headers)
        if close:
            self.force_close()

    async def _write_headers(self) -> None:
        writer = self._payload_writer
        assert writer is not None
        await writer.write_headers(f"HTTP/1.1 {self.status} {self.reason}", self.headers)
        writer.send_headers()


def http_date(t: float) -> str:
    return email.utils.formatdate(t, usegmt=True)


def _parse_range(spec: str, size: int) -> tuple[int, int] | bool | None:
    """One ``bytes=`` range as ``(start, end)`` inclusive; ``None`` when the
    header is ignored (another unit; several ranges, which nginx answers as
    ``multipart/byteranges`` and this decoy does not imitate), ``False`` when
    unsatisfiable or malformed (nginx's range filter: both are a 416)."""
    if not spec.startswith("bytes="):
        return None
    ranges = spec[len("bytes=") :]
    if "," in ranges:
        return None
    first, dash, last = (part.strip() for part in ranges.strip().partition("-"))
    if not dash or not (first or last):
        return False
    if (first and not first.isdigit()) or (last and not last.isdigit()):
        return False
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0:
            return False
        return (max(size - n, 0), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        return False
    return (start, min(end, size - 1))


def _origin_form(target: str) -> str:
    """The path of a request target; an absolute-form target
    (``http://host/path``, RFC 9112 §3.2.2) is served like its path."""
    for scheme in ("http://", "https://"):
        if target[: len(scheme)].lower() == scheme:
            slash = target.find("/", len(scheme))
            return target[slash:] if slash >= 0 else "/"
    return target


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    for tag in header.split(","):
        tag = tag.strip().removeprefix("W/")
        if tag == etag:
            return True
    return False


class Decoy:
    """Serves the decoy site as nginx's static module would."""

    def __init__(self, decoy_dir: Path | None, server: str = "nginx") -> None:
        self.root = decoy_dir.resolve() if decoy_dir is not None else None
        self.server = server

    # -- building responses -------------------------------------------------

    def _head(self) -> list[tuple[str, str]]:
        head = [("Server", self.server)] if self.server else []
        return [*head, ("Date", http_date(time.time()))]

    def error(
        self, request: BaseRequest | None, status: int, *, close: bool = False, detail: str = ""
    ) -> NginxResponse:
        """nginx's error answer; ``close`` (or a request that asked for it)
        ends the connection, as nginx does after a malformed request."""
        body = error_page(status, detail)
        close = close or (request is not None and not request.keep_alive)
        headers = [
            *self._head(),
            ("Content-Type", "text/html"),
            ("Content-Length", str(len(body))),
            ("Connection", "close" if close else "keep-alive"),
        ]
        if request is not None and request.method == "HEAD":
            body = b""
        return NginxResponse(status, headers, body, close)

    def refuse(self, request: BaseRequest) -> NginxResponse | None:
        """The checks nginx makes before any location: HTTP version, request
        target, Host (RFC 9112 §3.2: a 1.1 request without Host is a 400)."""
        if request.version not in (HttpVersion10, HttpVersion11):
            return self.error(request, 505, close=True)
        raw = _origin_form(request.raw_path)
        if not raw.startswith("/"):
            return self.error(request, 400, close=True)
        if request.version == HttpVersion11 and "Host" not in request.headers:
            return self.error(request, 400, close=True)
        depth = 0
        for seg in unquote(raw.split("?", 1)[0]).split("/")[1:]:
            depth = depth - 1 if seg == ".." else depth + (seg not in ("", "."))
            if depth < 0:  # nginx refuses a path that climbs above the root
                return self.error(request, 400, close=True)
        return None

    def _lookup(self, raw_path: str) -> tuple[bytes, int, str] | None:
        """(content, mtime, content type) of the file a path names, or None."""
        raw_path = _origin_form(raw_path)
        path = posixpath.normpath(unquote(raw_path.split("?", 1)[0]))
        rel = path.lstrip("/")
        if raw_path.split("?", 1)[0].endswith("/") or not rel or rel == ".":
            rel = posixpath.join(rel, "index.html") if rel not in ("", ".") else "index.html"
        ext = rel.rsplit(".", 1)[-1].lower() if "." in rel else ""
        ctype = MIME_TYPES.get(ext, DEFAULT_TYPE)
        if self.root is None:
            return (WELCOME_HTML, WELCOME_MTIME, ctype) if rel == "index.html" else None
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        try:
            return target.read_bytes(), int(target.stat().st_mtime), ctype
        except OSError:
            return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        refused = self.refuse(request)
        if refused is not None:
            return refused
        method = request.method
        if method == "TRACE":
            return self.error(request, 405, close=True)
        if method not in ("GET", "HEAD", "POST"):
            return self.error(request, 405)
        found = await asyncio.to_thread(self._lookup, request.raw_path)  # file I/O
        if found is None:
            return self.error(request, 404)
        if method == "POST":
            return self.error(request, 405)
        return self.serve(request, *found)

    def serve(self, request: web.Request, content: bytes, mtime: int, ctype: str) -> NginxResponse:
        size = len(content)
        etag = f'"{mtime:x}-{size:x}"'
        modified = http_date(mtime)
        close = not request.keep_alive
        conn = ("Connection", "close" if close else "keep-alive")
        ims = request.headers.get("If-Modified-Since")
        inm = request.headers.get("If-None-Match")
        if (ims is not None or inm is not None) and (
            (ims is None or ims == modified)  # nginx: if_modified_since exact
            and (inm is None or _etag_matches(inm, etag))
        ):
            headers = [*self._head(), ("Last-Modified", modified), conn, ("ETag", etag)]
            return NginxResponse(304, headers, b"", close)
        status, body, tail = 200, content, ("Accept-Ranges", "bytes")
        rng = request.headers.get("Range")
        if rng is not None:
            span = _parse_range(rng, size)
            if span is False:
                page = error_page(416)
                headers = [
                    *self._head(),
                    ("Content-Type", "text/html"),
                    ("Content-Length", str(len(page))),
                    conn,
                    ("Content-Range", f"bytes */{size}"),
                ]
                return NginxResponse(416, headers, page, close)
            if isinstance(span, tuple):
                start, end = span
                status, body = 206, content[start : end + 1]
                tail = ("Content-Range", f"bytes {start}-{end}/{size}")
        headers = [
            *self._head(),
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Last-Modified", modified),
            conn,
            ("ETag", etag),
            tail,
        ]
        if request.method == "HEAD":
            body = b""
        return NginxResponse(status, headers, body, close)


class DecoyRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, answering parse errors as nginx.

    aiohttp calls :meth:`handle_error` for a request its parser rejected
    (and for an exception escaping a handler).  Its own version logs
    "Error handling request from <client address>" and answers with
    ``Server: Python/… aiohttp/…`` and the parser's message; this one logs
    the error class only, at debug level, and answers nginx's page.

    The first request of a connection is also looked at before the parser
    sees it (:meth:`data_received`), for two forms nginx accepts and llhttp
    does not: an HTTP/0.9 ``GET /path`` line (nginx answers the bare body,
    no status line or headers, and closes) and a head whose lines end in a
    bare LF (nginx reads it like CRLF).
    """

    _sniffed = False
    _first = b""

    def data_received(self, data: bytes) -> None:
        if self._sniffed:
            super().data_received(data)
            return
        buf = self._first + data
        head = buf.lstrip(b"\r\n")  # nginx skips empty lines before a request
        nl = head.find(b"\n")
        if nl < 0:
            if _may_be_request_line(head) and len(buf) <= _SNIFF_MAX:
                self._first = buf  # wait for the end of the line
            else:
                self._pass(buf)
            return
        line = head[:nl]
        if _is_http09(line):
            self._sniffed, self._first = True, b""
            self._answer_http09(line)
        elif line.endswith(b"\r"):
            self._pass(buf)  # CRLF lines: the parser's business
        else:  # bare LF: wait for the head's end, then give the parser CRLFs
            end = head.find(b"\n\n")
            if end < 0 and len(buf) <= _SNIFF_MAX:
                self._first = buf
            elif end < 0:
                self._pass(buf)
            else:
                fixed = head[: end + 2].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                self._pass(fixed + head[end + 2 :])

    def _pass(self, data: bytes) -> None:
        self._sniffed, self._first = True, b""
        super().data_received(data)

    def _answer_http09(self, line: bytes) -> None:
        """nginx's HTTP/0.9 answer: the file, or the 404 page, bare."""
        decoy: Decoy = getattr(self._manager, "decoy", None) or Decoy(None)
        target = line.rstrip(b"\r").split(b" ")[1].decode("latin-1")
        found = decoy._lookup(target)
        body = found[0] if found is not None else error_page(404)
        log.debug("HTTP/0.9 request")
        if self.transport is not None:
            self.transport.write(body)
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 and not isinstance(exc, BadHttpMessage):
            log.error("request handler failed: %s", type(exc).__name__)
            log.debug("traceback", exc_info=exc)
        else:
            log.debug("malformed request: %s", type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        decoy: Decoy = getattr(self._manager, "decoy", None) or Decoy(None)
        code, detail, close = nginx_status(status, exc)
        resp = decoy.error(None, code, close=close, detail=detail)
        # the parser cannot go on after an error: the connection ends even
        # where nginx would keep it (an unknown method), though the bytes
        # of the answer are nginx's
        resp.force_close()
        return resp


_SNIFF_MAX = 16384
_HTTP09 = re.compile(rb"GET /[^ \r\n]*\r?")


def _is_http09(line: bytes) -> bool:
    return _HTTP09.fullmatch(line) is not None


_LINE_START = re.compile(rb"[A-Z_-]{0,32}( [\x21-\x7e]*( [\x21-\x7e]*)?)?\r?")


def _may_be_request_line(partial: bytes) -> bool:
    """Could ``partial`` (no LF yet) be the start of a request line?  Then
    its end decides (HTTP/0.9, bare LF); anything else (TLS, binary) goes to
    the parser at once, which refuses it as nginx does."""
    return _LINE_START.fullmatch(partial) is not None


_METHOD = re.compile(r"b'([^ ']*) ")
_NGINX_METHOD = re.compile(r"[A-Z_-]+")


def nginx_status(status: int, exc: BaseException | None) -> tuple[int, str, bool]:
    """The status, page detail and ``Connection: close`` nginx gives the
    request aiohttp's parser refused."""
    if isinstance(exc, LineTooLong):
        # the parser hands over the over-long piece: the request target
        # (origin form starts with "/", absolute form with a scheme) or a
        # header value
        piece = exc.args[0] if exc.args else b""
        line = bytes(piece) if isinstance(piece, (bytes, bytearray)) else b""
        if line.startswith((b"/", b"http:", b"https:")):
            return 414, "", True  # nginx's large_client_header_buffers: URI too long
        return 400, BIG_HEADER, True
    if isinstance(exc, BadHttpMethod):
        # nginx takes any method of capitals, '_' and '-' and its static
        # module refuses it with a 405 on a kept-alive connection; llhttp
        # only knows the registered methods
        token = _METHOD.search(str(exc))
        if token is not None and _NGINX_METHOD.fullmatch(token.group(1)):
            return 405, "", False
        return 400, "", True
    if isinstance(exc, BadHttpMessage):
        if "HTTP version" in str(exc):
            return 505, "", True
        return 400, "", True
    return (status if status in REASONS else 500), "", True


class DecoyServer(web.Server):
    """``web.Server`` whose connections use :class:`DecoyRequestHandler`."""

    decoy: Decoy | None = None

    def __call__(self) -> RequestHandler:
        return DecoyRequestHandler(self, loop=self._loop, **self._kwargs)


def install(app: web.Application, decoy: Decoy) -> None:
    """Make every server built for ``app`` (``web.run_app``, ``AppRunner``,
    the test client) a :class:`DecoyServer` answering with ``decoy``."""
    make = app._make_handler

    def make_handler(**kwargs: Any) -> web.Server:
        server = make(**kwargs)
        server.__class__ = DecoyServer  # adds __call__ only, no state
        server.decoy = decoy  # type: ignore[attr-defined]
        return server

    app._make_handler = make_handler  # type: ignore[method-assign]


def set_server_header(
    value: str,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook giving every response the same Server
    (decoy responses already carry it, in nginx's position)."""

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, NginxResponse):
            return
        if value:
            response.headers["Server"] = value
        else:
            response.headers.popall("Server", None)

    return hook
