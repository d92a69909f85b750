"""One TCP connection: bytes in through the decoder, packets out in order.

Output rules:

* Writes are coalesced: everything a connection is sent while the loop handles
  one read (or one loop turn, for packets forwarded from other connections) goes
  out in one ``write``.
* Replies keep request order (libgearman matches JOB_CREATED to submissions by
  order alone). A background submission waits for the persistent queue before its
  JOB_CREATED, so the connection *holds* everything queued after it until the
  write is acknowledged, then releases the lot in order.
* When the peer stops reading and our write buffer fills up, we stop reading its
  requests (asyncio flow control), so a pipelining client cannot make the server
  buffer without bound.
* What the connection holds for its peer (replies held, a write buffer its peer does
  not read, a body half received) counts against the memory budget (``budget.py``),
  which may pause reading from it, independently of the flow control above.
* A spooled payload (a large body kept in a file, see ``protocol/spool.py``) is sent
  from its file: with ``os.sendfile`` whenever the transport has nothing buffered, in
  chunks through the transport otherwise (TLS, or a socket that is full), paced by
  flow control. Output queued behind it waits its turn. The server never holds more
  than a chunk of it in memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from time import monotonic_ns
from typing import TYPE_CHECKING, cast

from geartrain.protocol.codec import AdminLine, BadPacket, Decoder, Event, Packet, Payload
from geartrain.protocol.constants import REQ, ErrorCode
from geartrain.protocol.spool import CHUNK, Spooled

from .admin import run_admin
from .dispatch import HANDLERS, unreadable_result
from .jobs import Peer
from .replies import queue_refused
from .tls import identity_of

if TYPE_CHECKING:
    from .app import Server
    from .writes import WriteGroup

logger = logging.getLogger(__name__)

#: Above this many bytes in one flush, parts are written one by one rather than
#: joined, so large payloads are not copied again.
_JOIN_LIMIT = 65536
#: One read buffer for every connection: the loop calls get_buffer, reads and calls
#: buffer_updated for one connection at a time, and buffer_updated copies the bytes out
#: before anything else runs, so sharing it costs nothing and saves 256 KiB a connection.
_READ_BUFFER = memoryview(bytearray(256 * 1024))
#: A peer may leave this many maximum-size packets unread before it is dropped...
_UNREAD_PACKETS = 4
#: ... but never more than this many bytes in all.
_MAX_UNREAD = 64 * 1024 * 1024
#: Replies held behind an unacknowledged persistent write before we stop reading
#: more requests from that connection.
_MAX_HELD = 10000
#: Seconds a connection closed for bad input keeps reading (and discarding) what its peer
#: still sends, so that the peer reads our ERROR before it sees the connection close.
_LINGER = 2.0
#: Bytes of a spooled payload sent in one loop turn before other connections get theirs.
_FILE_TURN = 8 * 1024 * 1024


class _Waiting:
    """A place in the output held for replies that wait on a persistent write."""

    __slots__ = ("replies", "write")

    def __init__(self, write: WriteGroup, reply: bytes) -> None:
        self.write = write
        self.replies = [reply]


def _settled(write: WriteGroup, replies: list[bytes]) -> list[bytes]:
    """The replies held on a settled write, or as many refusals if it failed."""
    refused = write.refused
    if refused is None:
        return replies
    return [queue_refused(refused)] * len(replies)


class _FileSend:
    """A spooled payload being sent, and how far it has got."""

    __slots__ = ("data", "offset")

    def __init__(self, data: Spooled) -> None:
        self.data = data
        self.offset = 0


class Connection(Peer, asyncio.BufferedProtocol):
    """A client, worker or admin connection (or all three at once)."""

    __slots__ = (
        "_before_made",
        "_body_bytes",
        "_buffered",
        "_close_when_sent",
        "_counters",
        "_eof",
        "_eof_sent",
        "_file_send",
        "_flush_scheduled",
        "_held",
        "_held_bytes",
        "_in_receive",
        "_into_body",
        "_loop",
        "_max_unread",
        "_memory",
        "_memory_paused",
        "_out",
        "_out_files",
        "_out_size",
        "_paused",
        "_sendfile",
        "_sent",
        "_tls",
        "_write_blocked",
        "admin",
        "closed",
        "decoder",
        "server",
        "transport",
    )

    def __init__(self, server: Server) -> None:
        Peer.__init__(self)
        self.server = server
        self.scheduler = server.scheduler
        self._counters = server.counters
        self._sent = server.counters.packets_sent  # by type number, counted per packet
        self.admin = False  # sent an admin command (its role in the metrics)
        self.exceptions = server.settings.exceptions
        settings = server.settings
        self.decoder = Decoder(
            REQ,
            settings.max_packet_size,
            spool=server.spool_writer,
            spool_at=settings.spool_threshold,
        )
        # Unread output we tolerate: a few of the largest packets, up to a ceiling (spooled
        # payloads do not count: they are sent from their files as fast as the peer reads).
        self._max_unread = min(_UNREAD_PACKETS * settings.max_packet_size, _MAX_UNREAD)
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._out: list[Payload] = []
        self._out_size = 0
        self._out_files = False  # whether _out holds a spooled payload
        self._file_send: _FileSend | None = None
        self._sendfile = False  # whether os.sendfile may write to our socket directly
        self._tls = False
        self._write_blocked = False
        self._close_when_sent = False
        self._eof_sent = False  # our side was shut after a fatal error (see _close_after_error)
        self._flush_scheduled = False
        self._in_receive = False
        self._into_body = False
        self._held: deque[Payload | _Waiting] | None = None
        self._paused = False
        self._eof = False
        self.closed = False
        # What this connection holds against the memory budget, by category.
        self._memory = server.scheduler.memory
        self._memory_paused = False
        self._held_bytes = 0  # packets held behind a persistent write
        self._buffered = 0  # the transport's write buffer, as last polled
        self._body_bytes = 0  # a large body being received
        # Under a permissions file, requests that come with the end of a TLS handshake
        # wait here until connection_made knows who sent them (see _resolve_rights).
        self._before_made: list[Event] | None = [] if server.permissions is not None else None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.fd = sock.fileno()
            self.server.tune_socket(sock)
        self._tls = transport.get_extra_info("sslcontext") is not None
        # sendfile bypasses the transport: only for a plain socket, never under TLS.
        self._sendfile = sock is not None and not self._tls
        peer = transport.get_extra_info("peername")
        if peer:
            self.ip = str(peer[0])
        self.server.connections[self] = None
        self._counters.connections_accepted += 1
        if self._tls:
            self.identity = identity_of(transport.get_extra_info("peercert"))
            subject = self.identity.subject if self.identity else "none"
            logger.debug(
                "TLS connection from %s (fd %d), certificate %s", self.ip, self.fd, subject
            )
        else:
            logger.debug("connection from %s (fd %d)", self.ip, self.fd)
        if self._before_made is not None:
            self._resolve_rights()
        if self._out:  # replies to requests that came with the end of a TLS handshake
            self._flush()

    def _resolve_rights(self) -> None:
        """Give the peer its rights, then handle what it sent before we knew who it was."""
        permissions = self.server.permissions
        assert permissions is not None and self._before_made is not None
        self.rights = permissions.rights_for(self.identity, self.ip)
        early, self._before_made = self._before_made, None
        if early:
            self._handle(early)

    # Reads go into our own buffer (BufferedProtocol), and the rest of a large body
    # straight into the decoder's body buffer: a 256 MiB payload is copied by the
    # kernel into place once, not first into a read buffer and then into place.

    def get_buffer(self, sizehint: int) -> memoryview:
        body = self.decoder.body_buffer()
        if body is not None and len(body):
            self._into_body = True
            return body
        self._into_body = False
        return _READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self._counters.bytes_received += nbytes
        if self._into_body:
            events = self.decoder.body_filled(nbytes)
            self._count_body()
            self._handle(events)
        elif self.decoder.spooling:
            # Written to the spool file at once: no copy of the read buffer is needed.
            self._handle(self.decoder.feed(_READ_BUFFER[:nbytes]))
        else:
            self._handle(self.decoder.feed(_READ_BUFFER[:nbytes].tobytes()))

    def data_received(self, data: bytes) -> None:
        """Feed bytes as if read from the socket (tests drive a connection this way)."""
        self._counters.bytes_received += len(data)
        self._handle(self.decoder.feed(data))

    def _handle(self, events: list[Event]) -> None:
        if self._before_made is not None:
            self._before_made.extend(events)
            return
        self._in_receive = True
        # One clock reading per read, not per job: what the jobs handled now take as their
        # time of queueing, assignment or result for the wait and run time histograms.
        self.scheduler.now_ns = monotonic_ns()
        received = self._counters.packets_received
        try:
            for event in events:
                if isinstance(event, Packet):
                    ptype = event.type
                    received[ptype] += 1
                    HANDLERS[ptype](self, event)
                elif isinstance(event, AdminLine):
                    self.admin = True
                    self._send_admin(run_admin(self, event.line))
                else:
                    self._bad_packet(event)
        finally:
            self._in_receive = False
        self._flush()
        # Never paused halfway through a body: a paused body could not finish, and one
        # larger than the budget must arrive whole to be refused.
        if self._memory.over and not self.decoder.collecting:
            self._memory.consider(self, self)

    def eof_received(self) -> bool | None:
        # A half-closed peer has sent its last request: answer everything it asked,
        # including replies still held for the persistent queue, then close.
        self._eof = True
        if self._eof_sent:
            self._close_transport()
            return True
        if self._held is None:
            self.close_after_flush()
        # TLS has no half-close: its transport flushes what was written and closes.
        return None if self._tls else True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._out = []
        self._held = None
        self._file_send = None
        self._release_memory()
        self.server.connections.pop(self, None)
        self.scheduler.now_ns = monotonic_ns()  # its jobs go back to their queues from now
        self.scheduler.drop_peer(self)
        if exc is not None:
            logger.debug("connection from %s lost: %s", self.ip, exc)

    def pause_writing(self) -> None:
        self._write_blocked = True
        if self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._count_buffered()

    def resume_writing(self) -> None:
        self._write_blocked = False
        self._count_buffered(0)  # under the transport's low-water mark: not counted
        if self.transport is not None and self._paused and not self._held_full():
            self._paused = False
            if not self._memory_paused:
                self.transport.resume_reading()
        if self._file_send is not None:
            self._send_file()

    # -- Peer output ----------------------------------------------------------------

    def send(self, packet: bytes) -> None:
        if self.closed:
            return
        # Byte 7 is the low byte of the type number; every type we send is below 64.
        self._sent[packet[7]] += 1
        if self._held is not None:
            self._held.append(packet)
            self._hold(len(packet))
            return
        self._out.append(packet)
        self._out_size += len(packet)
        if not self._in_receive and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _send_admin(self, reply: bytes) -> None:
        """Queue an admin reply as ``send`` queues a packet, but not counted as one.

        Only called while a read is handled, which flushes when it is done.
        """
        if self.closed:
            return
        if self._held is not None:
            self._held.append(reply)
            self._hold(len(reply))
            return
        self._out.append(reply)
        self._out_size += len(reply)

    def send_error(self, code: bytes, text: bytes) -> None:
        if not self.closed:
            self._counters.error_sent(code)
        Peer.send_error(self, code, text)

    def send_parts(self, head: bytes, data: Payload) -> None:
        if self.closed:
            return
        self._sent[head[7]] += 1
        if self._held is not None:
            self._held.append(head)
            self._held.append(data)
            self._hold(len(head) + (0 if data.__class__ is Spooled else len(data)))
            return
        if data.__class__ is Spooled:
            self._out_files = True
        self._out.append(head)
        self._out.append(data)
        self._out_size += len(head) + len(data)
        if not self._in_receive and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def send_after(self, write: WriteGroup, reply: bytes) -> None:
        """Send ``reply`` once ``write`` settles, holding later output behind it.

        If the store refuses the write, each reply held on it goes out as ``ERROR
        QUEUE_ERROR <reason>`` instead.
        """
        held = self._held
        if held is None:
            if write.settled:
                self.send(_settled(write, [reply])[0])
                return
            held = self._held = deque()
        last = held[-1] if held else None
        if isinstance(last, _Waiting) and last.write is write:
            last.replies.append(reply)  # same write group: one callback serves all
            return
        held.append(_Waiting(write, reply))
        write.when_settled(self._release_held)
        if self._held_full() and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _count_held(self, write: WriteGroup, replies: list[bytes]) -> None:
        # Held replies bypass send: all of one type (JOB_CREATED, or ERROR if refused).
        self._sent[replies[0][7]] += len(replies)
        if write.refused is not None:
            self._counters.error_sent(ErrorCode.QUEUE_ERROR, len(replies))

    def _held_full(self) -> bool:
        return self._held is not None and len(self._held) > _MAX_HELD

    def _release_held(self) -> None:
        held = self._held
        if held is None or self.closed:
            return
        out = self._out
        size = 0
        freed = 0  # of the bytes counted by _hold
        while held:
            item = held[0]
            if isinstance(item, _Waiting):
                if not item.write.settled:
                    break
                held.popleft()
                replies = _settled(item.write, item.replies)
                self._count_held(item.write, replies)
                out.extend(replies)
                size += sum(map(len, replies))
            else:
                held.popleft()
                out.append(item)
                size += len(item)
                if item.__class__ is Spooled:
                    self._out_files = True
                else:
                    freed += len(item)
        self._out_size += size
        if freed:
            self._hold(-freed)
        if not held:
            self._held = None
            if self._eof:
                self.close_after_flush()
                return
        transport = self.transport
        if (
            self._paused
            and not self._held_full()
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() == 0
        ):
            self._paused = False
            if not self._memory_paused:
                transport.resume_reading()
        # Many groups may settle in one loop turn: flush once, after all of them.
        if out and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out or self.transport is None or self.closed or self._file_send is not None:
            return
        if self._out_files:
            self._flush_until_file(out)
            return
        self._out = []
        size = self._out_size
        self._out_size = 0
        self._write(cast(list[bytes | memoryview], out), size)

    def _write(self, out: list[bytes | memoryview], size: int) -> None:
        assert self.transport is not None
        self._counters.bytes_sent += size
        if len(out) == 1:
            self.transport.write(out[0])
        elif size <= _JOIN_LIMIT:
            self.transport.write(b"".join(out))
        else:
            # Large parts go out as they are (one writev on uvloop), never joined.
            self.transport.writelines(out)
        if self._write_blocked:
            self._count_buffered()
        if self._paused and self.transport.get_write_buffer_size() > self._max_unread:
            # A peer that stopped reading while results keep arriving for it would
            # make us buffer without bound: let it go (its workers' jobs still end).
            logger.warning(
                "dropping %s (fd %d): %d bytes of replies unread",
                self.ip,
                self.fd,
                self.transport.get_write_buffer_size(),
            )
            self.abort()

    # -- the memory budget (budget.py) ------------------------------------------------

    def _hold(self, delta: int) -> None:
        self._held_bytes += delta
        self._memory.add_output(self.scheduler, delta)

    def _count_buffered(self, size: int = -1) -> None:
        # Polled only while asyncio has paused our writing: a write buffer under the
        # transport's high-water mark is left uncounted, and is 0 here once it resumes.
        transport = self.transport
        if size < 0:
            size = 0 if transport is None else transport.get_write_buffer_size()
        if size != self._buffered:
            self._memory.add_output(self.scheduler, size - self._buffered)
            self._buffered = size

    def _count_body(self) -> None:
        size = self.decoder.collecting
        if size != self._body_bytes:
            self._memory.add_bodies(self.scheduler, size - self._body_bytes)
            self._body_bytes = size

    def _release_memory(self) -> None:
        memory = self._memory
        memory.forget(self)
        output = self._held_bytes + self._buffered
        if output:
            self._held_bytes = self._buffered = 0
            memory.add_output(self.scheduler, -output)
        if self._body_bytes:
            memory.add_bodies(self.scheduler, -self._body_bytes)
            self._body_bytes = 0

    def held_bytes(self, enough: int) -> int:
        """Bytes held for this peer: its output and partial body counted here, and the
        in-memory payloads of the foreground jobs it waits for, summed only until they
        pass ``enough`` (a pipelining client may wait for thousands)."""
        held = self._held_bytes + self._buffered + self._body_bytes
        for job in self.waiting:
            if held > enough:
                break
            if job.data.__class__ is not Spooled:
                held += len(job.data)
        return held

    def pause_for_memory(self) -> None:
        """Stop reading requests until the budget is relieved (see budget.py)."""
        self._memory_paused = True
        if self.transport is not None and not self._paused:
            self.transport.pause_reading()

    def resume_for_memory(self) -> None:
        """Read requests again, unless flow control still holds them back."""
        self._memory_paused = False
        transport = self.transport
        if transport is not None and not self._paused and not transport.is_closing():
            transport.resume_reading()

    # -- spooled payloads -------------------------------------------------------------

    def _flush_until_file(self, out: list[Payload]) -> None:
        """Write ``out`` up to its first spooled payload and start sending that.

        What comes after the payload stays in ``_out`` until the file has been sent.
        """
        index = next(i for i, item in enumerate(out) if isinstance(item, Spooled))
        before = cast(list[bytes | memoryview], out[:index])
        rest = out[index + 1 :]
        self._out = rest
        self._out_size = sum(map(len, rest))
        self._out_files = any(isinstance(part, Spooled) for part in rest)
        if before:
            self._write(before, sum(map(len, before)))
        self._file_send = _FileSend(cast(Spooled, out[index]))
        self._send_file()

    def _send_file(self) -> None:
        """Send more of the current spooled payload, as much as the peer takes now."""
        sending = self._file_send
        transport = self.transport
        if sending is None or transport is None or self.closed:
            return
        data = sending.data
        budget = _FILE_TURN
        while not self._write_blocked and budget > 0 and sending.offset < data.size:
            count = min(data.size - sending.offset, budget)
            sent = 0
            if self._sendfile and transport.get_write_buffer_size() == 0:
                sent = self._sendfile_some(data, sending.offset, count)
            if not sent:
                # The socket is full (or sendfile is unavailable): one chunk through the
                # transport, which buffers it and tells us (resume_writing) when it drained.
                chunk = data.read(sending.offset, min(count, CHUNK))
                transport.write(chunk)
                sent = len(chunk)
            sending.offset += sent
            self._counters.bytes_sent += sent
            budget -= sent
        if sending.offset >= data.size:
            self._file_send = None
            self._flush()
            if self._close_when_sent and self._file_send is None:
                self.close_after_flush()
        elif not self._write_blocked:
            self._loop.call_soon(self._send_file)  # let other connections have a turn

    def _sendfile_some(self, data: Spooled, offset: int, count: int) -> int:
        try:
            return os.sendfile(self.fd, data.fd, offset, count)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            # E.g. a socket type sendfile does not support: chunks from now on. A
            # connection that is really broken is reported by the transport itself.
            logger.debug("sendfile to %s (fd %d) failed: %s", self.ip, self.fd, exc)
            self._sendfile = False
            return 0

    # -- errors --------------------------------------------------------------------

    def _bad_packet(self, event: BadPacket) -> None:
        logger.warning(
            "bad input from %s (fd %d): %s %s%s",
            self.ip,
            self.fd,
            event.code.decode(),
            event.text.decode(errors="replace"),
            "; closing" if event.fatal else "",
        )
        self.send_error(event.code, event.text)
        if event.handle:
            unreadable_result(self, event.handle)
        if event.fatal:
            self._close_after_error()

    def _close_after_error(self) -> None:
        """Close a stream that can no longer be framed, so that the peer reads the ERROR.

        Closing at once while the peer is still sending (the rest of an oversized body)
        would make the kernel answer its data with a reset, which can destroy the ERROR
        before the peer reads it. So the reply goes out, then our FIN; whatever the peer
        still sends is read and discarded (the decoder is dead) until it closes its side
        or ``_LINGER`` seconds pass.
        """
        transport = self.transport
        self._flush()
        if (
            transport is None
            or self._file_send is not None
            or self._held is not None  # the ERROR waits behind replies: keep the old way
            or not transport.can_write_eof()
        ):
            self.close_after_flush()
            return
        transport.write_eof()
        # Nothing more goes out: as far as output goes, the connection is closed.
        self._eof_sent = self.closed = True
        self._out = []
        self._loop.call_later(_LINGER, self._close_transport)

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def close_after_flush(self) -> None:
        if self._eof_sent:
            self._close_transport()
            return
        self._flush()
        if self._file_send is not None:
            self._close_when_sent = True  # closed once the file and what follows are out
            return
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def tune_socket(sock: socket.socket, keepalive: bool, idle: int, interval: int, count: int) -> None:
    """TCP_NODELAY always; keepalive settings on *accepted* sockets (gearmand #386)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if keepalive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in (
                ("TCP_KEEPIDLE", idle),
                ("TCP_KEEPINTVL", interval),
                ("TCP_KEEPCNT", count),
            ):
                if value > 0 and hasattr(socket, option):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    except OSError as exc:  # e.g. a socket already reset by the peer
        logger.debug("could not tune socket: %s", exc)
