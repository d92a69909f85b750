"""The status page: its JSON against the admin protocol, and the page in a real browser.

The browser test loads the page in headless Chromium (Debian's ``chromium``, driven by
Playwright) against a server with queued and running jobs, checks every number it shows
against ``gearadmin --status``, finds a job and cancels it with a click, and saves a
screenshot in ``build/test-artifacts`` (or ``$GEARTRAIN_ARTIFACTS``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from geartrain.protocol.constants import PacketType as P
from geartrain.server.app import Server
from geartrain.server.status import DepthHistory, snapshot
from tests.interop.helpers import MISSING

from .conftest import Connect, RawClient, running_server

ARTIFACTS = Path(os.environ.get("GEARTRAIN_ARTIFACTS", "build/test-artifacts"))


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A server with its HTTP listener on a free port (the ``connect`` fixture uses it)."""
    async with running_server(job_handle_prefix="H:test", http_port=0) as srv:
        yield srv


def page_url(server: Server) -> str:
    assert server.http is not None
    host, port = server.http.addresses[0]
    return f"http://{host}:{port}/"


async def workload(connect: Connect) -> tuple[RawClient, RawClient, list[bytes]]:
    """resize: 5 queued, 1 running; thumbnail: 2 queued at low priority; one worker.

    Returns the client, the worker (holding its running job) and the queued resize
    jobs' handles.
    """
    client = await connect()
    for n in range(5):
        client.send(P.SUBMIT_JOB_BG, b"resize", b"r%d" % n, data=b"image")
    client.send(P.SUBMIT_JOB_HIGH_BG, b"resize", b"urgent", data=b"image")
    for n in range(2):
        client.send(P.SUBMIT_JOB_LOW_BG, b"thumbnail", b"t%d" % n, data=b"image")
    created = await client.packets(8)
    assert all(ptype == P.JOB_CREATED for ptype, _, _ in created)
    worker = await connect()
    worker.send(P.SET_CLIENT_ID, b"worker-1")
    worker.send(P.CAN_DO, b"resize")
    worker.send(P.CAN_DO, b"thumbnail")
    worker.send(P.GRAB_JOB)
    ((ptype, args, _),) = await worker.packets(1)
    assert ptype == P.JOB_ASSIGN and args[0] == created[5][1][0]  # the high one first
    return client, worker, [args[0] for _, args, _ in created[:5]]


# -- the JSON, against the admin protocol ------------------------------------------------


async def test_the_picture_counts_what_the_admin_protocol_counts(
    server: Server, connect: Connect
) -> None:
    await workload(connect)  # its connections stay open until the test ends
    admin = await connect()
    status = await admin.admin(b"status")
    history = DepthHistory(server.scheduler)
    history.sample(now=1.0)
    picture = snapshot(server, history)

    from_admin = {
        fields[0]: [int(n) for n in fields[1:]]
        for fields in (line.split("\t") for line in status.decode().splitlines()[:-1])
    }
    from_page = {f["name"]: [f["total"], f["running"], f["workers"]] for f in picture["functions"]}
    assert from_page == from_admin == {"resize": [6, 1, 1], "thumbnail": [2, 0, 1]}
    totals = {
        f["name"]: [f["submitted_total"], f["completed_total"], f["failed_total"]]
        for f in picture["functions"]
    }
    assert totals == {"resize": [6, 0, 0], "thumbnail": [2, 0, 0]}
    (shown,) = picture["workers"]
    assert shown["client_id"] == "worker-1"
    assert shown["functions"] == ["resize", "thumbnail"]
    assert shown["jobs"] == ["H:test:6"]
    assert picture["queue"] == {"backend": "none", "up": True, "reason": None, "outstanding": 0}
    assert picture["history"]["functions"] == {"resize": [6], "thumbnail": [2]}


async def test_the_depth_history_lines_up_functions_seen_late_and_forgets_dropped_ones(
    server: Server, connect: Connect
) -> None:
    history = DepthHistory(server.scheduler, length=3)
    history.sample(now=1.0)  # nothing yet
    client = await connect()
    client.send(P.SUBMIT_JOB_BG, b"late", b"u", data=b"x")
    await client.packets(1)
    history.sample(now=2.0)
    admin = await connect()
    assert await admin.admin(b"cancel job H:test:1") == b"OK\r\n"
    history.sample(now=3.0)
    history.sample(now=4.0)
    assert history.as_json()["functions"] == {"late": [1, 0, 0]}
    assert history.as_json()["times"] == [2.0, 3.0, 4.0]
    assert await admin.admin(b"drop function late") == b"OK\r\n"
    history.sample(now=5.0)
    assert history.as_json()["functions"] == {}


