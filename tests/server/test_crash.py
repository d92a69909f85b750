"""Durability with a real server process: kill -9 mid-stream, backends cut under load.

Every background job that got JOB_CREATED must run after a restart (at least once);
none that got an ERROR may appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from geartrain.client.sync import Client
from geartrain.protocol.codec import Decoder, Packet, encode_request
from geartrain.protocol.constants import RES
from geartrain.protocol.constants import PacketType as P
from geartrain.worker.job import Job
from geartrain.worker.sync import Worker
from tests.server.load import Ledger, drain, restart_and_check, run_load
from tests.support import ServerProcess, free_port, start_geartrain

pytestmark = pytest.mark.slow

SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "mysql": ("127.0.0.1", 3306),
    "redis": ("127.0.0.1", 6379),
}


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _require(name: str) -> None:
    if name == "sqlite":
        return
    if not _reachable(*SERVICES[name]):
        message = f"{name} is not running on {SERVICES[name]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Backend:
    name: str
    url: str
    cleanup: Callable[[], None]
    cut: Callable[[], None] | None = None


def _sql_cleanup(name: str, prefix: str) -> Callable[[], None]:
    async def drop() -> None:
        if name == "postgres":
            import asyncpg

            conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
            await conn.execute(
                f"DROP TABLE IF EXISTS {prefix}_jobs, {prefix}_chunks, {prefix}_dead"
            )
            await conn.close()
        else:
            import aiomysql

            conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", db="test")
            async with conn.cursor() as cur:
                await cur.execute(
                    f"DROP TABLE IF EXISTS {prefix}_jobs, {prefix}_chunks, {prefix}_dead"
                )
            conn.close()

    return lambda: asyncio.run(drop())


def _cut(name: str) -> Callable[[], None]:
    """Kill the server's connections to the backend from the backend's side."""

    async def cut() -> None:
        if name == "postgres":
            import asyncpg

            conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = 'test' AND pid <> pg_backend_pid() "
                "AND application_name LIKE 'geartrain%'"
            )
            await conn.close()
        elif name == "mysql":
            import aiomysql

            conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", db="test")
            async with conn.cursor() as cur:
                await cur.execute(
                    "SELECT ID FROM information_schema.PROCESSLIST "
                    "WHERE DB = 'test' AND ID <> CONNECTION_ID()"
                )
                for (pid,) in await cur.fetchall():
                    with contextlib.suppress(Exception):  # already gone
                        await cur.execute(f"KILL {int(pid)}")
            conn.close()
        else:
            import redis.asyncio as aioredis

            client = aioredis.Redis(host="127.0.0.1", port=6379)
            for info in await client.client_list():
                if info.get("name", "").startswith("geartrain"):
                    await client.client_kill_filter(_id=info["id"])
            await client.aclose()

    return lambda: asyncio.run(cut())


@pytest.fixture(params=["sqlite", "postgres", "mysql", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name = request.param
    _require(name)
    prefix = "crash_" + uuid.uuid4().hex[:10]
    if name == "sqlite":
        yield Backend(name, f"sqlite:///{tmp_path}/queue.sqlite3", lambda: None)
        return
    if name == "redis":

        def cleanup() -> None:
            import redis

            # closing(): Redis.close() is untyped in the oldest redis-py allowed.
            with contextlib.closing(redis.Redis(host="127.0.0.1", port=6379)) as client:
                keys = list(client.scan_iter(match=f"{prefix}*"))
                if keys:
                    client.delete(*keys)

        url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
        backend = Backend(name, url, cleanup, _cut(name))
    elif name == "postgres":
        url = f"postgresql://postgres@127.0.0.1:5432/test?prefix={prefix}"
        backend = Backend(name, url, _sql_cleanup(name, prefix), _cut(name))
    else:
        url = f"mysql://root@127.0.0.1:3306/test?prefix={prefix}"
        backend = Backend(name, url, _sql_cleanup(name, prefix), _cut(name))
    try:
        yield backend
    finally:
        backend.cleanup()


def test_kill_9_mid_stream_loses_no_acknowledged_job(backend: Backend) -> None:
    port = free_port()
    server: ServerProcess = start_geartrain(port=port, queue=backend.url)
    ledger = Ledger()
    try:
        stop, threads = run_load(port, ledger, lambda: len(ledger.acked) >= 1500)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        stop.set()
        for thread in threads:
            thread.join(20)
    finally:
        server.kill()
    assert len(ledger.acked) >= 1500
    restart_and_check(port, backend.url, ledger)


@pytest.mark.parametrize("backend", ["postgres", "mysql", "redis"], indirect=True)
def test_backend_connections_cut_under_load(backend: Backend, tmp_path: Path) -> None:
    # SQLite is embedded: it has no connection to cut.
    assert backend.cut is not None
    port = free_port()
    log = tmp_path / "server.log"
    server = start_geartrain(["--verbose", "INFO"], port=port, queue=backend.url, log_path=str(log))
    ledger = Ledger()
    try:
        # Paced, so that the load is still running when the connections are cut.
        stop, threads = run_load(
            port, ledger, lambda: len(ledger.acked) >= 500, clients=2, limit=100_000, pause=0.02
        )
        for _ in range(3):
            backend.cut()
            time.sleep(0.3)
        target = len(ledger.acked) + 500
        deadline = time.monotonic() + 30
        while len(ledger.acked) < target and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(20)
        assert len(ledger.acked) >= target, "submissions did not resume after the cut"
        assert server.stop() == 0
    finally:
        server.kill()
    assert b"reconnect" in log.read_bytes(), "the cut did not reach the server's connection"
    restart_and_check(port, backend.url, ledger)


def _config(tmp_path: Path, **settings: object) -> list[str]:
    """``--config`` with a spool directory under ``tmp_path`` and ``settings``."""
    lines = [f'spool_directory = "{tmp_path / "spool"}"']
    lines += [f"{name} = {value!r}" for name, value in settings.items()]
    config = tmp_path / "geartrain.toml"
    config.write_text("\n".join(lines) + "\n")
    return ["--config", str(config)]


def _run_jobs(port: int, function: str, count: int) -> dict[bytes, bytes]:
    """Run ``count`` jobs of ``function`` with our worker; their payloads by unique."""
    received: dict[bytes, bytes] = {}

    def work(job: Job) -> bytes:
        received[job.unique] = bytes(job.payload)
        return b"done"

    worker = Worker([("127.0.0.1", port)], poll_interval=0.2)
    worker.register(function, work)
    try:
        worker.work(max_jobs=count, idle_timeout=60, handle_signals=False)
    finally:
        worker.close()
    return received


def test_a_large_background_job_survives_kill_9(backend: Backend, tmp_path: Path) -> None:
    # 12 MiB: spooled as it arrives, stored in chunks (never one value, nor whole in the
    # server's memory), loaded back into a spool file after the crash.
    payload = random.Random(12).randbytes(12 * 1024 * 1024 + 7)
    port = free_port()
    args = _config(tmp_path)
    server = start_geartrain(args, port=port, queue=backend.url)
    try:
        with Client([("127.0.0.1", port)], timeout=120) as client:
            client.submit_background("large", payload, unique="big")
            client.submit_background("large", b"small", unique="small")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        server = start_geartrain(args, port=port, queue=backend.url)
        received = _run_jobs(port, "large", 2)
        assert server.stop() == 0
    finally:
        server.kill()
    assert received.keys() == {b"big", b"small"}
    assert received[b"small"] == b"small"
    assert len(received[b"big"]) == len(payload) and received[b"big"] == payload
    assert os.listdir(tmp_path / "spool") == []  # spool files never have names


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_a_job_larger_than_mysql_takes_is_refused_alone(backend: Backend, tmp_path: Path) -> None:
    # MariaDB drops a connection that sends a statement over max_allowed_packet (16 MiB
    # here, so about 8 MiB of job as hex). A spooled payload goes in chunks and is
    # stored whatever its size; a payload held in memory (possible only with a spool
    # threshold above that) must fit in its row, and the server refuses it on its own:
    # the jobs pipelined around it are stored, and the queue stays up.
    port = free_port()
    args = _config(tmp_path, spool_threshold=32 * 1024 * 1024)
    server = start_geartrain(args, port=port, queue=backend.url)
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        decoder = Decoder(expect=RES, text=False)
        sizes = {b"before": 10, b"huge": 9 * 1024 * 1024, b"after": 10}
        sock.sendall(
            b"".join(
                encode_request(P.SUBMIT_JOB_BG, b"crash", unique, data=b"x" * size)
                for unique, size in sizes.items()
            )
        )
        replies: list[Packet] = []
        while len(replies) < len(sizes):
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            replies.extend(e for e in decoder.feed(chunk) if isinstance(e, Packet))
        sock.close()
        assert [r.type for r in replies] == [P.JOB_CREATED, P.ERROR, P.JOB_CREATED]
        assert replies[1].args[0] == b"QUEUE_ERROR"
        assert b"larger than the persistent queue takes" in replies[1].args[1]
        assert server.stop() == 0
        # Both small jobs were stored: a restarted server runs them.
        server = start_geartrain(args, port=port, queue=backend.url)
        assert sorted(drain(port)) == [b"after", b"before"]
    finally:
        server.kill()


def test_a_second_server_on_a_live_servers_queue_refuses_to_start(backend: Backend) -> None:
    # Two servers on one queue would each replay and run the other's jobs. The claim
    # dies with its holder: once the first server is killed -9, the second starts.
    first = start_geartrain(queue=backend.url)
    try:
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "geartrain",
                "serve",
                "-L",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "--queue",
                backend.url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert "the queue is in use by another server" in second.stderr, second.stderr
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        replacement = start_geartrain(queue=backend.url)
        replacement.stop()
    finally:
        first.kill()
