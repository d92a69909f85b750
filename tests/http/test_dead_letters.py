"""The dead-letter queue over HTTP: list, show, requeue and purge, with a real worker."""

from __future__ import annotations

import asyncio

import aiohttp

from geartrain.worker import AsyncWorker, Job

from .conftest import base_url, http_server, until


async def test_a_dead_job_is_listed_shown_requeued_completed_and_purged() -> None:
    broken = {"flaky": True}
    completed: list[bytes] = []

    def flaky(job: Job) -> bytes:
        if broken["flaky"]:
            raise RuntimeError(f"broken on {job.unique.decode()}")
        completed.append(job.unique)
        return b"done"

    async with (
        http_server(retry=["flaky=2,backoff=fixed,min=0.05"]) as server,
        aiohttp.ClientSession() as http,
    ):
        url = base_url(server)
        worker = AsyncWorker([f"127.0.0.1:{server.port}"], concurrency=1)
        worker.register("flaky", flaky)
        working = asyncio.create_task(worker.work(handle_signals=False))
        try:
            for unique in ("order-7", "order-8"):
                async with http.post(
                    f"{url}/v1/functions/flaky/jobs",
                    params={"background": "true", "unique": unique},
                    data=b"payload",
                ) as reply:
                    assert reply.status == 202
            await until(lambda: len(server.scheduler.dead) == 2, wait=15)

            async with http.get(f"{url}/v1/dead", params={"function": "flaky"}) as reply:
                listing = await reply.json()
            assert [(d["unique"], d["attempts"]) for d in listing["jobs"]] == [
                ("order-7", 2),
                ("order-8", 2),
            ]
            assert listing["total"] == 2 and listing["dropped"] == 0
            first, second = listing["jobs"]

            async with http.get(f"{url}/v1/dead/{first['id']}") as reply:
                shown = await reply.json()
            assert shown["size"] == len(b"payload") and shown["priority"] == "normal"
            assert [a["outcome"] for a in shown["history"]] == ["exception", "exception"]
            assert "broken on order-7" in shown["history"][0]["text"]

            broken["flaky"] = False  # the cause is fixed: requeue one, purge the other
            async with http.post(f"{url}/v1/dead/{first['handle']}/requeue") as reply:
                assert reply.status == 202
                assert (await reply.json())["id"] == first["id"]
            async with http.delete(f"{url}/v1/dead/{second['id']}") as reply:
                assert (await reply.json()) == {"id": second["id"], "purged": True}
            await until(lambda: completed == [b"order-7"] and not server.scheduler.jobs)
            assert len(server.scheduler.dead) == 0
        finally:
            worker.stop()
            await working

        for method, path in (("GET", "/v1/dead/999999"), ("DELETE", "/v1/dead/nope")):
            async with http.request(method, url + path) as reply:
                assert reply.status == 404
                assert (await reply.json())["error"]["code"] == "unknown_dead_job"
