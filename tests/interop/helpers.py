"""Helpers for the interop tests: real client programs and scripts, waiting with deadlines.

Every subprocess gets a timeout and every wait loop has a deadline, so a server that hangs
makes a test fail instead of stalling the suite. Raw-socket helpers are in ``wire.py``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pytest

from tests.support import ServerProcess

T = TypeVar("T")

# Skip reasons for a missing client all contain this text; with CI set, tests/conftest.py turns
# such skips of interop tests into failures so that CI proves every client really ran.
MISSING = "not installed"


# --------------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate!r}")
        time.sleep(interval)


# --------------------------------------------------------------------------- tools present


def need_program(name: str, package: str) -> str:
    """Path of an installed program, or skip the test naming the Debian package to install."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} {MISSING}: apt-get install {package}")
    return path


@functools.cache
def _php_has_gearman() -> bool:
    php = shutil.which("php")
    if php is None:
        return False
    probe = subprocess.run(
        [php, "-r", 'exit(extension_loaded("gearman") ? 0 : 1);'],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


def need_php() -> str:
    php = need_program("php", "php-cli php-gearman")
    if not _php_has_gearman():
        pytest.skip(f"PHP gearman extension {MISSING}: apt-get install php-gearman")
    return php


@functools.cache
def _perl_has(module: str) -> bool:
    perl = shutil.which("perl")
    if perl is None:
        return False
    probe = subprocess.run(
        [perl, f"-M{module}", "-e", "1"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


def need_perl() -> str:
    perl = need_program("perl", "perl libgearman-client-perl")
    for module in ("Gearman::Client", "Gearman::Worker"):
        if not _perl_has(module):
            pytest.skip(f"Perl {module} {MISSING}: apt-get install libgearman-client-perl")
    return perl


# --------------------------------------------------------------------------- subprocesses


@dataclass
class Result:
    """What a finished program printed and returned."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def ok(self) -> Result:
        """Assert a zero exit status and return self (for chaining)."""
        assert self.returncode == 0, (
            f"exit {self.returncode}\nstdout: {self.out}\nstderr: {self.err}"
        )
        return self


def run(cmd: Sequence[str], stdin: bytes = b"", timeout: float = 20.0) -> Result:
    """Run a program to completion with ``stdin`` as input; fail the test on timeout."""
    try:
        done = subprocess.run(
            list(cmd), input=stdin, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{' '.join(cmd)} did not finish within {timeout}s; "
            f"stdout={exc.stdout!r} stderr={exc.stderr!r}"
        )
    return Result(done.returncode, done.stdout, done.stderr)


class Processes:
    """Background programs started by one test; all are stopped when the test ends."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, cmd: Sequence[str], stdin: bytes | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd``; ``stdin`` (for example a script) is written and then closed."""
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._procs.append(proc)
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
            proc.stdin = None  # communicate() must not flush the closed pipe later
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> Result:
        """Wait for a spawned program to exit by itself and collect its output."""
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=5)
            pytest.fail(
                f"{proc.args!r} did not exit within {timeout}s; stdout={out!r} stderr={err!r}"
            )
        return Result(proc.returncode, out, err)

    def stop_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=5)


# --------------------------------------------------------------------------- real clients


def gearadmin(server: ServerProcess, *options: str, timeout: float = 15.0) -> Result:
    tool = need_program("gearadmin", "gearman-tools")
    return run([tool, "-h", server.host, "-p", str(server.port), *options], timeout=timeout)


def gearman_cmd(server: ServerProcess, *args: str) -> list[str]:
    """Command line of the ``gearman`` CLI pointed at ``server`` (client or worker mode)."""
    tool = need_program("gearman", "gearman-tools")
    return [tool, "-h", server.host, "-p", str(server.port), *args]


def gearman(server: ServerProcess, *args: str, stdin: bytes = b"", timeout: float = 15.0) -> Result:
    return run(gearman_cmd(server, *args), stdin=stdin, timeout=timeout)


def php_cmd(server: ServerProcess, *args: str) -> list[str]:
    """``php`` reading its script from stdin; the script sees $argv = [-, host, port, args...]."""
    return [need_php(), "--", server.host, str(server.port), *args]


def perl_cmd(server: ServerProcess, *args: str) -> list[str]:
    """``perl`` reading its script from stdin; the script sees @ARGV = (host:port, args...)."""
    return [need_perl(), "-", f"{server.host}:{server.port}", *args]


def run_php(server: ServerProcess, code: str, *args: str, timeout: float = 20.0) -> Result:
    return run(php_cmd(server, *args), stdin=code.encode(), timeout=timeout)


def run_perl(server: ServerProcess, code: str, *args: str, timeout: float = 20.0) -> Result:
    return run(perl_cmd(server, *args), stdin=code.encode(), timeout=timeout)
