"""The HTTP gateway under a permissions file: its clients are known by their address."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from geartrain.server.app import Server

from .conftest import base_url, http_server

#: Loopback may submit to open-* only and read the status; it may not cancel.
RULES = """
[[grant]]
identity = {address = "127.0.0.0/8"}
submit = ["open-*"]
admin = "read"
"""


def jobs_url(server: Server, function: str) -> str:
    return f"{base_url(server)}/v1/functions/{function}/jobs"


async def test_submit_status_and_cancel_follow_the_address_rules(tmp_path: Path) -> None:
    path = tmp_path / "permissions.toml"
    path.write_text(RULES)
    async with (
        http_server(permissions=str(path)) as server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
    ):
        async with client.post(jobs_url(server, "secret") + "?background=true", data=b"x") as r:
            assert r.status == 403
            error = (await r.json())["error"]
        assert error["code"] == "permission_denied"
        assert error["message"] == "address 127.0.0.1 may not submit jobs to function 'secret'"
        # gearmand's form is the same submission, refused the same way.
        async with client.post(f"{base_url(server)}/secret", data=b"x") as r:
            assert r.status == 403
        assert b"secret" not in server.scheduler.functions

        async with client.post(jobs_url(server, "open-1") + "?background=true", data=b"x") as r:
            assert r.status == 202
            handle = (await r.json())["handle"]
        async with client.get(f"{base_url(server)}/v1/jobs/{handle}") as r:
            assert r.status == 200
            assert (await r.json())["known"] is True
        async with client.delete(f"{base_url(server)}/v1/jobs/{handle}") as r:
            assert r.status == 403
            assert "may not cancel jobs (needs admin write)" in (await r.json())["error"]["message"]
        assert handle.encode() in server.scheduler.jobs
        assert server.counters.permission_denied == {"submit": 2, "admin": 1}


async def test_status_of_a_function_the_client_may_not_submit_to_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "permissions.toml"
    path.write_text('[default]\nsubmit = ["open-*"]\n')
    async with (
        http_server(permissions=str(path)) as server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
    ):
        job = server.scheduler.submit(None, b"secret", b"u1", b"", 1, True)
        assert not isinstance(job, tuple)
        async with client.get(f"{base_url(server)}/v1/jobs/{job.handle.decode()}") as r:
            assert r.status == 403
        async with client.get(f"{base_url(server)}/v1/functions/secret/uniques/u1") as r:
            assert r.status == 403
        async with client.get(f"{base_url(server)}/v1/functions/open-1/uniques/u1") as r:
            assert r.status == 200
            assert (await r.json())["known"] is False
        assert server.counters.permission_denied == {"status": 2}


async def test_the_status_page_data_and_metrics_need_admin_read(tmp_path: Path) -> None:
    path = tmp_path / "permissions.toml"
    path.write_text('[default]\nsubmit = ["*"]\n')  # no admin read for anyone
    async with (
        http_server(permissions=str(path)) as server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
    ):
        for route in ("/api/status", "/api/jobs?handle=H:x:1", "/metrics", "/v1/dead"):
            async with client.get(base_url(server) + route) as r:
                assert r.status == 403, route
                message = (await r.json())["error"]["message"]
            assert message.endswith("(needs admin read)")
        async with client.get(base_url(server) + "/healthz") as r:
            assert r.status == 200  # probes need nothing
        path.write_text('[default]\nadmin = "read"\n')
        assert server.reload_permissions()
        async with client.get(base_url(server) + "/metrics") as r:
            assert r.status == 200
            assert 'geartrain_permission_denied_total{kind="admin"} 4.0' in await r.text()
        # Reading the dead-letter queue is a read; requeueing or purging is a change.
        async with client.get(base_url(server) + "/v1/dead") as r:
            assert r.status == 200
        for method in ("POST", "DELETE"):
            path_of = "/v1/dead/1/requeue" if method == "POST" else "/v1/dead/1"
            async with client.request(method, base_url(server) + path_of) as r:
                assert r.status == 403, method
                assert (await r.json())["error"]["message"].endswith("(needs admin write)")
