"""protocol/ must stay sans-I/O: no asyncio, aiohttp, textual or sockets."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {"asyncio", "aiohttp", "textual", "socket", "selectors", "ssl", "time", "random"}
PROTOCOL = Path(__file__).resolve().parent.parent / "protocol"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_protocol_imports_no_io_modules() -> None:
    files = sorted(PROTOCOL.rglob("*.py"))
    assert files, "protocol/ has no modules"
    offenders = {
        str(f.relative_to(PROTOCOL)): sorted(_imports(f) & FORBIDDEN)
        for f in files
        if _imports(f) & FORBIDDEN
    }
    assert offenders == {}


def test_protocol_does_not_import_other_layers() -> None:
    for f in PROTOCOL.rglob("*.py"):
        assert not _imports(f) & {"relay", "client", "harness"}, f
