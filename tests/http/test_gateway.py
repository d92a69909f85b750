"""The HTTP/JSON gateway with our own worker: every outcome of a submission."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from geartrain.server.app import Server
from geartrain.server.jobs import JobState
from geartrain.worker import AsyncWorker

from .conftest import Gate, base_url, gather_bounded, http_server, until


def jobs_url(server: Server, function: str) -> str:
    return f"{base_url(server)}/v1/functions/{function}/jobs"


async def test_foreground_job_answers_with_its_result(
    server: Server, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    async with client.post(jobs_url(server, "reverse"), data=b"hello") as response:
        assert response.status == 200
        assert await response.read() == b"olleh"
        assert response.headers["X-Gearman-Command"] == "WORK_COMPLETE"
        assert response.headers["X-Gearman-Job-Handle"].startswith("H:http:")
    assert not server.scheduler.jobs  # nothing left behind


async def test_work_data_streams_in_order_before_the_result(
    server: Server, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    async with client.post(jobs_url(server, "stream"), data=b"a,b,c") as response:
        assert response.status == 200
        assert response.headers["X-Gearman-Command"] == "WORK_DATA"
        assert response.headers.get("Transfer-Encoding") == "chunked"
        chunks = [chunk async for chunk in response.content.iter_any()]
    assert b"".join(chunks) == b"a;b;c;end"


@pytest.mark.parametrize(("query", "body"), [("?timeout=0.3", b"hang"), ("", b"fail")])
async def test_a_stream_that_cannot_end_well_is_cut_short(
    server: Server,
    worker: AsyncWorker,
    client: aiohttp.ClientSession,
    query: str,
    body: bytes,
) -> None:
    # Data went out with a 200 already: a timeout or failure can only end the response
    # without its last chunk, which the client sees as an incomplete payload.
    async with client.post(jobs_url(server, "partial") + query, data=body) as response:
        assert response.status == 200
        assert response.headers["X-Gearman-Command"] == "WORK_DATA"
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    await until(lambda: not any(job.clients for job in server.scheduler.jobs.values()))


async def test_failure_and_exception_are_bad_gateway_with_a_json_error(
    server: Server, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    async with client.post(jobs_url(server, "fail"), data=b"no") as response:
        assert response.status == 502
        error = (await response.json())["error"]
        assert error["code"] == "job_exception"
        assert "refused: no" in error["message"]
        assert response.headers["X-Gearman-Command"] == "WORK_EXCEPTION"


async def test_timeout_gives_504_and_the_unwanted_job_is_dropped(
    server: Server, client: aiohttp.ClientSession
) -> None:
    # No worker: the job stays queued, and once its only waiter gives up it is not run.
    url = jobs_url(server, "nobody") + "?timeout=0.2"
    async with client.post(url, data=b"x") as response:
        assert response.status == 504
        assert (await response.json())["error"]["code"] == "timeout"
    f = server.scheduler.functions[b"nobody"]
    assert f.total == 0 and not server.scheduler.jobs


async def test_timeout_header_works_too(server: Server, client: aiohttp.ClientSession) -> None:
    headers = {"X-Gearman-Timeout": "0.1"}
    async with client.post(jobs_url(server, "nobody"), headers=headers) as response:
        assert response.status == 504


async def test_background_job_returns_its_handle_and_runs(
    server: Server, gate: Gate, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    url = jobs_url(server, "wait") + "?background=true&unique=bg-1"
    async with client.post(url, data=b"later") as response:
        assert response.status == 202
        handle = (await response.json())["handle"]
        assert response.headers["X-Gearman-Command"] == "JOB_CREATED"
    await gate.until_entered(1)
    async with client.get(f"{base_url(server)}/v1/jobs/{handle}") as response:
        status = await response.json()
    assert status == {
        "handle": handle,
        "known": True,
        "running": True,
        "numerator": 0,
        "denominator": 0,
    }
    gate.open.set()
    await until(lambda: handle.encode() not in server.scheduler.jobs)
    async with client.get(f"{base_url(server)}/v1/jobs/{handle}") as response:
        assert (await response.json())["known"] is False


async def test_same_unique_shares_one_job_and_both_get_the_result(
    server: Server, gate: Gate, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    url = jobs_url(server, "wait") + "?unique=shared"

    async def submit(body: bytes) -> tuple[str, bytes]:
        async with client.post(url, data=body) as response:
            return response.headers["X-Gearman-Job-Handle"], await response.read()

    first = asyncio.create_task(submit(b"one"))
    await gate.until_entered(1)
    second = asyncio.create_task(submit(b"two"))
    f = server.scheduler.functions[b"wait"]
    await until(lambda: any(len(job.clients) == 2 for job in f.uniques.values()))
    async with client.get(f"{base_url(server)}/v1/functions/wait/uniques/shared") as response:
        by_unique = await response.json()
    assert by_unique["known"] is True and by_unique["waiting"] == 2
    gate.open.set()
    results = await gather_bounded(first, second)
    assert results[0] == results[1] == (by_unique["handle"], b"released:one")
    assert gate.entered == 1  # ran once


async def test_priorities_order_background_jobs(
    server: Server, client: aiohttp.ClientSession
) -> None:
    # Queued without a worker, then read from the scheduler's queues.
    for priority in ("low", "normal", "high"):
        url = jobs_url(server, "ordered") + f"?background=1&priority={priority}"
        async with client.post(url, data=priority.encode()) as response:
            assert response.status == 202
    queues = server.scheduler.functions[b"ordered"].queues
    assert [[job.data for job in queue] for queue in queues] == [[b"high"], [b"normal"], [b"low"]]


async def test_cancel_takes_a_queued_job_and_refuses_a_running_one(
    server: Server, gate: Gate, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    async with client.post(jobs_url(server, "wait") + "?background=true") as response:
        running = (await response.json())["handle"]
    await gate.until_entered(1)
    async with client.delete(f"{base_url(server)}/v1/jobs/{running}") as response:
        assert response.status == 409
        assert (await response.json())["error"]["code"] == "job_running"

    async with client.post(jobs_url(server, "idle") + "?background=true") as response:
        queued = (await response.json())["handle"]
    async with client.delete(f"{base_url(server)}/v1/jobs/{queued}") as response:
        assert response.status == 200
        assert await response.json() == {"handle": queued, "cancelled": True}
    assert queued.encode() not in server.scheduler.jobs
    assert server.scheduler.functions[b"idle"].total == 0
    async with client.delete(f"{base_url(server)}/v1/jobs/{queued}") as response:
        assert response.status == 404


async def test_cancelling_a_job_fails_its_http_waiter(
    server: Server, client: aiohttp.ClientSession
) -> None:
    waiting = asyncio.create_task(client.post(jobs_url(server, "idle"), data=b"x"))
    await until(lambda: bool(server.scheduler.jobs))
    (handle,) = server.scheduler.jobs
    async with client.delete(f"{base_url(server)}/v1/jobs/{handle.decode()}") as response:
        assert response.status == 200
    async with asyncio.timeout(10):
        response = await waiting
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "job_failed"
    response.release()


async def test_a_client_that_goes_away_leaves_the_job_to_its_other_waiter(
    server: Server, gate: Gate, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    url = jobs_url(server, "wait") + "?unique=two-waiters"
    staying = asyncio.create_task(client.post(url, data=b"kept"))
    await gate.until_entered(1)
    async with aiohttp.ClientSession() as other:
        leaving = asyncio.create_task(other.post(url, data=b"kept"))
        (job,) = server.scheduler.jobs.values()
        await until(lambda: len(job.clients) == 2)
        leaving.cancel()  # the client hangs up while waiting
    await until(lambda: len(job.clients) == 1)
    gate.open.set()
    async with asyncio.timeout(10):
        response = await staying
    assert response.status == 200 and await response.read() == b"released:kept"
    response.release()


async def test_a_client_that_goes_away_drops_a_job_nobody_else_wants(server: Server) -> None:
    host, port = server.http_addresses[0]
    _, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/functions/idle/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
    await until(lambda: bool(server.scheduler.jobs))
    assert server.scheduler.functions[b"idle"].total == 1
    writer.close()  # the client hangs up while waiting
    await until(lambda: not server.scheduler.jobs)
    assert server.scheduler.functions[b"idle"].total == 0
    assert all(job.state is JobState.ENDED for job in server.scheduler.functions[b"idle"].queues[1])


async def test_the_servers_job_timeout_caps_every_wait() -> None:
    async with http_server(http_job_timeout=0.2) as server, aiohttp.ClientSession() as client:
        for query in ("", "?timeout=3600"):
            async with client.post(jobs_url(server, "nobody") + query) as response:
                assert response.status == 504
        assert not server.scheduler.jobs
