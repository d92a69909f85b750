"""The sans-I/O server pool: order, rotation, rest periods, send failures, status merging."""

from __future__ import annotations

import pytest

from geartrain.client.pool import ServerPool, StatusSearch
from geartrain.client.servers import server_order
from geartrain.client.task import JobStatus, Task, TaskState
from geartrain.errors import NoServerAvailable

A, B, C = ("a", 1), ("b", 2), ("c", 3)


def status(known: bool, key: bytes = b"H:1") -> JobStatus:
    return JobStatus(key, known, False, 0, 0)


def first_pass(pool: ServerPool, unique: bytes) -> list[tuple[str, int]]:
    attempts = list(pool.attempts(unique))
    assert attempts[len(pool.servers) :] == [(a, False) for a, _ in attempts[: len(pool.servers)]]
    return [address for address, respect in attempts if respect]


def test_a_unique_id_picks_the_same_order_every_time() -> None:
    pool = ServerPool([A, B, C])
    expected = [pool.servers[i] for i in server_order(b"job-7", 3)]
    assert first_pass(pool, b"job-7") == expected
    assert first_pass(pool, b"job-7") == expected
    assert pool.order(b"job-7") == expected


def test_jobs_without_unique_rotate_over_the_servers() -> None:
    pool = ServerPool([A, B, C])
    starts = [first_pass(pool, b"")[0] for _ in range(4)]
    assert starts == [A, B, C, A]


def test_every_server_is_tried_once_with_and_once_without_rest_periods() -> None:
    attempts = list(ServerPool([A, B]).attempts(b""))
    assert attempts == [(A, True), (B, True), (A, False), (B, False)]


def test_a_refused_connection_rests_the_server_until_retry_after_passed() -> None:
    pool = ServerPool([A, B], retry_after=5.0)
    assert not pool.is_down(A, now=100.0)
    pool.connect_failed(A, now=100.0)
    assert pool.is_down(A, now=104.9)
    assert not pool.is_down(A, now=105.0)
    assert not pool.is_down(B, now=100.0)


def test_a_connection_ends_the_rest_period() -> None:
    pool = ServerPool([A], retry_after=5.0)
    pool.connect_failed(A, now=0.0)
    pool.connected(A)
    assert not pool.is_down(A, now=1.0)


@pytest.mark.parametrize("state", [TaskState.SUBMITTED, TaskState.NEW])
def test_a_failed_send_the_server_did_not_answer_moves_on(state: TaskState) -> None:
    task = Task("f", b"x")
    task.state = state  # NEW: already withdrawn from the broken connection
    verdict = ServerPool([A, B]).send_failed(task, "Connection reset by peer")
    assert verdict.retry
    assert verdict.reason == "send failed: Connection reset by peer"


@pytest.mark.parametrize("state", [TaskState.REJECTED, TaskState.CREATED])
def test_a_failed_send_the_server_answered_keeps_that_answer(state: TaskState) -> None:
    # REJECTED: ERROR for a packet over the server's limit, read before the close.
    task = Task("f", b"x")
    task.state = state
    verdict = ServerPool([A, B]).send_failed(task, "Broken pipe")
    assert not verdict.retry
    assert verdict.reason == "send failed: Broken pipe"


def test_unavailable_names_every_server() -> None:
    error = ServerPool([A, ("::1", 4730)]).unavailable()
    assert isinstance(error, NoServerAvailable)
    assert str(error) == "no job server reachable (a:1, [::1]:4730)"


class TestStatusSearch:
    def test_the_first_server_that_knows_the_job_settles_it(self) -> None:
        search = StatusSearch(ServerPool([A, B]))
        assert not search.add(status(False))
        assert search.add(status(True))
        assert search.result().known

    def test_without_a_known_answer_the_last_unknown_one_stands(self) -> None:
        search = StatusSearch(ServerPool([A, B]))
        search.add(status(False, b"H:1"))
        search.add(status(False, b"H:2"))
        assert search.result() == status(False, b"H:2")

    def test_no_answer_at_all_means_no_server(self) -> None:
        with pytest.raises(NoServerAvailable, match="no job server reachable"):
            StatusSearch(ServerPool([A])).result()
