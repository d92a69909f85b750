"""Packet numbers, magic codes and the argument layout of every Gearman packet.

The numbers and layouts are fixed by the protocol (gearmand's PROTOCOL file, and
what gearmand 1.1.x accepts on the wire). ``ARGUMENTS`` is the single table the
codec uses to split and to join bodies.
"""

from enum import IntEnum
from typing import Final

REQ: Final = b"\0REQ"
RES: Final = b"\0RES"
HEADER_SIZE: Final = 12

DEFAULT_PORT: Final = 4730

#: Longest unique id honoured whole (gearmand stores 63 of 64; we keep all 64).
MAX_UNIQUE_SIZE: Final = 64
#: Handles must fit libgearman's 64-byte buffer including its terminator.
MAX_HANDLE_SIZE: Final = 63
#: SET_CLIENT_ID keeps this many bytes, as gearmand does.
MAX_CLIENT_ID_SIZE: Final = 127
#: Option names of 64 bytes or more are unknown options in gearmand.
MAX_OPTION_SIZE: Final = 63
#: The largest body the 32-bit size field can announce, and the default cap on one
#: packet: what gearmand accepts. A server spools large bodies to disk rather than
#: holding them (protocol/spool.py), so the cap guards no memory; --max-packet-size
#: lowers it.
DEFAULT_MAX_PACKET_SIZE: Final = 2**32 - 1
#: Admin lines are short commands; gearmand closes at its 8 KiB buffer.
MAX_ADMIN_LINE: Final = 8192


class PacketType(IntEnum):
    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    UNUSED = 5
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


#: The highest packet number that exists; 0 and anything above are not Gearman.
MAX_PACKET_TYPE: Final = 42

P = PacketType

#: (argument count, has trailing data) per packet type, as gearmand's parser uses
#: them. With trailing data the first N arguments are NUL-terminated and the rest of
#: the body is opaque data; without, the last of the N arguments is unterminated.
ARGUMENTS: Final[dict[int, tuple[int, bool]]] = {
    P.CAN_DO: (1, False),
    P.CANT_DO: (1, False),
    P.RESET_ABILITIES: (0, False),
    P.PRE_SLEEP: (0, False),
    P.UNUSED: (0, False),
    P.NOOP: (0, False),
    P.SUBMIT_JOB: (2, True),
    P.JOB_CREATED: (1, False),
    P.GRAB_JOB: (0, False),
    P.NO_JOB: (0, False),
    P.JOB_ASSIGN: (2, True),
    P.WORK_STATUS: (3, False),
    P.WORK_COMPLETE: (1, True),
    P.WORK_FAIL: (1, False),
    P.GET_STATUS: (1, False),
    P.ECHO_REQ: (0, True),
    P.ECHO_RES: (0, True),
    P.SUBMIT_JOB_BG: (2, True),
    P.ERROR: (2, False),
    P.STATUS_RES: (5, False),
    P.SUBMIT_JOB_HIGH: (2, True),
    P.SET_CLIENT_ID: (1, False),
    P.CAN_DO_TIMEOUT: (2, False),
    P.ALL_YOURS: (0, False),
    P.WORK_EXCEPTION: (1, True),
    P.OPTION_REQ: (1, False),
    P.OPTION_RES: (1, False),
    P.WORK_DATA: (1, True),
    P.WORK_WARNING: (1, True),
    P.GRAB_JOB_UNIQ: (0, False),
    P.JOB_ASSIGN_UNIQ: (3, True),
    P.SUBMIT_JOB_HIGH_BG: (2, True),
    P.SUBMIT_JOB_LOW: (2, True),
    P.SUBMIT_JOB_LOW_BG: (2, True),
    P.SUBMIT_JOB_SCHED: (7, True),
    P.SUBMIT_JOB_EPOCH: (3, True),
    P.SUBMIT_REDUCE_JOB: (4, True),
    P.SUBMIT_REDUCE_JOB_BACKGROUND: (4, True),
    P.GRAB_JOB_ALL: (0, False),
    P.JOB_ASSIGN_ALL: (4, True),
    P.GET_STATUS_UNIQUE: (1, False),
    P.STATUS_RES_UNIQUE: (6, False),
}


