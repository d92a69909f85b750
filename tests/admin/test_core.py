"""Admin reply framing and parsing, without a server."""

from __future__ import annotations

import pytest

from geartrain.admin.core import (
    AdminProtocol,
    FunctionStatus,
    JobInfo,
    PriorityStatus,
    Shape,
    WorkerInfo,
    maxqueue_command,
    parse_error,
    parse_jobs,
    parse_memory,
    parse_priority_status,
    parse_status,
    parse_workers,
)
from geartrain.errors import AdminError, ProtocolError
from geartrain.protocol.codec import encode

TRANSCRIPT = [
    ("status", Shape.LIST, b"rev\t1\t0\t1\n.\n"),
    ("version", Shape.VALUE, b"OK 1.1.20+ds\n"),
    ("maxqueue x", Shape.OK, b"OK\r\n"),
    ("cancel job H:x:1", Shape.OK, b"ERR UNKNOWN_JOB\r\n"),
    ("workers", Shape.LIST, b"38 127.0.0.1 - : rev\n39 127.0.0.1 - :\n.\n"),
    ("show x", Shape.LIST, b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"),
]


def test_pipelined_replies_split_at_every_byte() -> None:
    stream = b"".join(raw for _, _, raw in TRANSCRIPT)
    for cut in range(len(stream) + 1):
        proto = AdminProtocol()
        replies = [proto.command(line, shape) for line, shape, _ in TRANSCRIPT]
        assert proto.data_to_send().count(b"\r\n") == len(TRANSCRIPT)
        done = proto.receive_data(stream[:cut]) + proto.receive_data(stream[cut:])
        assert done == replies
        assert [r.raw for r in replies] == [raw for _, _, raw in TRANSCRIPT]
    assert replies[0].lines == [b"rev\t1\t0\t1"]
    assert replies[1].value == b"1.1.20+ds"
    assert replies[2].error is None
    assert replies[3].error is not None and replies[3].error.code == "UNKNOWN_JOB"
    assert replies[5].error is not None and replies[5].error.code == "UNKNOWN_SHOW_ARGUMENTS"
    with pytest.raises(AdminError):
        replies[3].check()


def test_function_named_err_is_not_an_error() -> None:
    proto = AdminProtocol()
    reply = proto.command("status", Shape.LIST)
    proto.receive_data(b"ERR x\t1\t0\t0\n.\n")
    assert reply.error is None and parse_status(reply.lines)[0].function == "ERR x"


def test_ping_interleaves_a_binary_echo() -> None:
    proto = AdminProtocol()
    version = proto.command("version", Shape.VALUE)
    ping = proto.ping(b"tok")
    assert proto.data_to_send().endswith(encode(16, data=b"tok", magic=b"\0REQ"))
    proto.receive_data(b"OK 1\n" + encode(17, data=b"tok"))
    assert version.value == b"1" and ping.value == b"tok" and ping.done


def test_unsolicited_bytes_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        AdminProtocol().receive_data(b"OK\r\n")


def test_commands_must_be_one_line() -> None:
    with pytest.raises(ValueError):
        AdminProtocol().command("status\nworkers", Shape.LIST)


def test_error_parsing() -> None:
    error = parse_error(b"ERR UNKNOWN_COMMAND Unknown+server+commandfoo\r\n")
    assert (error.code, error.text) == ("UNKNOWN_COMMAND", "Unknown server commandfoo")
    odd = parse_error(b"ERR function not found\r\n")
    assert (odd.code, odd.text) == ("ERROR", "function not found")


def test_typed_parsers() -> None:
    assert parse_status([b"a b\t3\t1\t2"]) == [FunctionStatus("a b", 3, 1, 2)]
    assert parse_status([b"f\t3\t1\t2"])[0].queued == 2
    assert parse_priority_status([b"p\t1\t2\t3\t4"]) == [PriorityStatus("p", 1, 2, 3, 4)]
    assert parse_workers([b"40 127.0.0.1 - : pa pa", b"39 127.0.0.1  :", b"41 ::1 my id : f"]) == [
        WorkerInfo(40, "127.0.0.1", "-", ("pa", "pa")),
        WorkerInfo(39, "127.0.0.1", "", ()),
        WorkerInfo(41, "::1", "my id", ("f",)),
    ]
    assert parse_jobs([b"H:vm:1\t2\t1\t0"]) == [JobInfo("H:vm:1", 2, True, False)]


def test_maxqueue_command() -> None:
    assert maxqueue_command("f", ()) == "maxqueue f"
    assert maxqueue_command("f", (5,)) == "maxqueue f 5"
    assert maxqueue_command("f", (1, 2, 3)) == "maxqueue f 1 2 3"
    with pytest.raises(ValueError):
        maxqueue_command("f", (1, 2))


def test_memory_parser() -> None:
    report = parse_memory(
        [b"budget\t100", b"held\t7", b"over\t1", b"connection\t9\t10.0.0.1\tsubmitter one"]
    )
    assert report.figures == {"budget": 100, "held": 7, "over": 1}
    assert report.paused == ((9, "10.0.0.1", "submitter one"),)
