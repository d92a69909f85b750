"""Which build of geartrain runs: the hot modules compiled by mypyc, or pure Python.

Theory of operation. A wheel built by ``pip wheel .`` carries, beside each module named in
``HOT_MODULES``, a C extension that mypyc compiled from that same source (``hatch_build.py`` at
the top of the repository does it; ``GEARTRAIN_BUILD=pure`` at build time, or a machine without
a C compiler, gives a wheel without them). Python's import system prefers an extension module to
a source file of the same name, so an installed compiled build runs compiled by default.

``GEARTRAIN_PURE=1`` at run time puts a finder in front of the import system that loads
geartrain's modules from their ``.py`` files, so one install runs either build: the package's
``__init__`` installs it before any other geartrain module is imported. The variable is read
once, at that import, like ``PYTHONPATH``: it chooses code, it is not a setting.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from types import ModuleType
from typing import Final

#: The modules compiled into the wheel: the per-packet and per-job path (decoding, the
#: connection's input and output, dispatch, job records, scheduling, replies, store write
#: groups, timers, counters). Compiling the connection too saves 8-12 % more instructions per
#: job (bench/instructions.py). The admin protocol, the queue stores, the HTTP listener and
#: the libraries stay interpreted. ``hatch_build.py`` reads this tuple from this file.
HOT_MODULES: Final = (
    "geartrain.protocol.codec",
    "geartrain.protocol.constants",
    "geartrain.protocol.numbers",
    "geartrain.server.connection",
    "geartrain.server.counters",
    "geartrain.server.dispatch",
    "geartrain.server.epoch",
    "geartrain.server.jobs",
    "geartrain.server.replies",
    "geartrain.server.scheduler",
    "geartrain.server.writes",
)

#: The run-time switch to the pure modules; any value but empty or ``0`` turns it on.
PURE_ENV: Final = "GEARTRAIN_PURE"


def pure_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for the pure-Python modules."""
    return environ.get(PURE_ENV, "") not in ("", "0")


class SourceFinder(MetaPathFinder):
    """Finds ``geartrain.*`` modules as ``.py`` files only, never as compiled extensions."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if not fullname.startswith("geartrain.") or path is None:
            return None
        name = fullname.rpartition(".")[2]
        for entry in path:
            package = os.path.join(entry, name, "__init__.py")
            if os.path.isfile(package):
                return importlib.util.spec_from_file_location(
                    fullname, package, submodule_search_locations=[os.path.dirname(package)]
                )
            module = os.path.join(entry, name + ".py")
            if os.path.isfile(module):
                return importlib.util.spec_from_file_location(fullname, module)
        # Not ours to find (a namespace or a missing module): the usual finders decide.
        return None


def install_source_finder() -> None:
    """Load geartrain's modules from source from now on (idempotent)."""
    if not any(isinstance(finder, SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, SourceFinder())


def compiled_modules() -> list[str]:
    """The hot modules that would import as compiled extensions (imports their packages)."""
    compiled = []
    for name in HOT_MODULES:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is not None and origin.endswith(tuple(EXTENSION_SUFFIXES)):
            compiled.append(name)
    return compiled


def build() -> str:
    """``compiled``, ``pure``, or ``partly compiled`` (a broken install: some modules lack one)."""
    count = len(compiled_modules())
    if count == len(HOT_MODULES):
        return "compiled"
    return "pure" if count == 0 else "partly compiled"
