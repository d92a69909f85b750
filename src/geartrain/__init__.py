"""geartrain: a Gearman job server, client and worker library, wire-compatible with gearmand.

The server's public API lives here; clients and workers are in :mod:`geartrain.client`
and :mod:`geartrain.worker`::

    import geartrain

    geartrain.run(geartrain.Settings(port=4730, queue="sqlite:///jobs.sqlite3"))

or, inside an asyncio application, ``await geartrain.Server(settings).serve()`` (see
``docs/embedding.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geartrain import _build

# Before any other geartrain module is imported: GEARTRAIN_PURE=1 runs the pure-Python modules
# even where compiled ones are installed (see geartrain/_build.py).
if _build.pure_requested():
    _build.install_source_finder()

__version__ = "0.1.0"

__all__ = ["Server", "Settings", "StartupError", "__version__", "run"]

if TYPE_CHECKING:
    from geartrain.server.app import Server, StartupError, run
    from geartrain.server.config import Settings

#: Where each lazily exported name lives: a client-only program never imports the server.
_LAZY = {
    "Server": "geartrain.server.app",
    "StartupError": "geartrain.server.app",
    "run": "geartrain.server.app",
    "Settings": "geartrain.server.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geartrain' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value
