"""``/metrics`` on the HTTP listener, scraped during a real workload."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from geartrain.admin.aio import AsyncAdminClient
from geartrain.server.app import Server
from geartrain.worker import AsyncWorker

from .conftest import Gate, base_url, until


def _samples(text: str, metric: str) -> dict[str, float]:
    """``metric``'s samples summed by their ``function`` label (over priorities)."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric:
                function = sample.labels.get("function", "")
                sums[function] = sums.get(function, 0.0) + sample.value
    return sums


async def test_a_scrape_during_a_workload_counts_what_the_admin_protocol_reports(
    server: Server, worker: AsyncWorker, gate: Gate, client: aiohttp.ClientSession
) -> None:
    url = base_url(server)
    # Jobs held running by the worker (as many as it takes at once), the rest queued.
    for n in range(5):
        async with client.post(
            f"{url}/v1/functions/wait/jobs", params={"background": "true"}, data=b"%d" % n
        ) as reply:
            assert reply.status == 202
    await gate.until_entered(1)
    async with AsyncAdminClient(("127.0.0.1", server.port)) as admin:
        # A scrape read between two equal admin answers saw that same state (bounded:
        # the worker takes its last jobs within a few tries).
        for _ in range(50):
            status = await admin.status()
            async with client.get(f"{url}/metrics") as reply:
                assert reply.status == 200
                assert reply.headers["Content-Type"].startswith("text/plain")
                scraped = await reply.text()
            if await admin.status() == status:
                break
        else:
            raise AssertionError("the server never held still for a scrape")
    wait = next(row for row in status if row.function == "wait")
    assert _samples(scraped, "gearman_jobs")["wait"] == wait.total == 5
    assert _samples(scraped, "gearman_jobs_running")["wait"] == wait.running
    assert _samples(scraped, "gearman_jobs_waiting")["wait"] == wait.total - wait.running
    assert _samples(scraped, "gearman_workers")["wait"] == wait.workers == 1
    assert _samples(scraped, "gearman_up")[""] == 1

    gate.open.set()
    await until(lambda: not server.scheduler.jobs)
    async with client.get(f"{url}/metrics") as reply:
        after = await reply.text()
    completed = _samples(after, "geartrain_jobs_completed_total")
    assert completed.get("wait") == 5