#: Data-carrying types whose one argument is a job handle and whose body may stop at the
#: handle, with no NUL and no data: the data is then empty. Perl's Gearman::Worker sends
#: WORK_COMPLETE that way whenever its function returns "", "0" or undef; gearmand drops
#: such a worker's connection (the job then runs again), we deliver the empty result.
HANDLE_ONLY_TYPES: Final = frozenset(
    {P.WORK_COMPLETE, P.WORK_DATA, P.WORK_WARNING, P.WORK_EXCEPTION}
)


#: The packets by which a worker ends its job.
RESULT_TYPES: Final = frozenset({P.WORK_COMPLETE, P.WORK_FAIL, P.WORK_EXCEPTION})


#: Types a server accepts from clients and workers. Anything else sent to a server
#: is answered with ERROR INVALID_COMMAND whatever its body holds (gearmand does the
#: same); SUBMIT_JOB_SCHED and ALL_YOURS exist but are not implemented by gearmand.
REQUEST_TYPES: Final = frozenset(
    {
        P.CAN_DO,
        P.CANT_DO,
        P.RESET_ABILITIES,
        P.PRE_SLEEP,
        P.SUBMIT_JOB,
        P.GRAB_JOB,
        P.WORK_STATUS,
        P.WORK_COMPLETE,
        P.WORK_FAIL,
        P.GET_STATUS,
        P.ECHO_REQ,
        P.SUBMIT_JOB_BG,
        P.SUBMIT_JOB_HIGH,
        P.SET_CLIENT_ID,
        P.CAN_DO_TIMEOUT,
        P.WORK_EXCEPTION,
        P.OPTION_REQ,
        P.WORK_DATA,
        P.WORK_WARNING,
        P.GRAB_JOB_UNIQ,
        P.SUBMIT_JOB_HIGH_BG,
        P.SUBMIT_JOB_LOW,
        P.SUBMIT_JOB_LOW_BG,
        P.SUBMIT_JOB_EPOCH,
        P.SUBMIT_REDUCE_JOB,
        P.SUBMIT_REDUCE_JOB_BACKGROUND,
        P.GRAB_JOB_ALL,
        P.GET_STATUS_UNIQUE,
    }
)
#: Types a client or worker may receive from a server.
RESPONSE_TYPES: Final = frozenset(
    {
        P.NOOP,
        P.JOB_CREATED,
        P.NO_JOB,
        P.JOB_ASSIGN,
        P.WORK_STATUS,
        P.WORK_COMPLETE,
        P.WORK_FAIL,
        P.ECHO_RES,
        P.ERROR,
        P.STATUS_RES,
        P.WORK_EXCEPTION,
        P.OPTION_RES,
        P.WORK_DATA,
        P.WORK_WARNING,
        P.JOB_ASSIGN_UNIQ,
        P.JOB_ASSIGN_ALL,
        P.STATUS_RES_UNIQUE,
    }
)


class Priority(IntEnum):
    """Queue priority; the value is the index of the function's queue list."""

    HIGH = 0
    NORMAL = 1
    LOW = 2


class ErrorCode:
    """ERROR packet codes (libgearman return-code names without GEARMAN_)."""

    INVALID_MAGIC: Final = b"INVALID_MAGIC"
    INVALID_COMMAND: Final = b"INVALID_COMMAND"
    INVALID_PACKET: Final = b"INVALID_PACKET"
    ARGUMENT_TOO_LARGE: Final = b"ARGUMENT_TOO_LARGE"
    QUEUE_ERROR: Final = b"QUEUE_ERROR"
    JOB_NOT_FOUND: Final = b"JOB_NOT_FOUND"
    UNKNOWN_OPTION: Final = b"UNKNOWN_OPTION"
    PERMISSION_DENIED: Final = b"PERMISSION_DENIED"
