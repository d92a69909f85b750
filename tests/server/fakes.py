"""Fakes for driving the scheduler without sockets or a real clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geartrain.protocol.codec import Decoder, Packet, Payload, as_bytes
from geartrain.protocol.constants import RES
from geartrain.server import replies
from geartrain.server.jobs import Peer
from geartrain.server.scheduler import Scheduler
from geartrain.server.writes import WriteGroup


class FakePeer(Peer):
    """A connection that records what the server sent it, decoded."""

    __slots__ = ("name", "received")

    def __init__(self, name: str = "peer", scheduler: Scheduler | None = None) -> None:
        super().__init__()
        self.name = name
        self.received: list[Packet] = []
        if scheduler is not None:
            self.scheduler = scheduler

    def send(self, packet: bytes) -> None:
        events = Decoder(expect=RES, text=False).feed(packet)
        assert all(isinstance(e, Packet) for e in events), events
        self.received.extend(e for e in events if isinstance(e, Packet))

    def send_parts(self, head: bytes, data: Payload) -> None:
        self.send(head + as_bytes(data))

    def send_after(self, write: WriteGroup, reply: bytes) -> None:
        def release() -> None:
            refused = write.refused
            self.send(reply if refused is None else replies.queue_refused(refused))

        write.when_settled(release)

    def take(self) -> list[tuple[int, tuple[bytes, ...], bytes]]:
        """Everything received since the last call, as (type, args, data)."""
        out = [(p.type, p.args, as_bytes(p.data)) for p in self.received]
        self.received.clear()
        return out

    def __repr__(self) -> str:
        return f"<FakePeer {self.name}>"


class FakeTimer:
    def __init__(
        self, clock: FakeClock, when: float, callback: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        self.clock = clock
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Wall clock plus call_later, advanced by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.timers: list[FakeTimer] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(self, self.now + delay, callback, args)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= self.now]
            if not due:
                return
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            timer.callback(*timer.args)

    @property
    def armed(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]


def make_scheduler(**kwargs: Any) -> tuple[Scheduler, FakeClock]:
    clock = FakeClock()
    scheduler = Scheduler(
        handle_prefix=b"H:test", call_later=clock.call_later, clock=clock, **kwargs
    )
    return scheduler, clock
