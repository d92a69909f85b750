"""A failing job's life through ``geartrain admin job`` and ``geartrain admin dead``:
retried by a policy, dead, shown, requeued, completed (a real server process and
our worker)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from geartrain.cli.admin import admin
from geartrain.client import Client
from geartrain.worker import WorkFail
from tests.client.helpers import wait_until, worker_thread
from tests.support import ServerProcess, start_geartrain


@pytest.fixture
def retrying_server() -> Iterator[ServerProcess]:
    server = start_geartrain(["--retry", "flaky=3,backoff=fixed,min=0.2"])
    yield server
    server.stop()


def cli(server: ServerProcess, *args: str) -> Any:
    """``geartrain admin ... --json`` parsed; fails the test on a non-zero exit."""
    result = CliRunner().invoke(admin, ["-p", str(server.port), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class Flaky:
    """A worker function that fails (WORK_FAIL, then an exception) until told not to."""

    def __init__(self) -> None:
        self.calls = 0
        self.healthy = threading.Event()

    def __call__(self, job: Any) -> bytes:
        self.calls += 1
        if self.healthy.is_set():
            return b"done"
        if self.calls % 2:
            raise WorkFail()
        raise RuntimeError(f"attempt {self.calls} broke")


def test_a_failing_job_is_retried_dead_shown_requeued_and_completed(
    retrying_server: ServerProcess,
) -> None:
    server = retrying_server
    flaky = Flaky()
    with Client([server.address], timeout=10) as client:
        handle = client.submit_background("flaky", b"payload", unique="order-7").decode()
    with worker_thread(server.address, {"flaky": flaky}, client_id="cli-worker"):
        dead = wait_until(lambda: cli(server, "dead", "list"))
        assert flaky.calls == 3
        [entry] = dead
        assert (entry["handle"], entry["function"], entry["unique"], entry["attempts"]) == (
            handle,
            "flaky",
            "order-7",
            3,
        )
        assert entry["last_outcome"] == "fail"

        shown = cli(server, "dead", "show", str(entry["id"]))
        assert [a["outcome"] for a in shown["attempts_kept"]] == ["fail", "exception", "fail"]
        assert "attempt 2 broke" in shown["attempts_kept"][1]["text"]
        assert all(a["worker"] == "127.0.0.1 cli-worker" for a in shown["attempts_kept"])
        assert shown["size"] == len(b"payload")
        assert cli(server, "job", handle)["state"] == "dead"
        assert cli(server, "job", "--unique", "flaky", "order-7")["id"] == entry["id"]

        flaky.healthy.set()
        assert cli(server, "dead", "requeue", str(entry["id"])) == {"count": 1}
        wait_until(lambda: flaky.calls == 4)
        assert cli(server, "dead", "list") == []
        wait_until(lambda: cli(server, "status") == [] or cli(server, "status")[0]["total"] == 0)
    assert cli(server, "dead", "stats") == {"jobs": 0, "bytes": 0, "dropped": 0}


def test_purge_and_usage_errors(retrying_server: ServerProcess) -> None:
    server = retrying_server
    result = CliRunner().invoke(admin, ["-p", str(server.port), "dead", "purge"])
    assert result.exit_code == 2 and "--all" in result.output
    assert cli(server, "dead", "purge", "--all", "--function", "flaky") == {"count": 0}
    missing = CliRunner().invoke(admin, ["-p", str(server.port), "dead", "show", "42"])
    assert missing.exit_code == 1 and "UNKNOWN_JOB" in missing.stderr
    plain = CliRunner().invoke(admin, ["-p", str(server.port), "dead", "list"])
    assert plain.stdout == ".\n"
