"""Peers for the memory budget's tests: an echo worker, hostile pipelining clients that
stop reading, and a healthy client doing one round trip at a time."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from geartrain.protocol.codec import Decoder, Packet, as_bytes, encode_request
from geartrain.protocol.constants import RES
from geartrain.protocol.constants import PacketType as P

from .conftest import RawClient

#: Seconds any single reply may take, even behind a queue the budget let fill.
REPLY_WAIT = 30.0


async def open_raw(address: tuple[str, int]) -> RawClient:
    reader, writer = await asyncio.open_connection(*address)
    return RawClient(reader, writer)


async def echo_worker(client: RawClient, stop: asyncio.Event) -> int:
    """Complete every ``echo`` job with its own payload until ``stop``; return the count."""
    client.send(P.CAN_DO, b"echo")
    done = 0
    while not stop.is_set():
        client.send(P.GRAB_JOB)
        packet = await client.packet(REPLY_WAIT)
        while packet.type == P.NOOP:  # a wake-up that came after the wait below gave up
            packet = await client.packet(REPLY_WAIT)
        if packet.type == P.JOB_ASSIGN:
            client.send(P.WORK_COMPLETE, packet.args[0], data=as_bytes(packet.data))
            done += 1
            continue
        assert packet.type == P.NO_JOB, packet
        client.send(P.PRE_SLEEP)
        # Woken by NOOP when a job comes; a short wait so that ``stop`` is seen.
        with contextlib.suppress(TimeoutError):
            noop = await client.packet(0.2)
            assert noop.type == P.NOOP, noop
    return done


@dataclass
class RoundTrips:
    """What a healthy client saw: round trips that succeeded, and the first failure."""

    done: int = 0
    failure: BaseException | None = None


async def healthy_client(
    client: RawClient, stop: asyncio.Event, trips: RoundTrips, background_world: bool = False
) -> None:
    """One round trip at a time until ``stop``: a foreground echo job, or (when no worker
    runs) an ECHO_REQ; each must come back whole and in time."""
    payload = b"healthy-" + b"x" * 1000
    try:
        while not stop.is_set():
            if background_world:
                client.send(P.ECHO_REQ, data=payload)
                reply = await client.packet(REPLY_WAIT)
                assert (reply.type, as_bytes(reply.data)) == (P.ECHO_RES, payload), reply
            else:
                client.send(P.SUBMIT_JOB, b"echo", b"", data=payload)
                created = await client.packet(REPLY_WAIT)
                assert created.type == P.JOB_CREATED, created
                done = await client.packet(REPLY_WAIT)
                assert done.type == P.WORK_COMPLETE, done
                assert (done.args[0], as_bytes(done.data)) == (created.args[0], payload)
            trips.done += 1
    except BaseException as exc:  # reported by the test, which asserts there is none
        trips.failure = exc


@dataclass
class Hostile:
    """A client that pipelines ``count`` jobs and reads nothing until told to."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    count: int
    payloads: list[bytes] = field(default_factory=list)

    @classmethod
    async def start(
        cls, address: tuple[str, int], tag: int, count: int, size: int, background: bool
    ) -> Hostile:
        reader, writer = await asyncio.open_connection(*address)
        hostile = cls(reader, writer, count)
        ptype = P.SUBMIT_JOB_BG if background else P.SUBMIT_JOB
        for number in range(count):
            payload = (b"%d-%d-" % (tag, number)).ljust(size, b"p")
            hostile.payloads.append(payload)
            writer.write(encode_request(ptype, b"echo", b"", data=payload))
        return hostile

    async def read_all(self, expected: int, wait: float) -> list[Packet]:
        """Read replies until ``expected`` packets came (or fail after ``wait`` seconds)."""
        decoder = Decoder(expect=RES, text=False)
        packets: list[Packet] = []
        async with asyncio.timeout(wait):
            while len(packets) < expected:
                chunk = await self.reader.read(1 << 20)
                if not chunk:
                    raise ConnectionError("server closed a hostile client's connection")
                packets.extend(e for e in decoder.feed(chunk) if isinstance(e, Packet))
        return packets

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
