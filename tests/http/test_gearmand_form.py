"""gearmand's ``-r http`` form on the same listener: ``POST /FUNCTION`` and its headers."""

from __future__ import annotations

import asyncio

import aiohttp

from geartrain.server.app import Server
from geartrain.worker import AsyncWorker

from .conftest import Gate, base_url, gather_bounded, until


async def test_post_answers_like_gearmand(
    server: Server, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    async with client.post(f"{base_url(server)}/reverse", data=b"gearmand") as response:
        assert response.status == 200
        assert response.headers["X-Gearman-Command"] == "WORK_COMPLETE"
        assert response.headers["X-Gearman-Job-Handle"].startswith("H:http:")
        assert await response.read() == b"dnamraeg"


async def test_get_submits_an_empty_workload(
    server: Server, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{base_url(server)}/size") as response:
        assert response.status == 200 and await response.read() == b"0"


async def test_work_data_goes_into_the_body_in_order(
    server: Server, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    # gearmand 1.1 writes WORK_DATA over its own status line; here it is the body's start.
    async with client.post(f"{base_url(server)}/stream", data=b"x,y") as response:
        assert response.status == 200
        assert await response.read() == b"x;y;end"


async def test_a_failed_job_is_200_with_work_fail(
    server: Server, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    async with client.post(f"{base_url(server)}/fail", data=b"x") as response:
        assert response.status == 200
        assert response.headers["X-Gearman-Command"] == "WORK_FAIL"
        assert await response.read() == b""


async def test_background_header_returns_job_created(
    server: Server, client: aiohttp.ClientSession
) -> None:
    headers = {"X-Gearman-Background": "TRUE", "X-Gearman-Priority": "high"}
    async with client.post(f"{base_url(server)}/later", data=b"b", headers=headers) as response:
        assert response.status == 200
        assert response.headers["X-Gearman-Command"] == "JOB_CREATED"
        # An empty body, typed as a result is (the OpenAPI document says so).
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert await response.read() == b""
        handle = response.headers["X-Gearman-Job-Handle"]
    job = server.scheduler.jobs[handle.encode()]
    assert job.background and job.priority == 0 and job.unique == b"-"


async def test_default_unique_coalesces_identical_bodies_as_gearmand(
    server: Server, gate: Gate, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    url = f"{base_url(server)}/wait"
    first = asyncio.create_task(client.post(url, data=b"same"))
    await gate.until_entered(1)
    second = asyncio.create_task(client.post(url, data=b"same"))
    (job,) = server.scheduler.jobs.values()
    await until(lambda: len(job.clients) == 2)
    gate.open.set()
    responses = await gather_bounded(first, second)
    bodies = [await response.read() for response in responses]
    assert bodies == [b"released:same"] * 2 and gate.entered == 1
    for response in responses:
        response.release()


async def test_explicit_unique_and_low_priority_are_used(
    server: Server, client: aiohttp.ClientSession
) -> None:
    headers = {
        "X-Gearman-Background": "true",
        "X-Gearman-Priority": "low",
        "X-Gearman-Unique": "key-1",
    }
    async with client.post(f"{base_url(server)}/later", headers=headers) as response:
        handle = response.headers["X-Gearman-Job-Handle"].encode()
    job = server.scheduler.jobs[handle]
    assert (job.unique, job.priority) == (b"key-1", 2)


async def test_function_names_may_hold_slashes(
    server: Server, client: aiohttp.ClientSession
) -> None:
    headers = {"X-Gearman-Background": "true"}
    async with client.post(f"{base_url(server)}//a/b", headers=headers) as response:
        assert response.status == 200
    assert b"a/b" in server.scheduler.functions
