"""``geartrain serve --http-port`` as a process, and the README's curl one-liner."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.helpers import Processes, need_program
from tests.interop.wire import wait_workers
from tests.support import free_port, start_geartrain, wait_for_port

from .processes import geartrain_with_http, http, http_json

ROOT = Path(__file__).resolve().parents[2]

#: A worker of ours for ``reverse``, run as its own process.
REVERSE_WORKER = """
import sys
from geartrain.worker import Worker
worker = Worker([sys.argv[1]])
worker.register("reverse", lambda job: job.payload[::-1])
worker.work()
"""


@pytest.fixture
def procs() -> Processes:
    return Processes()


def test_serve_with_http_port_answers_probes_and_jobs(procs: Processes) -> None:
    with geartrain_with_http() as (server, http_port):
        base = f"http://127.0.0.1:{http_port}"
        assert http_json("GET", f"{base}/healthz") == (200, {"status": "alive"})
        assert http_json("GET", f"{base}/readyz") == (200, {"status": "ready"})
        try:
            procs.spawn([sys.executable, "-c", REVERSE_WORKER, f"127.0.0.1:{server.port}"])
            wait_workers(server, "reverse")
            status, headers, body = http("POST", f"{base}/v1/functions/reverse/jobs", b"abc")
            assert (status, body) == (200, b"cba")
            assert headers["X-Gearman-Command"] == "WORK_COMPLETE"
            status, _, body = http("POST", f"{base}/reverse", b"gearmand form")
            assert (status, body) == (200, b"mrof dnamraeg")
        finally:
            procs.stop_all()
        assert server.stop(signal.SIGTERM) == 0


def test_protocol_http_without_aiohttp_fails_to_start_with_the_hint(tmp_path: Path) -> None:
    # An interpreter where aiohttp cannot be imported: a module of that name that raises.
    (tmp_path / "aiohttp.py").write_text("raise ImportError('no aiohttp here')\n")
    command = [sys.executable, "-m", "geartrain", "serve", "-L", "127.0.0.1", "-p", "0"]
    command += ["--queue", "none", "--http-port", "0"]
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env, check=False)
    assert done.returncode == 1
    assert "pip install 'geartrain[http]'" in done.stderr


def readme_curl_line() -> str:
    text = (ROOT / "README.md").read_text()
    lines: list[str] = re.findall(r"^curl .*$", text, re.MULTILINE)
    assert len(lines) == 1, lines
    command, _, comment = lines[0].partition("#")
    assert comment.strip() == "prints olleh", comment
    return command.strip()


@pytest.mark.interop  # with CI set, a missing curl fails the test instead of skipping it
def test_the_readmes_curl_one_liner_prints_the_result(procs: Processes) -> None:
    curl = need_program("curl", "curl")
    command = shlex.split(readme_curl_line())
    assert command[0] == "curl" and "8080" in command[-1]
    http_port = free_port()
    server = start_geartrain(args=["-r", "http", "--http-port", str(http_port)])
    try:
        wait_for_port("127.0.0.1", http_port, proc=server.proc)
        procs.spawn([sys.executable, "-c", REVERSE_WORKER, f"127.0.0.1:{server.port}"])
        wait_workers(server, "reverse")
        command[0] = curl
        command[-1] = command[-1].replace("8080", str(http_port))
        done = subprocess.run(command, capture_output=True, timeout=30, check=False)
        assert (done.returncode, done.stdout) == (0, b"olleh")
    finally:
        procs.stop_all()
        server.stop()
