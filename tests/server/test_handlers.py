"""Packet handlers and admin commands driven without sockets.

``dispatch`` sees a connection only as a :class:`~geartrain.server.jobs.Peer` and admin
commands only as an ``AdminContext``; here both are fakes that record what they are
sent, so the protocol-level rules are checked with no event loop and no network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from geartrain.protocol.codec import Packet
from geartrain.protocol.constants import ErrorCode
from geartrain.protocol.constants import PacketType as P
from geartrain.server.admin import run_admin
from geartrain.server.config import Settings
from geartrain.server.dispatch import HANDLERS
from geartrain.server.jobs import Peer
from geartrain.server.permissions import Rights
from geartrain.server.scheduler import Scheduler
from geartrain.server.tls import Identity

from .fakes import FakePeer, make_scheduler


def handle(peer: FakePeer, ptype: int, *args: bytes, data: bytes = b"") -> None:
    HANDLERS[ptype](peer, Packet(ptype, args, data))


def test_submit_grab_complete_round_trip() -> None:
    scheduler, _ = make_scheduler()
    client, worker = FakePeer("client", scheduler), FakePeer("worker", scheduler)
    handle(client, P.SUBMIT_JOB, b"reverse", b"u1", data=b"abc")
    [(kind, (handle_,), _)] = client.take()
    assert kind == P.JOB_CREATED
    handle(worker, P.CAN_DO, b"reverse")
    handle(worker, P.GRAB_JOB_UNIQ)
    assert worker.take() == [(P.JOB_ASSIGN_UNIQ, (handle_, b"reverse", b"u1"), b"abc")]
    handle(worker, P.WORK_STATUS, handle_, b"1", b"2")
    handle(worker, P.WORK_COMPLETE, handle_, data=b"cba")
    assert client.take() == [
        (P.WORK_STATUS, (handle_, b"1", b"2"), b""),
        (P.WORK_COMPLETE, (handle_,), b"cba"),
    ]
    handle(worker, P.GRAB_JOB)
    assert worker.take() == [(P.NO_JOB, (), b"")]


def test_a_large_result_reaches_every_coalesced_client_whole() -> None:
    scheduler, _ = make_scheduler()
    first, second = FakePeer("first", scheduler), FakePeer("second", scheduler)
    worker = FakePeer("worker", scheduler)
    for client in (first, second):
        handle(client, P.SUBMIT_JOB, b"f", b"same", data=b"x")
    handles = {client.take()[0][1][0] for client in (first, second)}
    assert len(handles) == 1
    handle(worker, P.CAN_DO, b"f")
    handle(worker, P.GRAB_JOB)
    (job_handle,) = handles
    result = bytes(range(256)) * 1024  # above the pass-through size
    handle(worker, P.WORK_COMPLETE, job_handle, data=result)
    assert first.take() == second.take() == [(P.WORK_COMPLETE, (job_handle,), result)]


def test_work_result_for_someone_elses_job_is_an_error() -> None:
    scheduler, _ = make_scheduler()
    client, worker, stranger = (FakePeer(n, scheduler) for n in ("c", "w", "s"))
    handle(client, P.SUBMIT_JOB, b"f", b"", data=b"x")
    job_handle = client.take()[0][1][0]
    handle(worker, P.CAN_DO, b"f")
    handle(worker, P.GRAB_JOB)
    worker.take()
    handle(stranger, P.WORK_COMPLETE, job_handle, data=b"mine?")
    [(kind, (code, _), _)] = stranger.take()
    assert (kind, code) == (P.ERROR, ErrorCode.JOB_NOT_FOUND)
    assert client.take() == []


def test_unknown_option_and_unexpected_packets_get_errors() -> None:
    scheduler, _ = make_scheduler()
    peer = FakePeer("p", scheduler)
    handle(peer, P.OPTION_REQ, b"exceptions")
    handle(peer, P.OPTION_REQ, b"colours")
    handle(peer, P.NOOP)
    got = peer.take()
    assert got[0] == (P.OPTION_RES, (b"exceptions",), b"")
    assert [(kind, args[0]) for kind, args, _ in got[1:]] == [
        (P.ERROR, ErrorCode.UNKNOWN_OPTION),
        (P.ERROR, ErrorCode.INVALID_COMMAND),
    ]
    assert peer.exceptions


def test_status_of_queued_running_and_unknown_jobs() -> None:
    scheduler, _ = make_scheduler()
    client, worker = FakePeer("c", scheduler), FakePeer("w", scheduler)
    handle(client, P.SUBMIT_JOB_BG, b"f", b"u", data=b"x")
    job_handle = client.take()[0][1][0]
    handle(client, P.GET_STATUS, job_handle)
    handle(worker, P.CAN_DO, b"f")
    handle(worker, P.GRAB_JOB)
    handle(worker, P.WORK_STATUS, job_handle, b"3", b"4")
    handle(client, P.GET_STATUS, job_handle)
    handle(client, P.GET_STATUS_UNIQUE, b"u")
    handle(client, P.GET_STATUS, b"H:nope:1")
    assert client.take() == [
        (P.STATUS_RES, (job_handle, b"1", b"0", b"0", b"0"), b""),
        (P.STATUS_RES, (job_handle, b"1", b"1", b"3", b"4"), b""),
        (P.STATUS_RES_UNIQUE, (b"u", b"1", b"1", b"3", b"4", b"0"), b""),
        (P.STATUS_RES, (b"H:nope:1", b"0", b"0", b"0", b"0"), b""),
    ]


# -- admin -------------------------------------------------------------------------


@dataclass
class FakeServer:
    settings: Settings = field(default_factory=Settings)
    version_string: str = "9.9.9"
    connections: list[Peer] = field(default_factory=list)
    stops: list[bool] = field(default_factory=list)

    def request_stop(self, graceful: bool = False) -> None:
        self.stops.append(graceful)


@dataclass
class FakeAdmin:
    scheduler: Scheduler
    server: FakeServer
    rights: Rights | None = None
    identity: Identity | None = None
    ip: str = "-"


def admin_for(**settings: object) -> tuple[FakeAdmin, Scheduler]:
    scheduler, _ = make_scheduler()
    return FakeAdmin(scheduler, FakeServer(Settings(**settings))), scheduler  # type: ignore[arg-type]


def test_admin_status_workers_and_version_without_a_server() -> None:
    admin, scheduler = admin_for()
    worker = FakePeer("w", scheduler)
    worker.fd, worker.ip, worker.client_id = 7, "10.0.0.9", b"w-1"
    admin.server.connections.append(worker)
    handle(worker, P.CAN_DO, b"resize")
    client = FakePeer("c", scheduler)
    handle(client, P.SUBMIT_JOB_BG, b"resize", b"", data=b"img")
    assert run_admin(admin, b"status") == b"resize\t1\t0\t1\n.\n"
    assert run_admin(admin, b"workers") == b"7 10.0.0.9 w-1 : resize\n.\n"
    assert run_admin(admin, b"version") == b"OK 9.9.9\n"
    assert run_admin(admin, b"maxqueue resize 1") == b"OK\r\n"
    handle(client, P.SUBMIT_JOB_BG, b"resize", b"", data=b"img2")
    assert client.take()[-1][:2] == (P.ERROR, (ErrorCode.QUEUE_ERROR, b"Job queue is full"))


def test_admin_shutdown_only_when_allowed() -> None:
    closed, _ = admin_for()
    assert run_admin(closed, b"shutdown").startswith(b"ERR UNKNOWN_COMMAND")
    assert closed.server.stops == []
    allowed, _ = admin_for(admin_shutdown=True)
    assert run_admin(allowed, b"shutdown graceful") == b"OK\r\n"
    assert allowed.server.stops == [True]


def test_admin_job_says_which_worker_runs_a_job_and_for_how_long() -> None:
    admin, scheduler = admin_for()
    worker = FakePeer("w", scheduler)
    worker.fd, worker.ip, worker.client_id = 7, "10.0.0.9", b"w-1"
    handle(worker, P.CAN_DO, b"resize")
    client = FakePeer("c", scheduler)
    handle(client, P.SUBMIT_JOB_BG, b"resize", b"u-1", data=b"img")
    handle(worker, P.GRAB_JOB)
    scheduler.jobs[b"H:test:1"].since_ns -= 2_500_000_000  # assigned 2.5 s ago
    lines = dict(
        line.split(b"\t", 1) for line in run_admin(admin, b"job H:test:1").splitlines()[:-1]
    )
    assert lines[b"state"] == b"running"
    assert lines[b"worker"] == b"7 10.0.0.9 w-1"
    assert 2.5 <= float(lines[b"running_for"]) < 60
