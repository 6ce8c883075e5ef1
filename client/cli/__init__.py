"""``samizdat``: the command-line interface, for people and scripts.

Every listing command takes ``--json`` and prints one JSON document whose
shape SPEC.md §8.6 documents.  Errors are one line on stderr and a non-zero
exit status; a message that could not reach any relay stays queued in the
encrypted store and goes out with the next command that connects.

The commands live in ``client.cli.commands_*`` by group, the parser in
``client.cli.parser``, what they share in ``client.cli.common``.
"""

from __future__ import annotations

import os
import signal
import sys

from client.cli.commands_setup import cmd_app
from client.cli.common import EXIT_ERROR
from client.cli.parser import build_parser
from protocol.errors import SamizdatError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", cmd_app)
    try:
        code = int(func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _stdout_closed()
    except SamizdatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(
            f"error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return EXIT_ERROR


def _stdout_closed() -> int:
    """The reader of our output went away (``samizdat history X | head``):
    stop quietly, with the status a shell shows for a tool that SIGPIPE
    ended (128 + 13), as Unix tools do.  Output still buffered is dropped:
    stdout now points to /dev/null, so the interpreter's final flush cannot
    fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE
