"""The metric families, built from the server's counters by a prometheus_client collector.

Everything is read at scrape time from the live server: no metric object is updated
while the server works. A fresh private registry per scrape keeps servers apart (tests
and embedding applications may run several in one process) and costs a few dicts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from geartrain.protocol.constants import REQUEST_TYPES, RESPONSE_TYPES, ErrorCode, PacketType
from geartrain.protocol.spool import Spooled

from ..permissions import DENIAL_KINDS
from ..persistence._batch import GroupCommitStore

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..app import Server
    from ..jobs import Function

#: Label values of the three priorities, in the order functions count them.
PRIORITIES = ("high", "normal", "low")

#: ERROR codes the protocol defines (``ErrorCode``'s attributes).
ERROR_CODES: tuple[bytes, ...] = tuple(
    code for name, code in vars(ErrorCode).items() if name.isupper()
)

#: The per-function, per-priority totals: (metric name, help, Function attribute).
JOB_TOTALS = (
    (
        "geartrain_jobs_submitted",
        "New jobs accepted (coalesced submissions not counted)",
        "submitted",
    ),
    (
        "geartrain_jobs_coalesced",
        "Submissions joined to a job already queued or running",
        "coalesced",
    ),
    ("geartrain_jobs_completed", "Jobs ended by WORK_COMPLETE", "completed"),
    (
        "geartrain_jobs_failed",
        "Jobs ended by WORK_FAIL, or given up after job_retries attempts",
        "failed",
    ),
    ("geartrain_jobs_exceptions", "Jobs ended by WORK_EXCEPTION", "exceptions"),
    (
        "geartrain_jobs_timed_out",
        "Jobs whose worker's CAN_DO_TIMEOUT expired (they are requeued)",
        "timed_out",
    ),
    (
        "geartrain_jobs_requeued",
        "Running jobs put back in their queue (worker lost, timeout, CANT_DO)",
        "requeued",
    ),
    (
        "geartrain_jobs_retried",
        "Failed background jobs scheduled to run again after their retry policy's backoff",
        "retried",
    ),
    (
        "geartrain_jobs_dead_lettered",
        "Background jobs that failed for good and were kept in the dead-letter queue",
        "dead_lettered",
    ),
)


def render(server: Server) -> tuple[bytes, str]:
    """The exposition of ``server`` and its Content-Type (see ``metrics.exposition``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class ServerCollector(Collector):
    """Every metric of one server, read from it when collected."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        yield from self._gearman_exporter()
        yield from self._jobs()
        yield from self._connections()
        yield from self._traffic()
        yield from self._queue()
        yield from self._dead_letters()
        tls = self.server.tls
        yield CounterMetricFamily(
            "geartrain_tls_handshake_failures",
            "TLS handshakes that failed: refused or missing certificates, timeouts, garbage",
            value=0 if tls is None else tls.handshake_failures,
        )
        yield from self._memory()
        yield GaugeMetricFamily(
            "geartrain_spool_files_open",
            "Large payloads held in spool files, in this process",
            value=Spooled.open_count,
        )

    def _functions(self) -> list[tuple[str, Function]]:
        return [(_label(f.name), f) for f in self.server.scheduler.functions.values()]

    def _gearman_exporter(self) -> Iterator[Metric]:
        """gearman-exporter's names, help texts and labels, with ``status`` values."""
        server = self.server
        yield GaugeMetricFamily("gearman_up", "is gearman up", value=_flag(server.started.is_set()))
        version = GaugeMetricFamily("gearman_version_info", "gearman version", labels=["version"])
        version.add_metric([server.version_string], 1)
        yield version
        jobs = GaugeMetricFamily(
            "gearman_jobs", "number of jobs queued or running", labels=["function"]
        )
        running = GaugeMetricFamily(
            "gearman_jobs_running", "number of running jobs", labels=["function"]
        )
        waiting = GaugeMetricFamily(
            "gearman_jobs_waiting",
            "number of jobs waiting for an available worker",
            labels=["function"],
        )
        workers = GaugeMetricFamily(
            "gearman_workers", "number of capable workers", labels=["function"]
        )
        for name, f in self._functions():
            total = f.total  # what `status` reports as TOTAL (queued + running + ...)
            jobs.add_metric([name], total)
            running.add_metric([name], f.running)
            waiting.add_metric([name], total - f.running)
            workers.add_metric([name], len(f.workers))
        yield from (jobs, running, waiting, workers)

    def _jobs(self) -> Iterator[Metric]:
        functions = self._functions()
        for metric, documentation, attribute in JOB_TOTALS:
            family = CounterMetricFamily(metric, documentation, labels=["function", "priority"])
            for name, f in functions:
                counts: list[int] = getattr(f, attribute)
                for priority, count in zip(PRIORITIES, counts, strict=True):
                    family.add_metric([name, priority], count)
            yield family
        queued = GaugeMetricFamily(
            "geartrain_jobs_queued",
            "Jobs ready to run and waiting for a worker (as prioritystatus counts them)",
            labels=["function", "priority"],
        )
        for name, f in functions:
            for priority, count in zip(PRIORITIES, f.queued, strict=True):
                queued.add_metric([name, priority], count)
        yield queued
        yield _histograms(
            "geartrain_job_wait_seconds",
            "Time from a job's queueing (or epoch time, or requeue) to its assignment",
            [(name, f.waited.buckets(), f.waited.sum_ns / 1e9) for name, f in functions],
        )
        yield _histograms(
            "geartrain_job_run_seconds",
            "Time from a job's assignment to its worker's result (complete, fail, exception)",
            [(name, f.ran.buckets(), f.ran.sum_ns / 1e9) for name, f in functions],
        )

    def _dead_letters(self) -> Iterator[Metric]:
        dead = self.server.scheduler.dead
        jobs = GaugeMetricFamily(
            "geartrain_dead_jobs",
            "Jobs in the dead-letter queue, by function",
            labels=["function"],
        )
        # Every known function has a sample, 0 when none of its jobs is dead, so that an
        # alert on this gauge sees a function before its first dead job.
        by_function = {name: 0 for name, _ in self._functions()}
        for record in dead.jobs.values():
            name = _label(record.function)
            by_function[name] = by_function.get(name, 0) + 1
        for name, count in by_function.items():
            jobs.add_metric([name], count)
        yield jobs
        yield GaugeMetricFamily(
            "geartrain_dead_jobs_bytes",
            "Payload bytes held by the dead-letter queue (bounded by --dead-letter-max-bytes)",
            value=dead.bytes,
        )
        yield CounterMetricFamily(
            "geartrain_dead_jobs_dropped",
            "Dead jobs dropped by the dead-letter queue's bounds, oldest first",
            value=dead.dropped,
        )

    def _connections(self) -> Iterator[Metric]:
        roles = dict.fromkeys(("client", "worker", "admin"), 0)
        for conn in self.server.connections:
            if conn.ability_list:
                roles["worker"] += 1
            elif conn.admin:
                roles["admin"] += 1
            else:
                roles["client"] += 1
        family = GaugeMetricFamily(
            "geartrain_connections",
            "Open connections by role: worker (registered a function), admin, or client",
            labels=["role"],
        )
        for role, count in roles.items():
            family.add_metric([role], count)
        yield family
        yield CounterMetricFamily(
            "geartrain_connections_accepted",
            "Connections accepted since start",
            value=self.server.counters.connections_accepted,
        )

    def _traffic(self) -> Iterator[Metric]:
        counters = self.server.counters
        yield CounterMetricFamily(
            "geartrain_received_bytes", "Bytes read from connections", value=counters.bytes_received
        )
        yield CounterMetricFamily(
            "geartrain_sent_bytes", "Bytes written to connections", value=counters.bytes_sent
        )
        yield _by_type(
            "geartrain_packets_received",
            "Binary packets received, by type",
            counters.packets_received,
            REQUEST_TYPES,
        )
        yield _by_type(
            "geartrain_packets_sent",
            "Binary packets sent (queued for a connection), by type",
            counters.packets_sent,
            RESPONSE_TYPES,
        )
        errors = CounterMetricFamily(
            "geartrain_errors_sent", "ERROR packets sent, by code", labels=["code"]
        )
        # Every code the protocol defines, 0 until sent, so alerts on one have a series.
        sent = dict.fromkeys(ERROR_CODES, 0) | counters.errors_sent
        for code, count in sent.items():
            errors.add_metric([_label(code)], count)
        yield errors
        denied = CounterMetricFamily(
            "geartrain_permission_denied",
            "Requests the permissions file denied, by kind (submit, work, status, admin)",
            labels=["kind"],
        )
        for kind, count in (dict.fromkeys(DENIAL_KINDS, 0) | counters.permission_denied).items():
            denied.add_metric([kind], count)
        yield denied

    def _memory(self) -> Iterator[Metric]:
        memory = self.server.memory
        figures = memory.snapshot(self.server.scheduler)
        yield GaugeMetricFamily(
            "geartrain_memory_budget_bytes",
            "The memory budget (--max-memory) over what the server holds; 0 = none",
            value=memory.limit,
        )
        held = GaugeMetricFamily(
            "geartrain_memory_held_bytes",
            "Bytes held for peers by category: jobs (in-memory payloads), output (held "
            "replies and unread write buffers), bodies (large bodies being received)",
            labels=["category"],
        )
        for category in ("jobs", "output", "bodies"):
            held.add_metric([category], figures[category])
        yield held
        yield GaugeMetricFamily(
            "geartrain_connections_paused",
            "Connections whose reading is paused because the memory budget is nearly spent",
            value=len(memory.paused),
        )

    def _queue(self) -> Iterator[Metric]:
        counters = self.server.counters
        yield GaugeMetricFamily(
            "geartrain_queue_replay_seconds",
            "Seconds the start-up replay of the persistent queue took",
            value=counters.replay_seconds,
        )
        yield GaugeMetricFamily(
            "geartrain_queue_replayed_jobs",
            "Jobs replayed from the persistent queue at start-up",
            value=counters.replayed_jobs,
        )
        store = self.server.store
        if isinstance(store, GroupCommitStore):
            yield from _store_metrics(store)


def _store_metrics(store: GroupCommitStore) -> Iterator[Metric]:
    labels = [store.name]
    up = GaugeMetricFamily(
        "geartrain_queue_up",
        "1 while the persistent queue is reachable, 0 while it is down",
        labels=["backend"],
    )
    up.add_metric(labels, _flag(not store.is_down))
    yield up
    for name, documentation, value in (
        (
            "geartrain_queue_outstanding_writes",
            "Operations accepted, not yet taken into a batch",
            store.outstanding,
        ),
        (
            "geartrain_queue_in_flight_writes",
            "Operations in the batches being written now",
            store.in_flight,
        ),
    ):
        gauge = GaugeMetricFamily(name, documentation, labels=["backend"])
        gauge.add_metric(labels, value)
        yield gauge
    for name, documentation, value in (
        (
            "geartrain_queue_commits",
            "Batches committed (one transaction or pipeline each)",
            store.commits,
        ),
        ("geartrain_queue_failed_batches", "Batches whose write failed", store.failed_batches),
        (
            "geartrain_queue_reconnects",
            "Reconnections to the backend after a lost connection",
            store.reconnects,
        ),
    ):
        counter = CounterMetricFamily(name, documentation, labels=["backend"])
        counter.add_metric(labels, value)
        yield counter
    yield _histograms(
        "geartrain_queue_commit_seconds",
        "Time to commit one batch, its chunks included",
        [(store.name, store.commit_seconds.buckets(), store.commit_seconds.sum)],
        label="backend",
    )
    yield _histograms(
        "geartrain_queue_batch_operations",
        "Adds, removes and retry counts per committed batch",
        [(store.name, store.batch_operations.buckets(), store.batch_operations.sum)],
        label="backend",
    )


def _histograms(
    name: str,
    documentation: str,
    series: list[tuple[str, list[tuple[float, int]], float]],
    label: str = "function",
) -> HistogramMetricFamily:
    """A histogram family from (label value, cumulative buckets, sum) per series."""
    family = HistogramMetricFamily(name, documentation, labels=[label])
    for value, buckets, total in series:
        family.add_metric([value], [(_bound(bound), count) for bound, count in buckets], total)
    return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _by_type(
    name: str, documentation: str, counts: list[int], expected: frozenset[PacketType]
) -> CounterMetricFamily:
    """Counts by packet type: every type expected in this direction, and any other seen."""
    family = CounterMetricFamily(name, documentation, labels=["type"])
    for number, count in enumerate(counts):
        if count or number in expected:
            family.add_metric([_type_name(number)], count)
    return family


def _type_name(number: int) -> str:
    try:
        return PacketType(number).name
    except ValueError:
        return str(number)


def _label(name: bytes) -> str:
    # Function names are bytes; label values must be text.
    return name.decode("utf-8", "backslashreplace")


def _flag(value: bool) -> int:
    return 1 if value else 0
