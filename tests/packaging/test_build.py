"""The wheel: compiled hot modules when a C compiler is there, the pure sources otherwise.

Each wheel is built the way a user builds one (``pip wheel .`` in an isolated build
environment), so these tests fetch the pinned build requirements like any install does.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import geartrain
from geartrain import _build
from tests.packaging.helpers import ROOT


def _missing_toolchain() -> str | None:
    # What hatch_build.missing_toolchain checks (that module needs hatchling to import).
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler} not found)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python headers (Python.h)"
    return None


def _wheel(tmp_path: Path, **env: str) -> Path:
    out = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        env={**os.environ, **env},
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = out.glob("geartrain-*.whl")
    return wheel


def _extensions(wheel: Path) -> set[str]:
    names = zipfile.ZipFile(wheel).namelist()
    return {name for name in names if name.endswith(tuple(EXTENSION_SUFFIXES))}


def _module_path(name: str, suffix: str) -> str:
    return name.replace(".", "/") + suffix


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_wheel_carries_every_hot_module_compiled_and_installs(tmp_path: Path) -> None:
    reason = _missing_toolchain()
    if reason is not None:
        pytest.skip(f"cannot compile here: {reason}")
    wheel = _wheel(tmp_path, GEARTRAIN_BUILD="compiled")
    assert not wheel.name.endswith("-py3-none-any.whl"), wheel.name
    suffix = EXTENSION_SUFFIXES[0]
    extensions = _extensions(wheel)
    for name in _build.HOT_MODULES:
        assert _module_path(name, suffix) in extensions
        # The source travels too: GEARTRAIN_PURE=1 runs it.
        assert _module_path(name, ".py") in zipfile.ZipFile(wheel).namelist()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = [python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)]
    subprocess.run(install, check=True, stdin=subprocess.DEVNULL, timeout=300)
    # Outside the repository, so that nothing but the install can be imported; the codec
    # round trip runs compiled code, not just imports it.
    probe = (
        "import geartrain._build as b\n"
        "from geartrain.protocol import codec\n"
        "from geartrain.protocol.constants import PacketType\n"
        "wire = codec.encode_request(PacketType.SUBMIT_JOB, b'f', b'u', data=b'hi')\n"
        "events = codec.Decoder().feed(wire)\n"
        "assert events == [codec.Packet(PacketType.SUBMIT_JOB, (b'f', b'u'), b'hi')], events\n"
        "print(b.build(), codec.__file__)\n"
    )
    compiled = subprocess.run(
        [python, "-c", probe], cwd=tmp_path, env={}, capture_output=True, text=True, check=True
    ).stdout.split()
    assert compiled[0] == "compiled"
    assert compiled[1].endswith(suffix)
    pure = subprocess.run(
        [python, "-c", probe],
        cwd=tmp_path,
        env={"GEARTRAIN_PURE": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert pure[0] == "pure"
    assert pure[1].endswith("codec.py")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_pure_wheel_is_platform_independent_and_has_no_extension(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, GEARTRAIN_BUILD="pure")
    assert wheel.name.endswith("-py3-none-any.whl")
    assert _extensions(wheel) == set()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_without_a_compiler_the_build_falls_back_to_pure_unless_compiled_is_required(
    tmp_path: Path,
) -> None:
    no_compiler = str(tmp_path / "no-such-cc")
    wheel = _wheel(tmp_path, GEARTRAIN_BUILD="auto", CC=no_compiler)
    assert _extensions(wheel) == set()
    with pytest.raises(subprocess.CalledProcessError) as failed:
        _wheel(tmp_path / "required", GEARTRAIN_BUILD="compiled", CC=no_compiler)
    assert b"no C compiler" in failed.value.stderr + failed.value.stdout


def test_the_build_under_test_is_the_one_scripts_test_asked_for() -> None:
    # scripts/test says which build it installed and chose; a mix-up (a pure install where
    # the compiled one was meant, a stale extension) would otherwise pass unnoticed.
    expected = os.environ.get("GEARTRAIN_EXPECTED_BUILD")
    if not expected:
        pytest.skip("GEARTRAIN_EXPECTED_BUILD is not set (scripts/test sets it)")
    assert _build.build() == expected


def test_pure_requested_reads_the_variable_like_a_flag() -> None:
    assert not _build.pure_requested({})
    assert not _build.pure_requested({"GEARTRAIN_PURE": ""})
    assert not _build.pure_requested({"GEARTRAIN_PURE": "0"})
    assert _build.pure_requested({"GEARTRAIN_PURE": "1"})
    assert _build.pure_requested({"GEARTRAIN_PURE": "yes"})


def test_the_source_finder_finds_geartrain_modules_as_python_files_only() -> None:
    finder = _build.SourceFinder()
    package_path = list(geartrain.__path__)
    spec = finder.find_spec("geartrain.protocol", package_path)
    assert spec is not None and spec.origin is not None
    assert spec.origin.endswith("__init__.py")
    assert spec.submodule_search_locations == [str(Path(spec.origin).parent)]
    assert spec.submodule_search_locations is not None
    codec = finder.find_spec("geartrain.protocol.codec", spec.submodule_search_locations)
    assert codec is not None and codec.origin is not None
    assert codec.origin.endswith("codec.py")
    # Not ours, or not there: left to the usual finders.
    assert finder.find_spec("json", None) is None
    assert finder.find_spec("geartrain.no_such_module", package_path) is None


def test_hot_modules_name_real_modules() -> None:
    for name in _build.HOT_MODULES:
        assert (ROOT / "src" / _module_path(name, ".py")).is_file(), name
