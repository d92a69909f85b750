"""Three servers, one killed mid-run: no job is lost silently and none runs twice."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from geartrain.client import Client, TaskState
from geartrain.client.servers import server_order
from geartrain.errors import ConnectionLost
from geartrain.worker import Job
from tests.client.helpers import wait_until, worker_thread
from tests.support import GEARMAND, ServerProcess, start_gearmand, start_geartrain


@pytest.fixture(params=["geartrain", "gearmand"])
def three_servers(request: pytest.FixtureRequest) -> Iterator[list[ServerProcess]]:
    if request.param == "gearmand" and GEARMAND is None:
        pytest.skip("gearmand not installed: apt-get install gearman-job-server")
    start = start_gearmand if request.param == "gearmand" else start_geartrain
    servers: list[ServerProcess] = []
    try:
        for _ in range(3):
            servers.append(start())
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.mark.slow
def test_kill_one_of_three_servers_mid_run(three_servers: list[ServerProcess]) -> None:
    addresses = [s.address for s in three_servers]
    runs: Counter[bytes] = Counter()
    lock = threading.Lock()

    def work(job: Job) -> bytes:
        with lock:
            runs[job.unique] += 1
        time.sleep(0.01)  # a little work, so that jobs are still queued at the kill
        return job.payload.upper()

    victim = three_servers[1]
    with (
        worker_thread(addresses, {"up": work}) as worker,
        Client(addresses, timeout=30, connect_timeout=1) as client,
    ):
        wait_until(lambda: len(worker.connected) == 3)
        before = [client.submit("up", f"a{i}", unique=f"a{i}") for i in range(30)]
        assert client.gather(before) == [f"A{i}".encode() for i in range(30)]

        during = [client.submit("up", f"b{i}", unique=f"b{i}") for i in range(60)]
        for task in during:
            task.wait_created(10)
        victim.kill()
        client.wait(during, 30)

        after = [client.submit("up", f"c{i}", unique=f"c{i}") for i in range(30)]
        assert client.gather(after, 30) == [f"C{i}".encode() for i in range(30)]

    # Every job of the middle batch either finished or reports the lost connection.
    lost = [t for t in during if t.state is TaskState.LOST]
    done = [t for t in during if t.state is TaskState.COMPLETE]
    assert len(lost) + len(done) == len(during)
    for task in lost:
        assert task.server == victim.address
        with pytest.raises(ConnectionLost):
            task.outcome()
    for task in done:
        assert task.outcome() == task.payload.upper()
    assert lost, "the kill came too late to test anything"

    # Jobs whose preferred server died went to the next one in the list.
    for task in after:
        preferred = addresses[server_order(task.unique, 3)[0]]
        if preferred == victim.address:
            assert task.server == addresses[server_order(task.unique, 3)[1]]
    assert any(addresses[server_order(t.unique, 3)[0]] == victim.address for t in after)

    # Nothing ran twice; what the client saw complete ran exactly once.
    assert max(runs.values()) == 1
    for task in before + done + after:
        assert runs[task.unique] == 1


def test_clients_with_the_same_list_pick_the_same_server(
    three_servers: list[ServerProcess],
) -> None:
    addresses = [s.address for s in three_servers]
    with Client(addresses, timeout=10) as one, Client(list(addresses), timeout=10) as two:
        for i in range(12):
            a = one.submit("pick", b"x", unique=f"key-{i}", background=True)
            b = two.submit("pick", b"y", unique=f"key-{i}", background=True)
            assert a.server == b.server == addresses[server_order(a.unique, 3)[0]]
            # Same server, same key: the second submission coalesced onto the first.
            assert a.result() == b.result()
        assert len({one.submit("pick", unique=f"spread-{i}").server for i in range(30)}) == 3


@pytest.mark.slow
async def test_async_client_kill_one_of_three(three_servers: list[ServerProcess]) -> None:
    from geartrain.client import AsyncClient

    addresses = [s.address for s in three_servers]
    runs: Counter[bytes] = Counter()
    lock = threading.Lock()

    def work(job: Job) -> bytes:
        with lock:
            runs[job.unique] += 1
        time.sleep(0.01)
        return job.payload[::-1]

    victim = three_servers[2]
    with worker_thread(addresses, {"rev": work}) as worker:
        wait_until(lambda: len(worker.connected) == 3)
        async with AsyncClient(addresses, timeout=30, connect_timeout=1) as client:
            during = [await client.submit("rev", f"d{i}", unique=f"d{i}") for i in range(60)]
            for task in during:
                await task.wait_created()
            victim.kill()
            await client.wait(during)
            after = [await client.submit("rev", f"e{i}", unique=f"e{i}") for i in range(30)]
            assert await client.gather(after) == [f"e{i}".encode()[::-1] for i in range(30)]
    lost = [t for t in during if t.state is TaskState.LOST]
    assert lost and all(t.server == victim.address for t in lost)
    assert all(t.outcome() == t.payload[::-1] for t in during if t not in lost)
    assert all(t.server != victim.address for t in after)
    assert max(runs.values()) == 1
