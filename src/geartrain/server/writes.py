"""Write groups: background jobs acknowledged together once the store has them.

Every background job is durable before its JOB_CREATED is sent. Jobs submitted in
one loop turn form a group, handed to the store in one ``add_then``; connections hold
their replies on the group, so a group commit of a thousand jobs costs a couple of
calls, not thousands.

A group is not an asyncio future on purpose: a future runs its callbacks one loop turn
after it is resolved, and under load a loop turn is milliseconds of reading and
handling requests. The store settles the group where its commit completes, the group
releases the held replies at once, and the submitters get their JOB_CREATED in the
same turn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .jobs import Job
from .persistence.base import StoredJob

logger = logging.getLogger(__name__)


class WriteGroup:
    """Background jobs handed to the store in one loop turn, in one ``add_then``."""

    __slots__ = ("_waiters", "jobs", "records", "refused", "settled")

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.records: list[StoredJob] = []
        self.settled = False
        self.refused: bytes | None = None  # why the store refused the jobs, if it did
        self._waiters: list[Callable[[], None]] = []

    def when_settled(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the group is settled (at once if it is)."""
        if self.settled:
            callback()
        else:
            self._waiters.append(callback)

    def settle(self, refused: bytes | None) -> None:
        """Record the outcome and tell everyone waiting, in the order they asked."""
        self.settled = True
        self.refused = refused
        waiters, self._waiters = self._waiters, []
        for callback in waiters:
            try:
                callback()
            except Exception:  # one broken connection must not keep the others waiting
                logger.exception("error while releasing replies held on a write")
