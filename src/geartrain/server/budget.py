"""The memory budget: what the server holds for others, and backpressure above it.

Theory of operation
-------------------
Three kinds of bytes are held for peers, each counted where it is taken and released,
never by a scan:

* ``jobs``: the in-memory payloads of queued and running jobs (``Scheduler.job_bytes``,
  kept by the scheduler when a job is made and forgotten; spooled payloads live in
  files and do not count);
* ``output``: replies held behind a persistent write, and transport write buffers of
  peers that do not read (polled when asyncio pauses a writer and on each write while
  it is paused, so a peer that reads costs nothing);
* ``bodies``: large request bodies still being received (the decoder's accumulator).

Above the high-water mark (90 % of the budget) the server is *over*: after each read
from a connection that is not a worker, the connection is paused (its reading stops)
if it holds more than its fair share of the headroom above the high-water mark: the
payloads of the foreground jobs it waits for, its unread output, its partial body, and
the background payloads it submitted while over. Workers are always read: their results
are what frees memory. A connection holding little, such as a client doing one round
trip at a time, keeps being served. Below the low-water mark (70 %) every paused
connection is read again. Nothing is dropped: a paused peer's acknowledged jobs run and
their results are delivered; it only cannot send more.

A single job whose payload is larger than the whole budget cannot be helped by
waiting, so it is refused with ``ERROR QUEUE_ERROR`` and a message saying why.

The scheduler's hot path pays one addition and one comparison per job: it compares
its running total with ``Scheduler.job_room`` (the room left for jobs below the
high-water mark, given what the other categories hold), and calls this module only
when the total passes it, or, while over, falls below ``Scheduler.job_room_low``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from geartrain.protocol.constants import ErrorCode

if TYPE_CHECKING:
    from .epoch import CallLater
    from .jobs import Peer
    from .scheduler import Scheduler

logger = logging.getLogger(__name__)

#: The budget's share above which the server stops reading from connections that add.
HIGH_WATER: Final = 0.9
#: The share below which it reads from them again: the gap keeps pause and resume from
#: alternating on every job.
LOW_WATER: Final = 0.7
#: The default budget's share of physical memory: the rest is for the interpreter, its
#: allocator's slack, the kernel's socket buffers and the other processes of the machine.
DEFAULT_SHARE: Final = 4
#: Seconds between reviews of the paused connections while over: one that has come to
#: hold less than half its share (it read its output, its jobs ended) is read again
#: before the total falls under the low-water mark, so that it is not held back by
#: what others hold.
REVIEW_SECONDS: Final = 0.1
#: A room no running total reaches (no budget, or nothing to watch for).
_NEVER: Final = 1 << 62


class Pausable(Protocol):
    """What the budget needs of a connection to weigh, pause, resume and show it."""

    fd: int
    ip: str
    client_id: bytes

    def held_bytes(self, enough: int) -> int:
        """Bytes held for this connection, counted until they exceed ``enough``."""
        ...

    def pause_for_memory(self) -> None: ...

    def resume_for_memory(self) -> None: ...


def default_budget() -> int:
    """A quarter of the machine's physical memory, or 0 (no budget) if unknown."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0
    if pages <= 0 or page_size <= 0:
        return 0
    return pages * page_size // DEFAULT_SHARE


