"""The fixed probe list a censor might send to tell a relay from nginx.

Shared by ``tests/data/nginx/record.py`` (which records a real nginx's
answers into ``tests/data/nginx/responses.json``) and
``tests/test_relay_nginx.py`` (which sends the same bytes to a relay and
compares).  Every probe goes on its own fresh TCP connection; the answer is
read until the first complete response (status line, headers and, unless the
request was HEAD or the status has no body, ``Content-Length`` bytes) or
until the server closes.
"""

from __future__ import annotations

import socket
import time

# The decoy site both servers serve: the welcome page and a style sheet,
# with this fixed modification time so ETag and Last-Modified can be compared.
SITE_MTIME = 1700000000  # 2023-11-14 22:13:20 UTC
STYLE_CSS = b"body { font-family: sans-serif; }\n"

_H = "Host: example.org\r\n"
_UA = "User-Agent: probe/1\r\n"
LONG = "/" + "a" * 9000


def _req(line: str, headers: str = _H + _UA, body: str = "") -> bytes:
    return f"{line}\r\n{headers}\r\n{body}".encode("latin-1")


# name -> raw request; the names are stable keys of the recording.
PROBES: dict[str, bytes] = {
    "get_root": _req("GET / HTTP/1.1"),
    "head_root": _req("HEAD / HTTP/1.1"),
    "get_index": _req("GET /index.html HTTP/1.1"),
    "get_css": _req("GET /style.css HTTP/1.1"),
    "get_missing": _req("GET /missing.html HTTP/1.1"),
    "head_missing": _req("HEAD /missing.html HTTP/1.1"),
    "get_ws": _req("GET /ws HTTP/1.1"),
    "get_query": _req("GET /index.html?x=1 HTTP/1.1"),
    "post_root": _req("POST / HTTP/1.1", _H + "Content-Length: 3\r\n", "a=b"),
    "post_index": _req("POST /index.html HTTP/1.1", _H + "Content-Length: 0\r\n"),
    "post_missing": _req("POST /missing HTTP/1.1", _H + "Content-Length: 0\r\n"),
    "options_root": _req("OPTIONS / HTTP/1.1"),
    "options_star": _req("OPTIONS * HTTP/1.1"),
    "put_index": _req("PUT /index.html HTTP/1.1", _H + "Content-Length: 0\r\n"),
    "delete_missing": _req("DELETE /missing HTTP/1.1"),
    "trace_root": _req("TRACE / HTTP/1.1"),
    "unknown_method": _req("FOO / HTTP/1.1"),
    "range_first": _req("GET /index.html HTTP/1.1", _H + "Range: bytes=0-99\r\n"),
    "range_suffix": _req("GET /index.html HTTP/1.1", _H + "Range: bytes=-50\r\n"),
    "range_open": _req("GET /style.css HTTP/1.1", _H + "Range: bytes=10-\r\n"),
    "range_unsatisfiable": _req("GET /index.html HTTP/1.1", _H + "Range: bytes=99999-\r\n"),
    "range_bad_unit": _req("GET /index.html HTTP/1.1", _H + "Range: items=0-5\r\n"),
    "inm_match": _req("GET /index.html HTTP/1.1", _H + 'If-None-Match: "{etag_index}"\r\n'),
    "inm_other": _req("GET /index.html HTTP/1.1", _H + 'If-None-Match: "0-0"\r\n'),
    "inm_star": _req("GET /index.html HTTP/1.1", _H + "If-None-Match: *\r\n"),
    "ims_equal": _req("GET /index.html HTTP/1.1", _H + "If-Modified-Since: {lm}\r\n"),
    "ims_older": _req(
        "GET /index.html HTTP/1.1", _H + "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
    ),
    "http10": _req("GET / HTTP/1.0", ""),
    "http10_keepalive": _req("GET / HTTP/1.0", "Connection: keep-alive\r\n"),
    "http11_close": _req("GET / HTTP/1.1", _H + "Connection: close\r\n"),
    "no_host": _req("GET / HTTP/1.1", _UA),
    "long_uri": _req(f"GET {LONG} HTTP/1.1"),
    "bad_request_line": b"GARBAGE\r\n\r\n",
    "lowercase_method": _req("get / HTTP/1.1"),
    "bad_version": _req("GET / HTTP/9.9"),
    "http2_version": _req("GET / HTTP/2.0"),
    "bad_header": _req("GET / HTTP/1.1", _H + "Bad Header Line\r\n"),
    "space_in_header_name": _req("GET / HTTP/1.1", _H + "X Y: z\r\n"),
    "huge_header": _req("GET / HTTP/1.1", _H + "Cookie: " + "c" * 9000 + "\r\n"),
    "bad_content_length": _req("POST / HTTP/1.1", _H + "Content-Length: abc\r\n"),
    "dotdot": _req("GET /../etc/passwd HTTP/1.1"),
    "dot_segments": _req("GET /a/../style.css HTTP/1.1"),
    "double_slash": _req("GET //style.css HTTP/1.1"),
    "percent_encoded": _req("GET /%73tyle.css HTTP/1.1"),
    "absolute_uri": _req("GET http://example.org/style.css HTTP/1.1"),
    "index_dir": _req("GET /index.html/ HTTP/1.1"),
    "head_range": _req("HEAD /index.html HTTP/1.1", _H + "Range: bytes=0-9\r\n"),
    "multi_inm": _req("GET /index.html HTTP/1.1", _H + 'If-None-Match: "x", "{etag_index}"\r\n'),
    "weak_inm": _req("GET /index.html HTTP/1.1", _H + 'If-None-Match: W/"{etag_index}"\r\n'),
    "range_and_inm": _req(
        "GET /index.html HTTP/1.1", _H + 'Range: bytes=0-9\r\nIf-None-Match: "{etag_index}"\r\n'
    ),
    "range_past_end": _req("GET /style.css HTTP/1.1", _H + "Range: bytes=30-99\r\n"),
    "range_zero_suffix": _req("GET /style.css HTTP/1.1", _H + "Range: bytes=-0\r\n"),
    "range_garbage": _req("GET /style.css HTTP/1.1", _H + "Range: bytes=abc\r\n"),
    "patch_missing": _req("PATCH /missing HTTP/1.1", _H + "Content-Length: 0\r\n"),
    "head_http10": _req("HEAD /style.css HTTP/1.0", ""),
    "unknown_ext": _req("GET /file.unknownext HTTP/1.1"),
    "tls_raw": bytes.fromhex("16030100a1010000") + b"\x03\x03" + b"\x00" * 32,  # no line end
    "http09": b"GET /style.css\r\n",
    "http09_missing": b"GET /missing\r\n",
    "empty_lines": b"\r\n\r\nGET /style.css HTTP/1.1\r\nHost: x\r\n\r\n",
    "lf_only": b"GET /style.css HTTP/1.1\nHost: x\n\n",
    "tls_hello": bytes.fromhex("16030100a1010000")  # a TLS record header probe
    + b"\x03\x03"
    + b"\x00" * 32
    + b"\r\n\r\n",
}


def fill(raw: bytes, etag_index: str, lm: str) -> bytes:
    """Put the site's ETag and Last-Modified into the conditional probes."""
    return raw.replace(b"{etag_index}", etag_index.encode()).replace(b"{lm}", lm.encode())


def expects_body(request: bytes, head: bytes) -> bool:
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
    return not request.startswith(b"HEAD ") and status not in (b"304", b"204")


def probe(host: str, port: int, request: bytes, timeout: float = 10.0, piece: int = 0) -> bytes:
    """Send ``request`` on a fresh connection (``piece`` > 0: that many bytes
    at a time, as a slow client would); return the raw answer."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as s:
        if piece:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                for i in range(0, len(request), piece):
                    s.sendall(request[i : i + piece])
                    time.sleep(0.002)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered and closed before the whole request was sent
        else:
            s.sendall(request)
        data = b""
        while time.monotonic() < deadline:
            end = data.find(b"\r\n\r\n")
            if end >= 0 and data.startswith(b"HTTP/"):
                head = data[:end]
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if not expects_body(request, head):
                    length = 0
                if len(data) >= end + 4 + length:
                    return data[: end + 4 + length]
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
        return data
