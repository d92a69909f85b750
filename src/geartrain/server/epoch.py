"""Epoch (run-at) jobs waiting for their time, and the one timer that wakes them.

gearmand 1.1 leaves a future job in its queue and only looks at it when something
else wakes a worker, so the job can wait forever (issue #101). Here waiting jobs sit
in a heap ordered by due time, outside the run queues, and a single timer armed for
the earliest one moves every due job into its queue, where the usual wake-up rules
NOOP sleeping workers.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any, Protocol

from .jobs import Job


class Timer(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[..., Any]


class EpochQueue:
    """Jobs keyed by due time; ``on_due(job)`` is called for each as its time comes."""

    def __init__(
        self,
        on_due: Callable[[Job], None],
        clock: Callable[[], float],
        call_later: CallLater | None = None,
    ) -> None:
        self.on_due = on_due
        self.clock = clock
        self.call_later = call_later
        self._heap: list[tuple[float, int, Job]] = []
        self._order = itertools.count()  # FIFO among jobs due at the same time
        self._timer: Timer | None = None
        self._timer_at = 0.0

    def add(self, job: Job) -> None:
        heapq.heappush(self._heap, (job.due, next(self._order), job))
        self._arm()

    def run_due(self) -> None:
        """Hand over every job whose time has come, then re-arm for the next one.

        Jobs that left the queue some other way (cancelled, abandoned) are skipped:
        ``on_due`` decides, so entries are dropped lazily here.
        """
        self._timer = None
        now = self.clock()
        heap = self._heap
        while heap and heap[0][0] <= now:
            self.on_due(heapq.heappop(heap)[2])
        self._arm()

    def _arm(self) -> None:
        if not self._heap or self.call_later is None:
            return
        first = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= first:
                return
            self._timer.cancel()
        self._timer_at = first
        self._timer = self.call_later(max(0.0, first - self.clock()), self.run_due)
