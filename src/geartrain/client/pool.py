"""The client's job servers as a pool, without I/O.

Theory of operation
-------------------
Both clients ask a :class:`ServerPool` every question that does not need a
socket, so that the blocking and the asyncio client cannot drift apart:

* which servers a job tries, in which order (:meth:`ServerPool.attempts`): the
  servers picked by hashing the unique id (see :func:`server_order`), or by a
  rotating counter for jobs without one; first skipping servers that refused a
  connection lately, then, when none was left, trying those too;
* whether a server is resting after a refused connection (``down until``);
  the caller passes its clock's ``now``, so the pool never reads a clock;
* what to do when sending a job failed (:meth:`ServerPool.send_failed`);
* which answer a status query returns when it asked several servers
  (:class:`StatusSearch`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from geartrain.errors import NoServerAvailable

from .servers import Address, ServerSpec, format_address, parse_servers, server_order
from .task import JobStatus, Task, TaskState

#: Default seconds to wait for a TCP connection to a job server.
CONNECT_TIMEOUT = 5.0
#: Seconds a server that refused a connection is skipped before being tried again.
RETRY_AFTER = 5.0


@dataclass(frozen=True, slots=True)
class SendVerdict:
    """What to do after sending a job to one server failed.

    Attributes:
        retry: offer the job to the next server; otherwise the job's outcome stands.
        reason: why the connection is being dropped, for the tasks that lose it.
    """

    retry: bool
    reason: str


class ServerPool:
    """Server order, rotation and down-until times of one client.

    Args:
        servers: the job servers (see :func:`parse_servers`).
        retry_after: seconds a server that refused a connection is skipped.
    """

    def __init__(self, servers: ServerSpec | None, retry_after: float = RETRY_AFTER) -> None:
        self.servers = parse_servers(servers)
        self.retry_after = retry_after
        self._down_until: dict[Address, float] = {}
        self._rotation = 0

    def order(self, key: bytes) -> list[Address]:
        """Every server once, in the order a job (or status query) with ``key`` tries them."""
        return [self.servers[i] for i in server_order(key, len(self.servers))]

    def attempts(self, unique: bytes) -> Iterator[tuple[Address, bool]]:
        """``(server, respect_backoff)`` for each try at sending a job, in order.

        A job without a unique id starts at the next server in turn, which
        spreads such jobs over all servers.
        """
        if unique:
            order = server_order(unique, len(self.servers))
        else:
            order = server_order(b"", len(self.servers), self._rotation)
            self._rotation += 1
        # A second pass ignores the rest periods: a server that refused a
        # connection a moment ago is better than none at all.
        for respect_backoff in (True, False):
            for index in order:
                yield self.servers[index], respect_backoff

    def is_down(self, address: Address, now: float) -> bool:
        """Whether ``address`` refused a connection less than ``retry_after`` ago."""
        return self._down_until.get(address, 0.0) > now

    def connect_failed(self, address: Address, now: float) -> None:
        """``address`` refused a connection (or died at once) at ``now``."""
        self._down_until[address] = now + self.retry_after

    def connected(self, address: Address) -> None:
        """``address`` accepted a connection: no longer resting."""
        self._down_until.pop(address, None)

    def send_failed(self, task: Task, error: str) -> SendVerdict:
        """Decide what follows a send of ``task`` that failed with ``error``.

        Call it once whatever the server sent before the connection broke has
        been read into the task.
        """
        # A task the server answered (ERROR for a packet over its size limit, say)
        # has its outcome, and the job must not be offered again. Otherwise the
        # packet did not reach the server whole and cannot have become a job: the
        # next server may take it without any risk of running it twice.
        answered = task.state not in (TaskState.NEW, TaskState.SUBMITTED)
        return SendVerdict(retry=not answered, reason=f"send failed: {error}")

    def unavailable(self) -> NoServerAvailable:
        """The error for a request that no server could take."""
        names = ", ".join(format_address(a) for a in self.servers)
        return NoServerAvailable(f"no job server reachable ({names})")


class StatusSearch:
    """Merges the status answers of several servers into one.

    Handles and unique ids are only known to the server that holds the job;
    the first server that knows it answers, else the last server that answered
    at all (which says "unknown").
    """

    def __init__(self, pool: ServerPool) -> None:
        self._pool = pool
        self._answer: JobStatus | None = None

    def add(self, answer: JobStatus) -> bool:
        """Record one server's answer; True when it settles the question."""
        self._answer = answer
        return answer.known

    def result(self) -> JobStatus:
        """The merged answer.

        Raises:
            NoServerAvailable: no server answered.
        """
        if self._answer is None:
            raise self._pool.unavailable()
        return self._answer
