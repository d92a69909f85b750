"""The open-files limit a server runs with: raised to the hard limit unless -f says."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.support import free_port, wait_for_port


def open_files_limits(pid: int) -> tuple[str, str]:
    with open(f"/proc/{pid}/limits") as limits:
        found = re.search(r"^Max open files\s+(\S+)\s+(\S+)", limits.read(), re.M)
    assert found is not None
    return found[1], found[2]


def soft_limit(soft: int) -> Callable[[], None]:
    def apply() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def serve_with(soft: int, *args: str) -> tuple[str, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "geartrain", "serve", "-L", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--queue", "none", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=soft_limit(soft),
    )
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        return open_files_limits(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def hard_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard


@pytest.mark.skipif(hard_limit() <= 256, reason="the hard open-files limit is 256 or less")
def test_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = serve_with(256)
    if hard_limit() == resource.RLIM_INFINITY:
        assert (soft, hard) == (str(1 << 20), "unlimited")
    else:
        assert (soft, hard) == (str(min(hard_limit(), 1 << 20)), str(hard_limit()))


def test_file_descriptors_option_sets_the_limit() -> None:
    soft, _ = serve_with(256, "-f", "300")
    assert soft == "300"
