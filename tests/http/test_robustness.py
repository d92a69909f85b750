"""Bad, huge, slow and idle HTTP clients: refused with 4xx, and the Gearman side unmoved."""

from __future__ import annotations

import asyncio
import resource

import aiohttp
import pytest

from geartrain.client import AsyncClient
from geartrain.server.app import Server
from geartrain.server.http import body
from geartrain.worker import AsyncWorker

from .conftest import base_url, http_server


async def raw_exchange(server: Server, request: bytes) -> bytes:
    """Send raw bytes to the HTTP listener; return everything it answers until it closes."""
    host, port = server.http_addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(65536)
    finally:
        writer.close()


async def gearman_round_trip(server: Server) -> bytes:
    async with AsyncClient([server.addresses[0]]) as gearman:
        return await gearman.echo(b"still here", timeout=10)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02 not http at all\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/functions/f/jobs HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
    ],
)
async def test_malformed_http_gets_a_4xx_and_the_server_carries_on(
    server: Server, garbage: bytes
) -> None:
    answer = await raw_exchange(server, garbage)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:200]
    assert await gearman_round_trip(server) == b"still here"


@pytest.mark.parametrize(
    "query",
    [
        "priority=urgent",
        "background=maybe",
        "timeout=-1",
        "timeout=nan",
        "timeout=soon",
        "timeout=1e9",
        "timeout=",
        "unique=" + "u" * 65,
        "unique=a%00b",
    ],
)
async def test_malformed_parameters_are_400_with_a_json_error(
    server: Server, client: aiohttp.ClientSession, query: str
) -> None:
    async with client.post(f"{base_url(server)}/v1/functions/f/jobs?{query}") as response:
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["code"].startswith("bad_") and error["message"]
    assert not server.scheduler.jobs


async def test_function_name_with_a_nul_is_refused(
    server: Server, client: aiohttp.ClientSession
) -> None:
    async with client.post(f"{base_url(server)}/v1/functions/a%00b/jobs") as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "bad_function"


async def test_unknown_paths_and_methods_are_json_4xx(
    server: Server, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{base_url(server)}/v1/no/such/thing") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
    async with client.patch(f"{base_url(server)}/v1/jobs/H:x:1") as response:
        assert response.status == 405
        assert (await response.json())["error"]["code"] == "method_not_allowed"
        assert "DELETE" in response.headers["Allow"]


async def test_a_body_over_max_packet_size_is_413_and_never_held() -> None:
    async with (
        http_server(max_packet_size=4096) as server,
        aiohttp.ClientSession() as client,
    ):
        url = f"{base_url(server)}/v1/functions/f/jobs"
        async with client.post(url, data=b"x" * 5000) as response:
            assert response.status == 413
            assert (await response.json())["error"]["code"] == "payload_too_large"

        async def chunked() -> object:  # no Content-Length: refused once it grows too big
            for _ in range(10):
                yield b"y" * 1000

        async with client.post(url, data=chunked()) as response:
            assert response.status == 413
        assert not server.scheduler.jobs
        assert await gearman_round_trip(server) == b"still here"


async def test_a_body_over_the_spool_threshold_goes_through_a_spool_file() -> None:
    async with http_server(spool_threshold=65536) as server:
        worker = AsyncWorker([server.addresses[0]], poll_interval=0.2)
        worker.register("size", lambda job: b"%d" % len(job.payload))
        working = asyncio.create_task(worker.work(handle_signals=False))
        try:
            async with aiohttp.ClientSession() as client:
                url = f"{base_url(server)}/v1/functions/size/jobs"
                async with client.post(url, data=b"z" * 300_000) as response:
                    assert response.status == 200
                    assert await response.read() == b"300000"
        finally:
            worker.stop()
            await asyncio.wait_for(working, 10)


async def test_a_slow_body_waits_without_blocking_anyone(
    server: Server, worker: AsyncWorker, client: aiohttp.ClientSession
) -> None:
    host, port = server.http_addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            b"POST /v1/functions/reverse/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc"
        )
        await writer.drain()
        # Half a body is in: the Gearman side and other HTTP clients are served meanwhile.
        assert await gearman_round_trip(server) == b"still here"
        async with client.get(f"{base_url(server)}/healthz") as response:
            assert response.status == 200
        writer.write(b"def")
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.readuntil(b"fedcba")
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_a_stalled_body_is_refused_with_408(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(body, "BODY_IDLE_TIMEOUT", 0.2)
    request = b"POST /v1/functions/f/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab"
    answer = await raw_exchange(server, request)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert not server.scheduler.jobs


#: Idle HTTP connections held open at once.
IDLE_CONNECTIONS = 1200


async def test_many_idle_http_connections_never_disturb_the_gearman_listener(
    server: Server,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * IDLE_CONNECTIONS + 200  # both ends live in this process
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    host, port = server.http_addresses[0]
    writers: list[asyncio.StreamWriter] = []
    try:
        async with asyncio.timeout(60):
            for index in range(IDLE_CONNECTIONS):
                _, writer = await asyncio.open_connection(host, port)
                if index % 2:  # half of them start a request and stop mid-headers
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                writers.append(writer)
        assert await gearman_round_trip(server) == b"still here"
        async with aiohttp.ClientSession() as client, client.get(f"{base_url(server)}/readyz") as r:
            assert r.status == 200
    finally:
        for writer in writers:
            writer.close()
    assert await gearman_round_trip(server) == b"still here"
