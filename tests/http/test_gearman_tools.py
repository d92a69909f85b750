"""The gateway with a real ``gearman -w`` worker (Debian's gearman-tools, libgearman 1.1)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from tests.interop.helpers import Processes, gearman_cmd, wait_until
from tests.interop.wire import wait_workers
from tests.support import ServerProcess

from .processes import geartrain_with_http, http, http_json

pytestmark = pytest.mark.interop


@pytest.fixture
def server() -> Iterator[tuple[ServerProcess, str]]:
    with geartrain_with_http() as (server, http_port):
        yield server, f"http://127.0.0.1:{http_port}"


@pytest.fixture
def procs() -> Iterator[Processes]:
    group = Processes()
    yield group
    group.stop_all()


def test_foreground_jobs_run_on_a_gearman_worker(
    server: tuple[ServerProcess, str], procs: Processes
) -> None:
    gearmand, base = server
    procs.spawn(gearman_cmd(gearmand, "-w", "-f", "upper", "--", "tr", "a-z", "A-Z"))
    wait_workers(gearmand, "upper")
    status, headers, body = http("POST", f"{base}/v1/functions/upper/jobs", b"hello")
    assert (status, body) == (200, b"HELLO")
    assert headers["X-Gearman-Command"] == "WORK_COMPLETE"
    status, headers, body = http("GET", f"{base}/upper")  # gearmand's form, empty workload
    assert (status, body, headers["X-Gearman-Command"]) == (200, b"", "WORK_COMPLETE")


def test_background_job_runs_on_a_gearman_worker_and_its_status_follows(
    server: tuple[ServerProcess, str], procs: Processes
) -> None:
    gearmand, base = server
    url = f"{base}/v1/functions/later/jobs?background=true&unique=tools-1"
    status, _, body = http("POST", url, b"queued first")
    handle = json.loads(body)["handle"]
    assert status == 202
    assert http_json("GET", f"{base}/v1/jobs/{handle}")[1]["known"] is True
    unique_status = http_json("GET", f"{base}/v1/functions/later/uniques/tools-1")[1]
    assert unique_status["handle"] == handle and unique_status["running"] is False
    procs.spawn(gearman_cmd(gearmand, "-w", "-c", "1", "-f", "later", "--", "cat"))

    def ended() -> bool:
        return http_json("GET", f"{base}/v1/jobs/{handle}")[1]["known"] is False

    wait_until(ended, what="the background job to end")


def test_same_unique_from_http_and_gearman_shares_one_job(
    server: tuple[ServerProcess, str], procs: Processes
) -> None:
    gearmand, base = server
    answers: list[tuple[int, dict[str, str], bytes]] = []
    # No worker yet: the HTTP request waits, then a gearman client joins with the same unique.
    waiting = threading.Thread(
        target=lambda: answers.append(
            http("POST", f"{base}/v1/functions/rev/jobs?unique=both", b"abc")
        )
    )
    waiting.start()
    try:

        def queued() -> bool:
            return http_json("GET", f"{base}/v1/functions/rev/uniques/both")[1]["known"] is True

        wait_until(queued, what="the HTTP job to be queued")
        client = procs.spawn(gearman_cmd(gearmand, "-u", "both", "-f", "rev", "abc"))
        wait_until(
            lambda: http_json("GET", f"{base}/v1/functions/rev/uniques/both")[1]["waiting"] == 2,
            what="both clients to wait on one job",
        )
        procs.spawn(gearman_cmd(gearmand, "-w", "-c", "1", "-f", "rev", "--", "rev"))
        assert Processes.finish(client).ok().stdout.strip() == b"cba"
    finally:
        waiting.join(30)
    assert [(status, body) for status, _, body in answers] == [(200, b"cba")]
