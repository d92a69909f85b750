"""Wheel build hook: compile geartrain's hot modules with mypyc into the wheel.

mypyc (part of mypy, which already checks this code in strict mode) turns each module named in
``geartrain._build.HOT_MODULES`` into a C extension; the wheel carries it beside the unchanged
``.py`` file, so the same sources still run uncompiled (see ``src/geartrain/_build.py``).

Everything is built in a temporary directory outside the source tree and added to the wheel
from there: an in-place build would leave ``.so`` files in ``src/`` that shadow later edits and
leak into the next pure wheel.

``GEARTRAIN_BUILD`` chooses, at build time:
    auto (default)  compile when a C compiler and Python's headers are found, else build pure,
                    so an sdist still installs on a machine without a compiler
    compiled        compile, and fail the build when that is impossible (scripts/ and CI)
    pure            never compile
Editable installs are never compiled: their point is that edits take effect at once.
"""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# Run in a child process with the build environment's Python, in the temporary directory, so
# that setuptools never reads our pyproject.toml and mypy's cache stays out of the tree.
# --follow-imports=silent: the compiled modules import interpreted ones (the queue stores'
# package, for instance), whose lazy imports of optional drivers the build environment lacks;
# mypy still reads their types, but their errors are the checker's business, not the build's.
_SETUP = """
import sys
from mypyc.build import mypycify
from setuptools import setup

lib, temp, config, *sources = sys.argv[1:]
setup(
    name="geartrain-mypyc",
    ext_modules=mypycify(
        [
            f"--config-file={config}",
            "--no-warn-unused-configs",
            "--follow-imports=silent",
            *sources,
        ],
        opt_level="3",
        group_name="geartrain",
        target_dir=temp + "/c",
    ),
    script_args=["build_ext", "--build-lib", lib, "--build-temp", temp],
)
"""


def hot_modules(root: Path) -> list[str]:
    """``HOT_MODULES`` as written in ``_build.py``, read without importing the package."""
    tree = ast.parse((root / "src/geartrain/_build.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "HOT_MODULES"
            and node.value is not None
        ):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("src/geartrain/_build.py defines no HOT_MODULES")


def stray_extensions(root: Path) -> list[str]:
    """Extension modules left in ``src/`` (by an in-place build, say)."""
    found = [*root.glob("src/**/*.so"), *root.glob("src/**/*.pyd")]
    return sorted(str(path.relative_to(root)) for path in found)


def missing_toolchain() -> str | None:
    """Why no extension can be built here, or None when a compiler and headers are present."""
    # setuptools compiles with $CC when set, else with the compiler Python was built with.
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler} not found)"
    include = sysconfig.get_paths()["include"]
    if not os.path.isfile(os.path.join(include, "Python.h")):
        return f"no Python headers ({include}/Python.h missing)"
    return None


# hatchling is in the build environment only, so to the checker its base class is Any.
class MypycBuildHook(BuildHookInterface):  # type: ignore[misc]
    """Compiles the hot modules and adds the extensions to the wheel."""

    PLUGIN_NAME = "geartrain-mypyc"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        stray = stray_extensions(Path(self.root))
        if stray:
            raise RuntimeError(
                "compiled modules in the source tree would shadow their sources; remove "
                + ", ".join(stray)
            )
        if self.target_name != "wheel" or version == "editable":
            return
        mode = os.environ.get("GEARTRAIN_BUILD", "auto")
        if mode not in ("auto", "compiled", "pure"):
            raise ValueError(f"GEARTRAIN_BUILD={mode}: use auto, compiled or pure")
        if mode == "pure":
            self.app.display_info("GEARTRAIN_BUILD=pure: building a pure-Python wheel")
            return
        reason = missing_toolchain()
        if reason is not None:
            if mode == "compiled":
                raise RuntimeError(f"GEARTRAIN_BUILD=compiled, but {reason}")
            self.app.display_warning(f"{reason}: building a pure-Python wheel")
            return
        # The wheel is written after this method returns, from the paths in force_include:
        # the directory lives until finalize().
        self._temp = Path(tempfile.mkdtemp(prefix="geartrain-mypyc-"))
        lib = self._temp / "lib"
        try:
            built = self._compile(lib, self._temp)
        except BaseException:
            shutil.rmtree(self._temp, ignore_errors=True)
            raise
        for path in built:
            build_data["force_include"][str(path)] = str(path.relative_to(lib))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        temp = getattr(self, "_temp", None)
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)

    def _compile(self, lib: Path, temp: Path) -> list[Path]:
        root = Path(self.root)
        sources = [
            str(root / "src" / (name.replace(".", "/") + ".py")) for name in hot_modules(root)
        ]
        self.app.display_info(f"compiling {len(sources)} modules with mypyc")
        process = subprocess.run(
            [
                sys.executable,
                "-c",
                _SETUP,
                str(lib),
                str(temp),
                str(root / "pyproject.toml"),
                *sources,
            ],
            cwd=temp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if process.returncode != 0:
            raise RuntimeError(f"mypyc failed:\n{process.stdout}")
        built = sorted(lib.rglob("*.so")) + sorted(lib.rglob("*.pyd"))
        if not built:
            raise RuntimeError(f"mypyc built nothing:\n{process.stdout}")
        return built
