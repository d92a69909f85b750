"""Packet handlers: one short function per request type, found by table.

``HANDLERS[type](connection, packet)`` is the whole dispatch. Handlers translate
packets into scheduler calls and scheduler results into reply packets; the rules
themselves live in the scheduler.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from geartrain.protocol.codec import Packet, res_packet
from geartrain.protocol.constants import (
    MAX_CLIENT_ID_SIZE,
    MAX_HANDLE_SIZE,
    MAX_OPTION_SIZE,
    ErrorCode,
    Priority,
)
from geartrain.protocol.constants import PacketType as P
from geartrain.protocol.numbers import parse_c_int

from . import replies
from .jobs import Job, JobState, Peer
from .replies import (
    JOB_ASSIGN,
    JOB_ASSIGN_ALL,
    JOB_ASSIGN_UNIQ,
    JOB_CREATED,
    NO_JOB,
    send_with_data,
)
from .scheduler import Error

Handler = Callable[[Peer, Packet], None]

_NORMAL = int(Priority.NORMAL)
_NOT_FOUND = b"Job given in work result not found"
_NOT_FOUND_DATA = b"Job does not exist on server"
_NOT_FOUND_EXCEPTION = b"An exception was received for a job that does not exist"


# -- submission ----------------------------------------------------------------------


def _reply_submitted(conn: Peer, result: Job | Error) -> None:
    if isinstance(result, tuple):
        conn.send_error(*result)
    elif result.write is None:
        conn.send(res_packet(JOB_CREATED, result.handle))
    else:
        # A stored job is acknowledged only once durable (or refused by the store).
        conn.send_after(result.write, res_packet(JOB_CREATED, result.handle))


def _submitter(priority: int, background: bool) -> Handler:
    # A plain int, not the Priority member: jobs carry it into list indexing on every
    # queue operation and into the persistent queue's rows, where an IntEnum is slower
    # to index with, to bind as an SQL parameter and to serialize.
    priority = int(priority)

    def submit(conn: Peer, packet: Packet) -> None:
        name, unique = packet.args
        if conn.rights is not None and conn.rights.refuses_submit(conn, name):
            return
        result = conn.scheduler.submit(conn, name, unique, packet.data, priority, background)
        _reply_submitted(conn, result)

    return submit


def submit_epoch(conn: Peer, packet: Packet) -> None:
    name, unique, when_text = packet.args
    if conn.rights is not None and conn.rights.refuses_submit(conn, name):
        return
    when = _parse_epoch(when_text)
    if when is None:
        conn.send_error(ErrorCode.INVALID_PACKET, b"Epoch time is not a valid number")
        return
    result = conn.scheduler.submit(conn, name, unique, packet.data, _NORMAL, True, when=when)
    _reply_submitted(conn, result)


def _reducer(background: bool) -> Handler:
    def submit_reduce(conn: Peer, packet: Packet) -> None:
        name, unique, reducer, _aggregator = packet.args
        if conn.rights is not None and conn.rights.refuses_submit(conn, name):
            return
        result = conn.scheduler.submit(
            conn, name, unique, packet.data, _NORMAL, background, reducer=reducer
        )
        _reply_submitted(conn, result)

    return submit_reduce


#: Whole seconds with a decimal fraction, as geartrain's clients send on request.
_EPOCH_DECIMAL = re.compile(rb"[ \t]*\+?[0-9]+\.[0-9]+")


def _parse_epoch(text: bytes) -> float | None:
    # gearmand uses strtoll: garbage means 0 (run now); we keep that, but reject
    # values no clock will reach instead of dropping the connection. A fraction is
    # honoured: gearmand stops reading at the '.', so it runs such a job at the whole
    # second, early; clients therefore send fractions only to servers known to be ours.
    value = parse_c_int(text)
    if value > 2**63 - 1:
        return None
    if value <= 0:
        return 0
    decimal = _EPOCH_DECIMAL.match(text)
    return float(decimal[0]) if decimal else value


# -- workers -------------------------------------------------------------------------


def can_do(conn: Peer, packet: Packet) -> None:
    name = packet.args[0]
    if conn.rights is not None and conn.rights.refuses_work(conn, name):
        return
    conn.scheduler.can_do(conn, name)


def can_do_timeout(conn: Peer, packet: Packet) -> None:
    name, timeout = packet.args
    if conn.rights is not None and conn.rights.refuses_work(conn, name):
        return
    conn.scheduler.can_do(conn, name, parse_c_int(timeout))


def cant_do(conn: Peer, packet: Packet) -> None:
    conn.scheduler.cant_do(conn, packet.args[0])


def reset_abilities(conn: Peer, packet: Packet) -> None:
    conn.scheduler.reset_abilities(conn)


def pre_sleep(conn: Peer, packet: Packet) -> None:
    conn.scheduler.pre_sleep(conn)


def grab_job(conn: Peer, packet: Packet) -> None:
    job = conn.scheduler.grab(conn)
    if job is None:
        conn.send(NO_JOB)
    else:
        send_with_data((conn,), JOB_ASSIGN, (job.handle, job.function.name), job.data)


def grab_job_uniq(conn: Peer, packet: Packet) -> None:
    job = conn.scheduler.grab(conn)
    if job is None:
        conn.send(NO_JOB)
    else:
        send_with_data(
            (conn,), JOB_ASSIGN_UNIQ, (job.handle, job.function.name, job.unique), job.data
        )


def grab_job_all(conn: Peer, packet: Packet) -> None:
    job = conn.scheduler.grab(conn)
    if job is None:
        conn.send(NO_JOB)
    elif job.reducer:
        args = (job.handle, job.function.name, job.unique, job.reducer)
        send_with_data((conn,), JOB_ASSIGN_ALL, args, job.data)
    else:
        send_with_data(
            (conn,), JOB_ASSIGN_UNIQ, (job.handle, job.function.name, job.unique), job.data
        )


def set_client_id(conn: Peer, packet: Packet) -> None:
    conn.client_id = packet.args[0][:MAX_CLIENT_ID_SIZE]


# -- results -------------------------------------------------------------------------


def work_status(conn: Peer, packet: Packet) -> None:
    handle, numerator, denominator = packet.args
    job = conn.scheduler.owned(conn, handle)
    if job is None:
        conn.send_error(ErrorCode.JOB_NOT_FOUND, _NOT_FOUND)
    else:
        conn.scheduler.work_status(job, numerator, denominator)


def work_data(conn: Peer, packet: Packet) -> None:
    job = conn.scheduler.owned(conn, packet.args[0])
    if job is None:
        conn.send_error(ErrorCode.JOB_NOT_FOUND, _NOT_FOUND_DATA)
    else:
        conn.scheduler.work_data(job, packet.type, packet.data)


def work_complete(conn: Peer, packet: Packet) -> None:
    handle = packet.args[0]
    job = conn.scheduler.owned(conn, handle)
    if job is not None:
        conn.scheduler.work_complete(job, packet.data)
    elif handle not in conn.ended:
        conn.send_error(ErrorCode.JOB_NOT_FOUND, _NOT_FOUND)


def work_fail(conn: Peer, packet: Packet) -> None:
    handle = packet.args[0].rstrip(b"\0")
    if len(handle) > MAX_HANDLE_SIZE:
        conn.send_error(ErrorCode.ARGUMENT_TOO_LARGE, b"Job handle too large")
        return
    job = conn.scheduler.owned(conn, handle)
    if job is not None:
        conn.scheduler.work_fail(job)
    elif handle not in conn.ended:
        # A WORK_FAIL right after this worker's own WORK_EXCEPTION for the same
        # handle (Perl Gearman::Worker) is ignored: an ERROR here would be read as
        # the reply to its next GRAB_JOB and kill it (PROTOCOL.md §14).
        conn.send_error(ErrorCode.JOB_NOT_FOUND, _NOT_FOUND)


def work_exception(conn: Peer, packet: Packet) -> None:
    job = conn.scheduler.owned(conn, packet.args[0])
    if job is None:
        conn.send_error(ErrorCode.JOB_NOT_FOUND, _NOT_FOUND_EXCEPTION)
    else:
        conn.scheduler.work_exception(job, packet.data)


def unreadable_result(conn: Peer, handle: bytes) -> None:
    """A work result of this worker's that could not be read (e.g. sent with \\0RES magic).

    The worker believes it ended the job and will not report it again: left assigned,
    the job would never end. Its outcome is unknown, so it runs again, as on gearmand,
    which closes such a worker's connection. (A malformed WORK_STATUS needs nothing: the
    job stays with its worker, whose final result is still accepted.)
    """
    job = conn.scheduler.owned(conn, handle)
    if job is not None:
        conn.scheduler.requeue(job, "its worker's result could not be read")


# -- status, echo, options -------------------------------------------------------------


def get_status(conn: Peer, packet: Packet) -> None:
    handle = packet.args[0]
    job = conn.scheduler.jobs.get(handle)
    if job is None:
        conn.send(replies.status(handle, False, False, 0, 0))
        return
    if conn.rights is not None and conn.rights.refuses_status(conn, job.function.name):
        return
    running = job.state is JobState.RUNNING
    conn.send(replies.status(handle, True, running, job.numerator, job.denominator))


def get_status_unique(conn: Peer, packet: Packet) -> None:
    unique = packet.args[0]
    job = conn.scheduler.status_by_unique(unique)
    if job is None:
        conn.send(replies.status_unique(unique, False, False, 0, 0, 0))
        return
    if conn.rights is not None and conn.rights.refuses_status(conn, job.function.name):
        return
    running = job.state is JobState.RUNNING
    conn.send(
        replies.status_unique(
            unique, True, running, job.numerator, job.denominator, len(job.clients)
        )
    )


def echo(conn: Peer, packet: Packet) -> None:
    send_with_data((conn,), P.ECHO_RES, (), packet.data)


def option_req(conn: Peer, packet: Packet) -> None:
    name = packet.args[0]
    if len(name) <= MAX_OPTION_SIZE and name.rstrip(b"\0").lower() == b"exceptions":
        conn.exceptions = True
        conn.send(replies.option_accepted(name))
    else:
        conn.send_error(ErrorCode.UNKNOWN_OPTION, b"Server does not recognize given option")


def not_expected(conn: Peer, packet: Packet) -> None:
    conn.send_error(ErrorCode.INVALID_COMMAND, b"Command not expected")


def _table() -> list[Handler]:
    table: list[Handler] = [not_expected] * 43
    entries: dict[int, Handler] = {
        P.CAN_DO: can_do,
        P.CANT_DO: cant_do,
        P.RESET_ABILITIES: reset_abilities,
        P.PRE_SLEEP: pre_sleep,
        P.SUBMIT_JOB: _submitter(Priority.NORMAL, False),
        P.SUBMIT_JOB_BG: _submitter(Priority.NORMAL, True),
        P.SUBMIT_JOB_HIGH: _submitter(Priority.HIGH, False),
        P.SUBMIT_JOB_HIGH_BG: _submitter(Priority.HIGH, True),
        P.SUBMIT_JOB_LOW: _submitter(Priority.LOW, False),
        P.SUBMIT_JOB_LOW_BG: _submitter(Priority.LOW, True),
        P.SUBMIT_JOB_EPOCH: submit_epoch,
        P.SUBMIT_REDUCE_JOB: _reducer(False),
        P.SUBMIT_REDUCE_JOB_BACKGROUND: _reducer(True),
        P.GRAB_JOB: grab_job,
        P.GRAB_JOB_UNIQ: grab_job_uniq,
        P.GRAB_JOB_ALL: grab_job_all,
        P.WORK_STATUS: work_status,
        P.WORK_COMPLETE: work_complete,
        P.WORK_FAIL: work_fail,
        P.WORK_EXCEPTION: work_exception,
        P.WORK_DATA: work_data,
        P.WORK_WARNING: work_data,
        P.GET_STATUS: get_status,
        P.GET_STATUS_UNIQUE: get_status_unique,
        P.ECHO_REQ: echo,
        P.OPTION_REQ: option_req,
        P.SET_CLIENT_ID: set_client_id,
        P.CAN_DO_TIMEOUT: can_do_timeout,
        # SUBMIT_JOB_SCHED, ALL_YOURS and every server-to-client type stay
        # `not_expected`, as in gearmand (PROTOCOL.md §2.2, §4.3).
    }
    for ptype, handler in entries.items():
        table[ptype] = handler
    return table


HANDLERS: list[Handler] = _table()
