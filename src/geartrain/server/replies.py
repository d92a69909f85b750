"""Every packet the server sends, built in one place.

Handlers and the scheduler decide *what* to tell a peer; this module knows how it
looks on the wire. The per-job packets are built with ``res_packet`` around a body
laid out by hand (the general ``encode`` costs a table lookup and joins), and
packets with trailing data of :data:`PASS_THROUGH` bytes or more go out in two parts,
so a large payload (in memory or in a spool file) is never copied into a packet. One
packet is built where it is sent, from the constants here: JOB_CREATED, once per
submission, where a helper's call would be a measurable share of the work.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, cast

from geartrain.protocol.codec import Data, Payload, encode, encode_head, in_memory, res_packet
from geartrain.protocol.constants import ErrorCode
from geartrain.protocol.constants import PacketType as P

if TYPE_CHECKING:
    from .jobs import Peer

#: Trailing data at least this long is sent after its head, not copied into a packet.
PASS_THROUGH: Final = 65536

# Packet numbers as plain ints on the per-job paths (an Enum attribute costs ~60 ns).
JOB_CREATED: Final = int(P.JOB_CREATED)
JOB_ASSIGN: Final = int(P.JOB_ASSIGN)
JOB_ASSIGN_UNIQ: Final = int(P.JOB_ASSIGN_UNIQ)
JOB_ASSIGN_ALL: Final = int(P.JOB_ASSIGN_ALL)
WORK_STATUS: Final = int(P.WORK_STATUS)
WORK_COMPLETE: Final = int(P.WORK_COMPLETE)
WORK_FAIL: Final = int(P.WORK_FAIL)
WORK_EXCEPTION: Final = int(P.WORK_EXCEPTION)

NOOP: Final = encode(P.NOOP)
NO_JOB: Final = encode(P.NO_JOB)


def error(code: bytes, text: bytes) -> bytes:
    return encode(P.ERROR, code, text)


def queue_refused(reason: bytes) -> bytes:
    """What a submitter gets instead of JOB_CREATED when the persistent queue refused."""
    return encode(P.ERROR, ErrorCode.QUEUE_ERROR, reason)


def work_status(handle: bytes, numerator: bytes, denominator: bytes) -> bytes:
    return res_packet(WORK_STATUS, b"\0".join((handle, numerator, denominator)))


def work_fail(handle: bytes) -> bytes:
    # Exactly the handle: libgearman matches WORK_FAIL by length (PROTOCOL.md §7.4).
    return res_packet(WORK_FAIL, handle)


def work_exception(handle: bytes, text: Payload) -> bytes:
    return encode(P.WORK_EXCEPTION, handle, data=in_memory(text))


def _status_fields(
    known: bool, running: bool, numerator: int, denominator: int
) -> tuple[bytes, ...]:
    return (
        b"1" if known else b"0",
        b"1" if running else b"0",
        b"%d" % numerator,
        b"%d" % denominator,
    )


def status(handle: bytes, known: bool, running: bool, numerator: int, denominator: int) -> bytes:
    return encode(P.STATUS_RES, handle, *_status_fields(known, running, numerator, denominator))


def status_unique(
    unique: bytes, known: bool, running: bool, numerator: int, denominator: int, waiting: int
) -> bytes:
    fields = _status_fields(known, running, numerator, denominator)
    return encode(P.STATUS_RES_UNIQUE, unique, *fields, b"%d" % waiting)


def option_accepted(name: bytes) -> bytes:
    return encode(P.OPTION_RES, name)


def send_with_data(
    peers: Iterable[Peer], ptype: int, args: tuple[bytes, ...], data: Payload
) -> None:
    """Send a packet with trailing data to every peer, building it once.

    Large data (and spooled data, which is always large) follows its head as a part of
    its own: each peer's output holds a reference, never a copy.
    """
    if len(data) >= PASS_THROUGH:
        head = encode_head(ptype, args, len(data))
        for peer in peers:
            peer.send_parts(head, data)
    else:
        # Spooled data is never this short: only in-memory data gets here.
        packet = res_packet(ptype, b"\0".join((*args, cast(Data, data))))
        for peer in peers:
            peer.send(packet)
