"""Run the command lines that packaging files hold, the way their runners would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support import wait_for_port

ROOT = Path(__file__).resolve().parents[2]
#: The console script pip installed next to this interpreter: what a deployment runs.
GEARTRAIN = str(Path(sys.executable).parent / "geartrain")


def installed_command(argv: Sequence[str]) -> list[str]:
    """``argv`` with its ``geartrain`` program replaced by the one installed here."""
    assert Path(argv[0]).name == "geartrain", argv
    return [GEARTRAIN, *argv[1:]]


@contextmanager
def running(argv: Sequence[str], port: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv``; wait for ``port`` to listen if given; stop it with SIGTERM afterwards."""
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        if port is not None:
            wait_for_port("127.0.0.1", port, proc=proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def have(program: str) -> bool:
    return shutil.which(program) is not None


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without variables that would steer geartrain's options.

    GEARTRAIN_PURE stays: it chooses the build under test, not an option.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GEARTRAIN", "GEARMAN")) or k == "GEARTRAIN_PURE"
    }
    env.update(extra)
    return env