async def test_job_lookup_answers_json_and_refuses_with_4xx(
    server: Server, connect: Connect
) -> None:
    _, _, queued = await workload(connect)
    base = page_url(server)
    async with ClientSession() as http:
        async with http.get(base + "api/jobs", params={"handle": queued[0].decode()}) as reply:
            assert reply.status == 200
            job: dict[str, Any] = await reply.json()
        assert (job["function"], job["unique"], job["state"]) == ("resize", "r0", "queued")
        async with http.get(
            base + "api/jobs", params={"function": "resize", "unique": "urgent"}
        ) as reply:
            running = await reply.json()
        assert running["state"] == "running" and running["worker"]["address"] == "127.0.0.1"

        for params in ({}, {"function": "resize"}, {"handle": "H:test:999"}):
            async with http.get(base + "api/jobs", params=params) as reply:
                assert reply.status in (400, 404)
                assert "error" in await reply.json()
        for path in ("static/status_page.py", "static/index.html", "favicon.ico"):
            async with http.get(base + path) as reply:
                assert reply.status == 404, path
        async with http.get(base + "static/status.js") as reply:
            assert reply.status == 200 and "poll" in await reply.text()
    assert queued[0] in server.scheduler.jobs  # looking changed nothing


# -- the page, in a real browser ------------------------------------------------------------


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip(f"chromium {MISSING}: apt-get install chromium")
    return path


async def _gearadmin_status(port: int) -> dict[str, list[int]]:
    tool = shutil.which("gearadmin")
    if tool is None:
        pytest.skip(f"gearadmin {MISSING}: apt-get install gearman-tools")
    proc = await asyncio.create_subprocess_exec(
        tool, "--status", "-h", "127.0.0.1", "-p", str(port), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    return {
        fields[0]: [int(n) for n in fields[1:]]
        for fields in (line.split("\t") for line in out.decode().splitlines())
        if len(fields) == 4
    }


@pytest.mark.interop
@pytest.mark.timeout(120)
async def test_the_page_in_a_browser_shows_what_gearadmin_shows_and_cancels_a_job(
    server: Server, connect: Connect
) -> None:
    chromium = _chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip(f"playwright {MISSING}: pip install playwright")
    _, worker, queued = await workload(connect)
    expected = await _gearadmin_status(server.port)
    assert expected == {"resize": [6, 1, 1], "thumbnail": [2, 0, 1]}

    base = page_url(server)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            await page.goto(base)
            await page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
            for name, (total, running, workers) in expected.items():
                row = page.locator(f'tr[data-function="{name}"]')
                assert await row.locator('[data-field="total"]').inner_text() == str(total)
                assert await row.locator('[data-field="running"]').inner_text() == str(running)
                assert await row.locator('[data-field="workers"]').inner_text() == str(workers)
                waiting = await row.locator('[data-field="waiting"]').inner_text()
                assert waiting == str(total - running)
            # A job completed now shows as a rate on the next poll.
            worker.send(P.WORK_COMPLETE, b"H:test:6", data=b"done")
            await page.wait_for_function(
                "Number(document.querySelector("
                "'tr[data-function=\"resize\"] [data-field=completed_rate]').textContent) > 0",
                timeout=10_000,
            )
            worker.send(P.GRAB_JOB)  # the worker takes the next one: running stays 1
            worker_row = page.locator("#workers tbody tr")
            assert await worker_row.count() == 1
            assert "worker-1" in await worker_row.inner_text()

            # queued[0] now runs on the worker; the last one is still queued.
            await page.fill("input[name=handle]", queued[-1].decode())
            await page.click("#find-job button[type=submit]")
            await page.wait_for_selector("#job:not([hidden])", timeout=10_000)
            assert await page.locator('dd[data-field="state"]').inner_text() == "queued"
            await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
            await page.click("#cancel-job")
            await page.wait_for_function(
                "document.getElementById('job-message').textContent.startsWith('Cancelled')",
                timeout=10_000,
            )
            # The page follows on its next poll: one completed and one cancelled fewer.
            await page.wait_for_function(
                "document.querySelector('tr[data-function=\"resize\"] [data-field=total]')"
                ".textContent === '4'",
                timeout=10_000,
            )
        finally:
            await browser.close()
    after = await _gearadmin_status(server.port)
    assert after == {"resize": [4, 1, 1], "thumbnail": [2, 0, 1]}
