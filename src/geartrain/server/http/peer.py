"""The gateway's in-process client: a Peer that the scheduler sends packets to.

A foreground job submitted over HTTP is attached to an :class:`HttpPeer` exactly as to a
Gearman client connection, so coalescing, WORK_* forwarding, retries and cancellation
all follow the scheduler's one set of rules. The peer decodes the packets it is sent
into :class:`Reply` records and queues them for the request handler, which turns them
into the HTTP response. When the request ends early (the client went away, the timeout
passed, the server stops) the handler calls ``scheduler.drop_peer``, as a closing
connection does, so the job's other waiters are unaffected and a job nobody waits for
any more is not run.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from geartrain.protocol.codec import Payload
from geartrain.protocol.constants import HEADER_SIZE

from ..jobs import Peer
from ..replies import queue_refused

if TYPE_CHECKING:
    from ..scheduler import Scheduler
    from ..writes import WriteGroup

_TYPE = struct.Struct(">I")


class Reply(NamedTuple):
    """One packet the scheduler sent: its type, the job handle and what follows it.

    ``data`` is the trailing data (WORK_DATA, WORK_COMPLETE, ...), the rest of the body
    for WORK_STATUS (``numerator\\0denominator``) and ERROR (``text``; the code is in
    ``handle``), and empty for WORK_FAIL and JOB_CREATED.
    """

    type: int
    handle: bytes
    data: Payload


def _split(body: bytes) -> tuple[bytes, bytes]:
    handle, _, rest = body.partition(b"\0")
    return handle, rest


class HttpPeer(Peer):
    """A client peer owned by one HTTP request.

    Args:
        scheduler: the server's scheduler.
        ip: the HTTP client's address (shown where a connection's would be).
        max_buffered: bytes of undelivered replies (in memory) tolerated before the
            peer gives up on a client that does not read: the same rule as a Gearman
            connection's unread-output limit.
    """

    __slots__ = ("_buffered", "_replies", "_wakeup", "max_buffered", "overflowed", "stopping")

    def __init__(self, scheduler: Scheduler, ip: str, max_buffered: int) -> None:
        Peer.__init__(self)
        self.scheduler = scheduler
        self.ip = ip
        self.client_id = b"http"
        self.max_buffered = max_buffered
        #: Set once more than ``max_buffered`` bytes were waiting; later replies are dropped.
        self.overflowed = False
        #: Set by :meth:`stop`: the server is stopping and the request must end now.
        self.stopping = False
        self._replies: deque[Reply] = deque()
        self._buffered = 0
        self._wakeup = asyncio.Event()

    # -- what the scheduler calls -------------------------------------------------------

    def send(self, packet: bytes) -> None:
        (ptype,) = _TYPE.unpack_from(packet, 4)
        handle, rest = _split(packet[HEADER_SIZE:])
        self._queue(Reply(ptype, handle, rest))

    def send_parts(self, head: bytes, data: Payload) -> None:
        # A large payload comes after a head holding the type and ``handle\0``.
        (ptype,) = _TYPE.unpack_from(head, 4)
        handle, _ = _split(head[HEADER_SIZE:])
        self._queue(Reply(ptype, handle, data))

    def send_after(self, write: WriteGroup, reply: bytes) -> None:
        def settled() -> None:
            refused = write.refused
            self.send(reply if refused is None else queue_refused(refused))

        write.when_settled(settled)

    def _queue(self, reply: Reply) -> None:
        if self.overflowed:
            return
        size = len(reply.data) if isinstance(reply.data, bytes | memoryview) else 0
        self._buffered += size
        if self._buffered > self.max_buffered:
            # Not dropped here: the scheduler may be iterating over the job's clients.
            self.overflowed = True
            self._replies.clear()
        else:
            self._replies.append(reply)
        self._wakeup.set()

    # -- what the request handler calls ---------------------------------------------------

    async def next_reply(self) -> Reply | None:
        """The next reply, waiting for it; None once the peer overflowed or was stopped."""
        while not self._replies or self.stopping:
            if self.overflowed or self.stopping:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        reply = self._replies.popleft()
        if isinstance(reply.data, bytes | memoryview):
            self._buffered -= len(reply.data)
        return reply

    def stop(self) -> None:
        """End the wait of the request handler (the server is stopping)."""
        self.stopping = True
        self._wakeup.set()

    def detach(self) -> None:
        """Leave the scheduler as a closing connection does (idempotent)."""
        self.scheduler.drop_peer(self)
