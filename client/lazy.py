"""Modules imported when first used, not when their importer is.

The ``samizdat`` commands that only read the store (``chats``, ``contacts``,
``history``...) build an :class:`client.engine.Engine` but never connect:
aiohttp, a third of the engine's import time, is imported only when a
connection is made (issue 12 item 5, the CLI's latency).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name`` as a module whose code runs at its first attribute access
    (``importlib.util.LazyLoader``); the module itself if already imported."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
