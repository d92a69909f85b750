"""The sans-I/O client protocol, driven with hand-made server packets."""

from __future__ import annotations

import pytest

from geartrain.client.core import (
    ClientProtocol,
    JobStatus,
    RequestKind,
    Task,
    TaskState,
    UpdateKind,
)
from geartrain.client.servers import parse_address, parse_servers, server_order
from geartrain.errors import ConnectionLost, JobException, JobFailed, ProtocolError, ServerError
from geartrain.protocol import PacketType, Priority
from geartrain.protocol.codec import encode

P = PacketType


def res(ptype: int, *args: bytes, data: bytes = b"") -> bytes:
    return encode(ptype, *args, data=data)


def test_submit_packets_follow_priority_and_background() -> None:
    proto = ClientProtocol()
    cases = {
        (Priority.HIGH, False): P.SUBMIT_JOB_HIGH,
        (Priority.NORMAL, False): P.SUBMIT_JOB,
        (Priority.LOW, False): P.SUBMIT_JOB_LOW,
        (Priority.HIGH, True): P.SUBMIT_JOB_HIGH_BG,
        (Priority.NORMAL, True): P.SUBMIT_JOB_BG,
        (Priority.LOW, True): P.SUBMIT_JOB_LOW_BG,
    }
    for (priority, background), ptype in cases.items():
        proto.submit(Task("f", b"data", unique="u", priority=priority, background=background))
        wire = proto.data_to_send()
        assert wire[:4] == b"\0REQ"
        assert int.from_bytes(wire[4:8], "big") == ptype
        assert wire[12:] == b"f\0u\0data"


def test_epoch_task_is_background_normal_with_decimal_time() -> None:
    task = Task("f", "x", when=1_700_000_000, priority=Priority.HIGH)
    assert task.background and task.priority is Priority.NORMAL
    wire = task.packet()
    assert int.from_bytes(wire[4:8], "big") == P.SUBMIT_JOB_EPOCH
    assert wire[12:].split(b"\0")[2] == b"1700000000"


def test_background_gets_uuid_unique_foreground_gets_none() -> None:
    assert len(Task("f", background=True).unique) == 36
    assert Task("f").unique == b""
    assert Task("f", background=True, unique="mine").unique == b"mine"


def test_str_is_encoded_as_utf8() -> None:
    task = Task("fünf", "ï")
    assert task.function == "fünf".encode() and task.payload == "ï".encode()


def test_unique_longer_than_64_bytes_is_refused() -> None:
    Task("f", unique="u" * 64)
    with pytest.raises(ValueError):
        Task("f", unique="u" * 65)


def test_job_created_and_error_match_submissions_in_fifo_order() -> None:
    proto = ClientProtocol()
    first, second, third = Task("f"), Task("f"), Task("f")
    for task in (first, second, third):
        proto.submit(task)
    events = proto.receive_data(
        res(P.JOB_CREATED, b"H:1")
        + res(P.ERROR, b"QUEUE_ERROR", b"Job queue is full")
        + res(P.JOB_CREATED, b"H:3")
    )
    assert [e.kind for e in events] == [UpdateKind.CREATED, UpdateKind.REJECTED, UpdateKind.CREATED]
    assert first.handle == b"H:1" and third.handle == b"H:3"
    assert second.state is TaskState.REJECTED
    assert isinstance(second.error, ServerError) and second.error.code == "QUEUE_ERROR"


def test_results_are_matched_by_handle_and_interleave() -> None:
    proto = ClientProtocol()
    a, b = Task("f"), Task("f")
    proto.submit(a)
    proto.submit(b)
    proto.receive_data(res(P.JOB_CREATED, b"H:a") + res(P.JOB_CREATED, b"H:b"))
    proto.receive_data(
        res(P.WORK_DATA, b"H:b", data=b"part")
        + res(P.WORK_STATUS, b"H:a", b"1", b"4")
        + res(P.WORK_COMPLETE, b"H:b", data=b"B\0done")
        + res(P.WORK_WARNING, b"H:a", data=b"careful")
        + res(P.WORK_COMPLETE, b"H:a", data=b"")
    )
    assert b.outcome() == b"B\0done" and a.outcome() == b""
    assert (a.numerator, a.denominator) == (1, 4)
    assert [u.kind for u in b.updates] == [UpdateKind.CREATED, UpdateKind.DATA, UpdateKind.COMPLETE]
    assert [u.kind for u in a.updates] == [
        UpdateKind.CREATED,
        UpdateKind.STATUS,
        UpdateKind.WARNING,
        UpdateKind.COMPLETE,
    ]
    assert proto.outstanding == 0


