"""Switching from gearmand: its queued background jobs come over with --import-gearmand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import GEARMAND, admin_command, free_port, start_gearmand, start_geartrain

pytestmark = pytest.mark.interop


def test_jobs_queued_in_gearmand_sqlite_run_on_geartrain(tmp_path: Path) -> None:
    gearman = shutil.which("gearman")
    if GEARMAND is None or gearman is None:
        pytest.skip(
            "gearmand and gearman are not installed (apt-get install "
            "gearman-job-server gearman-tools)"
        )
    old_queue = tmp_path / "gearmand.sqlite3"
    gearmand = start_gearmand(["-q", "libsqlite3", f"--libsqlite3-db={old_queue}"])
    try:
        for unique, payload, flag in [
            ("a", "first", "-I"),
            ("b", "second", "-L"),
            ("c", "third", "-b"),
        ]:
            args = [
                gearman,
                "-h",
                "127.0.0.1",
                "-p",
                str(gearmand.port),
                "-b",
                "-f",
                "mig",
                "-u",
                unique,
            ]
            if flag != "-b":
                args.append(flag)
            subprocess.run(
                args, input=payload.encode(), check=True, timeout=10, capture_output=True
            )
    finally:
        gearmand.stop()

    port = free_port()
    new_queue = f"sqlite:///{tmp_path}/geartrain.sqlite3"
    server = start_geartrain(
        ["--import-gearmand", f"sqlite:///{old_queue}"], port=port, queue=new_queue
    )
    try:
        assert admin_command(port, b"prioritystatus") == b"mig\t1\t1\t1\t0\n.\n"
        done = subprocess.run(
            [
                gearman,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "-f",
                "mig",
                "-c",
                "3",
                "--",
                "cat",
            ],
            capture_output=True,
            timeout=20,
        )
        assert done.returncode == 0
        assert admin_command(port, b"status") == b"mig\t0\t0\t0\n.\n"
    finally:
        server.stop()
    # Importing again does not bring the finished jobs back.
    server = start_geartrain(
        ["--import-gearmand", f"sqlite:///{old_queue}"], port=port, queue=new_queue
    )
    try:
        assert admin_command(port, b"status") in (b".\n", b"mig\t0\t0\t0\n.\n")
    finally:
        server.stop()
