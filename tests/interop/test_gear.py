"""python ``gear`` (OpenStack's Gearman library, from PyPI) as client, worker and admin tool.

gear keeps one FIFO of pending replies per connection shared by JOB_CREATED, ERROR and
OPTION_RES, reads admin list replies up to ``\\n.\\n`` and ``version``/``cancel job`` replies up to
the first ``\\n`` (PROTOCOL.md §12.1, §14).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest

from tests.interop.helpers import MISSING, wait_until
from tests.interop.wire import Conn
from tests.support import ServerProcess

pytestmark = [
    pytest.mark.interop,
    # gear 0.16 still calls threading.Condition.notifyAll().
    pytest.mark.filterwarnings("ignore:notifyAll:DeprecationWarning"),
]


@pytest.fixture
def gear() -> ModuleType:
    try:
        import gear as module
    except ImportError:
        pytest.skip(f"python gear {MISSING}: pip install gear")
    assert isinstance(module, ModuleType)
    return module


@pytest.fixture
def client(gear: ModuleType, any_server: ServerProcess) -> Iterator[Any]:
    c = gear.Client("interop-client")
    c.addServer(any_server.host, any_server.port)
    c.waitForServer(timeout=10)
    yield c
    c.shutdown()


@pytest.fixture
def worker(gear: ModuleType, any_server: ServerProcess) -> Iterator[Any]:
    w = gear.Worker("interop-worker")
    w.addServer(any_server.host, any_server.port)
    w.waitForServer(timeout=10)
    yield w
    w.shutdown()


def get_job(worker: Any, timeout: float = 10.0) -> Any:
    """``Worker.getJob`` blocks forever; give up (and unblock it) after ``timeout`` seconds."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(worker.getJob)
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            worker.stopWaitingForJobs()
            pytest.fail(f"gear worker got no job within {timeout}s")


def admin_request(client: Any, request: Any) -> bytes:
    connection = client.getConnection()
    connection.sendAdminRequest(request, timeout=10)
    return bytes(request.response)


def test_submit_job_and_complete(gear: ModuleType, client: Any, worker: Any) -> None:
    worker.registerFunction("upper")
    job = gear.Job("upper", b"hello gear", unique="u-1")
    client.submitJob(job, timeout=10)
    assert job.handle and job.handle.startswith(b"H:")

    work = get_job(worker)
    assert (work.name, work.arguments, work.unique) == ("upper", b"hello gear", b"u-1")
    assert work.handle == job.handle
    work.sendWorkStatus(1, 2)
    work.sendWorkData(b"partial ")
    work.sendWorkComplete(work.arguments.upper())

    wait_until(lambda: job.complete, what="WORK_COMPLETE at the gear client")
    assert job.failure is False
    assert job.data == [b"partial ", b"HELLO GEAR"]
    assert (job.numerator, job.denominator) == (b"1", b"2")


def test_work_fail(gear: ModuleType, client: Any, worker: Any) -> None:
    worker.registerFunction("will_fail")
    job = gear.Job("will_fail", b"x")
    client.submitJob(job, timeout=10)
    get_job(worker).sendWorkFail()
    wait_until(lambda: job.complete, what="WORK_FAIL at the gear client")
    assert job.failure is True


def test_exception_option(gear: ModuleType, client: Any, worker: Any) -> None:
    assert client.setOption("exceptions", timeout=10) is True
    worker.registerFunction("will_raise")
    job = gear.Job("will_raise", b"x")
    client.submitJob(job, timeout=10)
    get_job(worker).sendWorkException(b"trace here")
    wait_until(lambda: job.complete, what="WORK_EXCEPTION at the gear client")
    assert (job.failure, job.exception) == (True, b"trace here")


def test_unknown_option_is_an_error(client: Any) -> None:
    # The ERROR pops the pending OPTION_REQ; the option is not recorded as set.
    assert client.setOption("no-such-option", timeout=10) is False


def test_background_job_and_status(
    gear: ModuleType, client: Any, worker: Any, any_server: ServerProcess
) -> None:
    job = gear.Job("bg_status", b"data", unique="bg-1")
    client.submitJob(job, background=True, precedence=gear.PRECEDENCE_HIGH, timeout=10)

    def status_of(job: Any) -> tuple[Any, ...]:
        job.known = None
        client.sendPacket(
            gear.Packet(gear.constants.REQ, gear.constants.GET_STATUS, job.handle), job.connection
        )
        wait_until(lambda: job.known is not None, what="STATUS_RES at the gear client")
        return (job.known, job.running, job.numerator, job.denominator)

    assert status_of(job) == (True, False, b"0", b"0")
    worker.registerFunction("bg_status")
    work = get_job(worker)
    assert work.handle == job.handle
    work.sendWorkStatus(2, 5)
    with Conn(any_server) as conn:
        conn.sync()
    wait_until(lambda: status_of(job) == (True, True, b"2", b"5"), what="running 2/5")
    work.sendWorkComplete(b"")
    wait_until(lambda: status_of(job) == (False, False, b"0", b"0"), what="finished job unknown")