@pytest.mark.parametrize("body", [b"H:1", b"H:1\0"])
def test_work_fail_body_is_the_handle_even_with_gearmands_stray_nul(body: bytes) -> None:
    proto = ClientProtocol()
    task = Task("f")
    proto.submit(task)
    proto.receive_data(res(P.JOB_CREATED, b"H:1") + encode(P.WORK_FAIL, body))
    assert task.state is TaskState.FAILED
    with pytest.raises(JobFailed):
        task.outcome()


def test_work_exception_carries_data() -> None:
    proto = ClientProtocol(exceptions=True)
    assert proto.data_to_send() == encode(P.OPTION_REQ, b"exceptions", magic=b"\0REQ")
    task = Task("f")
    proto.submit(task)
    proto.receive_data(
        res(P.OPTION_RES, b"exceptions")
        + res(P.JOB_CREATED, b"H:1")
        + res(P.WORK_EXCEPTION, b"H:1", data=b"ValueError: x")
    )
    with pytest.raises(JobException) as info:
        task.outcome()
    assert info.value.data == b"ValueError: x" and info.value.handle == b"H:1"


def test_status_replies_share_the_fifo() -> None:
    proto = ClientProtocol()
    task = Task("f")
    proto.submit(task)
    status = proto.request(RequestKind.STATUS, b"H:9")
    unique = proto.request(RequestKind.STATUS_UNIQUE, b"u")
    proto.receive_data(
        res(P.JOB_CREATED, b"H:1")
        + res(P.STATUS_RES, b"H:9", b"1", b"1", b"3", b"7")
        + res(P.STATUS_RES_UNIQUE, b"u", b"0", b"0", b"0", b"0", b"0")
    )
    assert status.outcome() == JobStatus(b"H:9", True, True, 3, 7)
    assert unique.outcome() == JobStatus(b"u", False, False, 0, 0, 0)


def test_reply_of_the_wrong_kind_is_a_protocol_error() -> None:
    proto = ClientProtocol()
    proto.request(RequestKind.ECHO, b"x")
    with pytest.raises(ProtocolError):
        proto.receive_data(res(P.JOB_CREATED, b"H:1"))


def test_connection_lost_fails_everything_outstanding() -> None:
    proto = ClientProtocol()
    waiting, running, background = Task("f"), Task("f"), Task("f", background=True)
    proto.submit(running)
    proto.submit(background)
    proto.receive_data(res(P.JOB_CREATED, b"H:1") + res(P.JOB_CREATED, b"H:2"))
    proto.submit(waiting)
    echo = proto.request(RequestKind.ECHO, b"x")
    proto.connection_lost()
    assert background.done and background.outcome() == b"H:2"
    for task in (waiting, running):
        assert task.state is TaskState.LOST
        with pytest.raises(ConnectionLost):
            task.outcome()
    with pytest.raises(ConnectionLost):
        echo.outcome()
    with pytest.raises(ConnectionLost):
        proto.submit(Task("f"))


def test_stream_split_at_every_byte_gives_the_same_result() -> None:
    stream = (
        res(P.JOB_CREATED, b"H:1")
        + res(P.WORK_DATA, b"H:1", data=b"abc")
        + res(P.WORK_COMPLETE, b"H:1", data=b"xyz")
    )
    for cut in range(len(stream) + 1):
        proto = ClientProtocol()
        task = Task("f")
        proto.submit(task)
        proto.receive_data(stream[:cut])
        proto.receive_data(stream[cut:])
        assert task.outcome() == b"xyz"


def test_parse_servers() -> None:
    assert parse_address("example:4731") == ("example", 4731)
    assert parse_address("[::1]:5") == ("::1", 5)
    assert parse_address("::1") == ("::1", 4730)
    assert parse_servers("a:1, b ,a:1") == [("a", 1), ("b", 4730)]
    assert parse_servers(("h", 9)) == [("h", 9)]
    assert parse_servers(["x:1", ("y", 2)]) == [("x", 1), ("y", 2)]
    with pytest.raises(ValueError):
        parse_address("a:70000")


def test_parse_servers_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEARMAN_SERVERS", raising=False)
    monkeypatch.delenv("GEARMAN_SERVER", raising=False)
    assert parse_servers(None) == [("127.0.0.1", 4730)]
    monkeypatch.setenv("GEARMAN_SERVER", "solo:1")
    assert parse_servers(None) == [("solo", 1)]
    monkeypatch.setenv("GEARMAN_SERVERS", "a:1,b:2")
    assert parse_servers(None) == [("a", 1), ("b", 2)]


def test_server_order_is_stable_and_covers_every_server() -> None:
    orders = {server_order(f"job-{i}".encode(), 3)[0] for i in range(100)}
    assert orders == {0, 1, 2}  # the hash spreads jobs
    for i in range(20):
        order = server_order(f"job-{i}".encode(), 3)
        assert sorted(order) == [0, 1, 2]
        assert order == server_order(f"job-{i}".encode(), 3)
    assert server_order(b"", 3, fallback=4) == [1, 2, 0]
