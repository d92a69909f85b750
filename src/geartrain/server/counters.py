"""Plain counters the server keeps for its metrics, read only when they are scraped.

Counting happens on the hot path, so it is nothing but integer increments on objects
the path already holds: the function record (``jobs.Function``), the connection, the
store's batch writer and the :class:`ServerCounters` below. Per-packet-type counts are
lists indexed by the packet type number, never dicts, and a histogram is a preallocated
list of bucket counts found with ``bisect``. Nothing here imports prometheus_client:
``metrics.py`` turns these numbers into the exposition format at scrape time, and the
server runs without that package when nobody scrapes it.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

#: Room for every packet type number (the highest in use is 42), indexed directly.
PACKET_TYPES: Final = 64

#: Bucket bounds, in seconds, of the persistent queue's commit latency: an fsync on an
#: SSD takes well under a millisecond, a network database a few, a write about to hit
#: the 30-second store timeout is trouble.
COMMIT_SECONDS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: Bucket bounds of the operations (adds, removes, retry counts) per committed batch, up
#: to the default batch limit of 5,000: how much group commit is saving.
BATCH_OPERATIONS: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)


class Histogram:
    """Bucket counts and a sum, as a Prometheus histogram needs them.

    ``counts[i]`` counts observations at most ``bounds[i]`` and above the bound before
    it (the last slot counts those above every bound); the exposition makes them
    cumulative. Hot paths inline :meth:`observe` (two statements) to spare a call.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def buckets(self) -> list[tuple[float, int]]:
        """Cumulative counts at each bound; the last bound is +Inf."""
        out: list[tuple[float, int]] = []
        cumulative = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append((bound, cumulative))
        return out


class DurationHistogram:
    """Durations in integer nanoseconds, counted by their bit length: the job time histograms.

    ``counts[n]`` counts durations of ``n`` bits, i.e. from 2**(n-1) to 2**n - 1 ns, so a
    duration's bucket is ``duration.bit_length()``: one method call, where ``bisect`` over
    float bounds costs five times as much, and these are observed twice per job. The
    exposition folds them into :data:`REPORTED_BITS` buckets; every bound, 2**n - 1 ns,
    is exact ("le") because durations are whole nanoseconds.
    """

    __slots__ = ("counts", "sum_ns")

    def __init__(self) -> None:
        self.counts = [0] * 64  # 2**63 ns is 292 years
        self.sum_ns = 0

    def observe(self, nanoseconds: int) -> None:
        """Count one duration (hot paths inline this: two statements)."""
        self.counts[nanoseconds.bit_length()] += 1
        self.sum_ns += nanoseconds

    def buckets(self) -> list[tuple[float, int]]:
        """Cumulative counts at each reported bound, in seconds; the last bound is +Inf."""
        out: list[tuple[float, int]] = []
        cumulative = 0
        start = 0
        for bits in REPORTED_BITS:
            cumulative += sum(self.counts[start : bits + 1])
            start = bits + 1
            out.append(((2**bits - 1) / 1e9, cumulative))
        out.append((float("inf"), cumulative + sum(self.counts[start:])))
        return out


#: The bounds the job time histograms report: 2**n - 1 ns for every other n, from 16 µs
#: (a worker already waiting for the job) to 73 minutes (a backlog, a long report).
REPORTED_BITS: Final = tuple(range(14, 43, 2))


class ServerCounters:
    """Server-wide totals that belong to no one function or store."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "connections_accepted",
        "errors_sent",
        "packets_received",
        "packets_sent",
        "permission_denied",
        "replay_seconds",
        "replayed_jobs",
    )

    def __init__(self) -> None:
        self.connections_accepted = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        #: Binary packets by type number (admin text lines are not packets).
        self.packets_received = [0] * PACKET_TYPES
        self.packets_sent = [0] * PACKET_TYPES
        #: ERROR packets by code; a dict is fine here, errors are off the hot path.
        self.errors_sent: dict[bytes, int] = {}
        #: Requests a permissions file denied, by kind (submit, work, status, admin).
        self.permission_denied: dict[str, int] = {}
        #: How long the start-up replay of the persistent queue took (0 without a queue).
        self.replay_seconds = 0.0
        self.replayed_jobs = 0

    def error_sent(self, code: bytes, count: int = 1) -> None:
        """Count ``count`` ERROR packets sent with ``code``."""
        self.errors_sent[code] = self.errors_sent.get(code, 0) + count