def test_coalescing_across_gear_clients(
    gear: ModuleType, client: Any, worker: Any, any_server: ServerProcess
) -> None:
    other = gear.Client("second-client")
    other.addServer(any_server.host, any_server.port)
    other.waitForServer(timeout=10)
    try:
        first, second = (
            gear.Job("shared", b"a", unique="same"),
            gear.Job("shared", b"b", unique="same"),
        )
        client.submitJob(first, timeout=10)
        other.submitJob(second, timeout=10)
        assert first.handle == second.handle
        worker.registerFunction("shared")
        work = get_job(worker)
        assert work.arguments == b"a"  # the attached submission's payload is ignored
        work.sendWorkComplete(b"both")
        wait_until(lambda: first.complete and second.complete, what="both clients complete")
        assert first.data == second.data == [b"both"]
    finally:
        other.shutdown()


def test_admin_helpers(gear: ModuleType, client: Any, worker: Any) -> None:
    worker.registerFunction("adm_fn")
    job = gear.Job("adm_fn", b"x", unique="adm-u")
    client.submitJob(job, background=True, timeout=10)
    queued = gear.Job("adm_other", b"y", unique="adm-v")
    client.submitJob(queued, background=True, timeout=10)

    def status_lines() -> list[bytes]:
        return sorted(admin_request(client, gear.StatusAdminRequest()).splitlines())

    wait_until(lambda: b"adm_fn\t1\t0\t1" in status_lines(), what="status line for adm_fn")
    assert status_lines() == [b".", b"adm_fn\t1\t0\t1", b"adm_other\t1\t0\t0"]

    jobs = admin_request(client, gear.ShowJobsAdminRequest())
    assert sorted(jobs.splitlines()) == sorted(
        [b".", job.handle + b"\t0\t0\t1", queued.handle + b"\t0\t0\t1"]
    )
    uniques = admin_request(client, gear.ShowUniqueJobsAdminRequest())
    assert sorted(uniques.splitlines()) == [b".", b"adm-u", b"adm-v"]

    workers = admin_request(client, gear.WorkersAdminRequest()).splitlines()
    assert workers[-1] == b"."
    assert any(line.endswith(b" interop-worker : adm_fn") for line in workers), workers

    version = admin_request(client, gear.VersionAdminRequest())
    assert version.startswith(b"OK ") and version.endswith(b"\n") and version.count(b"\n") == 1

    cancelled = admin_request(client, gear.CancelJobAdminRequest(queued.handle))
    assert cancelled == b"OK\r\n"
    unknown = admin_request(client, gear.CancelJobAdminRequest(b"H:nowhere:7"))
    assert unknown == b"ERR UNKNOWN_JOB\r\n"


def test_worker_registration_listed(
    gear: ModuleType, worker: Any, any_server: ServerProcess
) -> None:
    """gear sends SET_CLIENT_ID and CAN_DO_TIMEOUT; the server lists them in ``workers``."""
    worker.registerFunction("re_fn", timeout=b"30000")  # gear wants the number as bytes
    with Conn(any_server) as conn:
        wait_until(
            lambda: b" interop-worker : re_fn\n" in conn.admin("workers"),
            what="gear worker listed with its function",
        )


def test_worker_replaces_its_functions(
    gear: ModuleType, worker: Any, any_server: ServerProcess
) -> None:
    """gear's setFunctions sends RESET_ABILITIES and then the new CAN_DO set (names as bytes:
    this path of gear does not convert them)."""
    worker.setFunctions([gear.FunctionRecord(b"fa"), gear.FunctionRecord(b"fb")])
    with Conn(any_server) as conn:
        wait_until(
            lambda: b" interop-worker : fb fa\n" in conn.admin("workers"),
            what="both functions listed",
        )
        worker.setFunctions([gear.FunctionRecord(b"fc")])
        wait_until(
            lambda: b" interop-worker : fc\n" in conn.admin("workers"),
            what="only the new function listed",
        )
        status = sorted(conn.admin("status").splitlines())
    assert status == [b".", b"fa\t0\t0\t0", b"fb\t0\t0\t0", b"fc\t0\t0\t1"]