class MemoryBudget:
    """The budget of one server and the connections it has paused.

    Args:
        limit: the budget in bytes; 0 = none (counted and shown, never enforced).

    The scheduler whose job payloads count is passed to each call rather than kept, so
    the scheduler can own its budget without a reference cycle.
    """

    __slots__ = (
        "_call_later",
        "_connections",
        "_review",
        "bodies",
        "charges",
        "high",
        "limit",
        "low",
        "output",
        "over",
        "paused",
        "peak",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.high = int(limit * HIGH_WATER)
        self.low = int(limit * LOW_WATER)
        self.output = 0
        self.bodies = 0
        #: Highest total seen by an accounting check; exact above the high-water mark,
        #: where every addition is checked.
        self.peak = 0
        self.over = False
        #: Connections paused for memory, in the order they were paused.
        self.paused: dict[Pausable, None] = {}
        #: Background payload bytes each connection submitted while over.
        self.charges: dict[object, int] = {}
        self._call_later: CallLater | None = None
        self._connections: Callable[[], int] = lambda: 1
        self._review: object = None  # the pending review's timer handle

    def use_loop(self, call_later: CallLater, connections: Callable[[], int]) -> None:
        """Review paused connections with ``call_later`` while over; ``connections``
        counts the connections the headroom is shared among."""
        self._call_later = call_later
        self._connections = connections

    # -- totals ----------------------------------------------------------------------

    def held(self, scheduler: Scheduler) -> int:
        """Every byte counted: job payloads, output and partial bodies."""
        return scheduler.job_bytes + self.output + self.bodies

    def set_rooms(self, scheduler: Scheduler) -> None:
        """Tell the scheduler at which job totals to call back (see the module doc)."""
        others = self.output + self.bodies
        if not self.limit:
            scheduler.job_room = _NEVER
            scheduler.job_room_low = -1
            return
        # While over, every submission comes here to be charged to its submitter.
        scheduler.job_room = self.high - others
        scheduler.job_room_low = self.low - others if self.over else -1

    # -- the scheduler's calls -------------------------------------------------------

    def job_over(
        self, scheduler: Scheduler, peer: Peer | None, size: int, background: bool
    ) -> tuple[bytes, bytes] | None:
        """A job of ``size`` bytes would pass the room: refuse it or let it in, over.

        Returns:
            The ERROR (code, text) for a job larger than the whole budget, else None.
        """
        if size > self.limit:
            return ErrorCode.QUEUE_ERROR, (
                b"Job of %d bytes is larger than the server's memory budget of %d bytes"
                % (size, self.limit)
            )
        if background and peer is not None:
            self.charges[peer] = self.charges.get(peer, 0) + size
        held = self.held(scheduler) + size
        self.peak = max(self.peak, held)
        if not self.over:
            self._go_over(scheduler, held)
        return None

    def relieved(self, scheduler: Scheduler) -> None:
        """Held bytes fell (below the low room): resume everyone if under the mark."""
        held = self.held(scheduler)
        if held >= self.low:
            self.set_rooms(scheduler)
            return
        self.over = False
        self.charges.clear()
        paused, self.paused = self.paused, {}
        if paused:
            logger.info(
                "memory: %d bytes held, under the low-water mark of %d; reading %d "
                "paused connections again",
                held,
                self.low,
                len(paused),
            )
        for conn in paused:
            conn.resume_for_memory()
        self.set_rooms(scheduler)

    # -- the connections' calls ------------------------------------------------------

    def add_output(self, scheduler: Scheduler, delta: int) -> None:
        """Output held or buffered changed by ``delta`` bytes (negative: released)."""
        self.output += delta
        self.check(scheduler)

    def add_bodies(self, scheduler: Scheduler, delta: int) -> None:
        """Partially received bodies changed by ``delta`` bytes."""
        self.bodies += delta
        self.check(scheduler)

    def share(self) -> int:
        """What one connection may hold while over: the headroom above the high-water
        mark, shared among all connections."""
        return max(self.limit - self.high, 1) // max(self._connections(), 1)

    def consider(self, conn: Pausable, peer: Peer) -> None:
        """After a read while over: pause ``conn`` if it holds more than its share.

        ``peer`` is the same connection as the scheduler knows it.
        """
        if not self.over or conn in self.paused or peer.ability_list:
            return  # workers are always read: their results free memory
        share = self.share()
        charged = self.charges.get(conn, 0)
        if charged + conn.held_bytes(share - charged) > share:
            self.paused[conn] = None
            conn.pause_for_memory()

    def forget(self, conn: Pausable) -> None:
        """A connection closed: it is neither paused nor charged any more."""
        self.paused.pop(conn, None)
        self.charges.pop(conn, None)

    def _review_paused(self) -> None:
        self._review = None
        if not self.over:
            return
        half = self.share() // 2
        for conn in list(self.paused):
            charged = self.charges.get(conn, 0)
            if charged + conn.held_bytes(half - charged) <= half:
                del self.paused[conn]
                conn.resume_for_memory()
        self._schedule_review()

    def _schedule_review(self) -> None:
        if self._review is None and self._call_later is not None:
            self._review = self._call_later(REVIEW_SECONDS, self._review_paused)

    def check(self, scheduler: Scheduler) -> None:
        """Compare the total with the marks after a change the rooms did not see."""
        if not self.limit:
            return
        held = self.held(scheduler)
        self.peak = max(self.peak, held)
        if not self.over and held > self.high:
            self._go_over(scheduler, held)
        elif self.over and held < self.low:
            self.relieved(scheduler)
        else:
            self.set_rooms(scheduler)

    def _go_over(self, scheduler: Scheduler, held: int) -> None:
        self.over = True
        logger.info(
            "memory: %d bytes held, over the high-water mark of %d (budget %d); "
            "pausing connections that add to it",
            held,
            self.high,
            self.limit,
        )
        self.set_rooms(scheduler)
        self._schedule_review()

    # -- reports ---------------------------------------------------------------------

    def snapshot(self, scheduler: Scheduler) -> dict[str, int | bool]:
        """The budget's figures, as the admin command, status page and metrics show them."""
        return {
            "budget": self.limit,
            "high_water": self.high,
            "low_water": self.low,
            "held": self.held(scheduler),
            "jobs": scheduler.job_bytes,
            "output": self.output,
            "bodies": self.bodies,
            "peak": self.peak,
            "over": self.over,
            "paused": len(self.paused),
        }
