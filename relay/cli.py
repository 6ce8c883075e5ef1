"""``samizdat-relay``: run the relay (``serve``, the default) or ``check-config``.

``samizdat-relay`` alone serves on 127.0.0.1:8480 with SQLite under the
per-user data directory.  Logs hold no client address, mailbox id or size
unless ``--debug-log`` is given, which says so at start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

from relay.app import CONTEXT, create_app
from relay.config import ConfigError, RelayConfig, load_config
from relay.memory import malloc_trim, tune_gc
from relay.sockets import BACKLOG, fit_descriptor_limit, listen, quiet_accept_errors

log = logging.getLogger("relay")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="samizdat-relay",
        description="Run a Samizdat relay (serve, the default), or check its configuration.",
    )
    p.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=("serve", "check-config"),
        help="serve (default), or check-config: print the configuration, report every error",
    )
    p.add_argument("--config", type=Path, help="relay.toml (TOML; see SPEC.md §7)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8480)")
    p.add_argument("--data-dir", type=Path, help="SQLite, blobs and spool files")
    p.add_argument(
        "--backend",
        choices=("sqlite", "nats"),
        help="where mailboxes live: sqlite (one process, default) or nats (a cluster)",
    )
    p.add_argument("--nats-url", help="NATS server URL(s), comma-separated")
    p.add_argument("--tls-cert", type=Path, help="TLS certificate chain (PEM); serve https")
    p.add_argument("--tls-key", type=Path, help="the private key of --tls-cert (PEM)")
    p.add_argument("--prefix", help="secret path prefix for every relay endpoint")
    p.add_argument(
        "--debug-log",
        action="store_true",
        default=None,
        help="log client addresses, mailbox ids and errors (never use in production)",
    )
    return p


def build_config(args: argparse.Namespace) -> RelayConfig:
    return load_config(
        args.config,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        backend=args.backend,
        nats_url=args.nats_url,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        prefix=args.prefix,
        debug_log=args.debug_log,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = build_config(args)
    except ConfigError as exc:
        for problem in exc.problems:  # every mistake at once, one line each
            print(f"samizdat-relay: configuration error: {problem}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(json.dumps(config.describe(), indent=2, sort_keys=True))
        print("configuration OK", file=sys.stderr)
        return 0
    if argv is None:
        _serve_on_the_c_allocator()
    tune_gc()
    logging.basicConfig(
        level=logging.DEBUG if config.debug_log else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # SIGTERM before the server runs (a supervisor stopping it at once):
    # exit cleanly; once it runs, aiohttp's own handler shuts down in order.
    signal.signal(signal.SIGTERM, _stopped_early)
    lowered = fit_descriptor_limit(config.limits)
    if lowered is not None:
        log.warning("%s", lowered)
    ssl_ctx = None
    if config.tls_cert is not None and config.tls_key is not None:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(config.tls_cert, config.tls_key)
    app = create_app(config)
    try:
        sock = listen(
            config.host,
            config.port,
            config.limits,
            per_ip=not config.forwarded_for,
            metrics=app[CONTEXT].metrics,
        )
    except OSError as exc:
        print(
            f"samizdat-relay: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr
        )
        return 1

    async def quiet(app: web.Application) -> None:
        quiet_accept_errors(asyncio.get_running_loop(), sock.out_of_fds)

    app.on_startup.append(quiet)
    scheme = "https" if ssl_ctx else "http"
    host = f"[{config.host}]" if ":" in config.host else config.host
    port = sock.getsockname()[1]  # the real one when --port 0 asked for any
    url = f"{scheme}://{host}:{port}{config.prefix}"

    async def announce(app: web.Application) -> None:
        # Said once the signal handlers are in place, so a supervisor that
        # stops the relay right after this line gets an orderly shutdown.
        # The prefix is a secret shared in invite links; the operator needs
        # the exact relay URL, and this log is the operator's own.
        print(f"samizdat-relay listening on {url}", flush=True)
        # (the log names no address at all: only the port and the prefix)
        log.info(
            "serving on port %s under prefix %s (backend %s)",
            port,
            config.prefix or "/ (none)",
            config.backend,
        )

    app.on_startup.append(announce)

    async def stopping(app: web.Application) -> None:
        log.info("shutting down: closing connections (grace %ss)", config.limits.shutdown_grace)

    app.on_shutdown.insert(0, stopping)
    lim = config.limits
    web.run_app(
        app,
        sock=sock,
        backlog=BACKLOG,
        ssl_context=ssl_ctx,
        print=None,
        access_log=None,
        shutdown_timeout=lim.shutdown_grace + 1,
        # aiohttp arms this timer when a connection opens and again after
        # each response, and closes the connection if no complete request
        # (line and headers) has arrived by then: the header timeout, which
        # is also how long an idle keep-alive connection is kept.
        keepalive_timeout=lim.header_timeout,
        # a refused request's unread body is drained at most this long
        lingering_time=min(2.0, lim.body_timeout),
    )
    log.info("samizdat-relay stopped")
    return 0


def _serve_on_the_c_allocator() -> None:
    """Run the server with ``PYTHONMALLOC=malloc`` (re-executing this
    process once, same PID, same arguments) where glibc's ``malloc_trim``
    exists, unless the environment already chose an allocator.

    Why (relay/memory.py, SPEC.md §7.11): Python's small-object allocator
    keeps a 1 MiB arena mapped while one object in it lives, so after a burst
    of thousands of connections a few surviving objects pinned ~60 MB for
    good; on the C allocator the trimmer gives those pages back.  Set
    ``PYTHONMALLOC=pymalloc`` to keep Python's allocator."""
    if os.environ.get("PYTHONMALLOC") or not malloc_trim():
        return
    env = dict(os.environ, PYTHONMALLOC="malloc")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "relay.cli", *sys.argv[1:]], env)


def _stopped_early(signum: int, frame: object) -> None:
    log.info("samizdat-relay stopped (before serving)")
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
