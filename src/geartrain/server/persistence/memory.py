"""An in-memory queue store: the contract without a database, for unit tests.

It runs the same group-commit writer as the real backends (``_batch.py``), so tests that
use it see batching, ordering and failure handling behave as in production. Records live
in a :class:`MemoryBacking` that may outlive the store, which is how tests "restart" a
server: open a new store on the same backing. ``memory://`` URLs get a fresh backing,
i.e. nothing survives the process.

Layout: ``jobs`` maps id to record; a spooled payload is stored, like in every backend,
as chunks in ``chunks`` (id -> sequence number -> bytes) with an empty ``data`` in the
record, so tests of chunking run without a database.

Fault injection for tests: :meth:`MemoryStore.break_connection` makes the store behave as
if the server had dropped its connection (the next write fails with
:class:`ConnectionResetError`, and the reconnect succeeds unless ``refuse_connects``);
:attr:`MemoryBacking.fail_writes` makes writes fail with any exception, as a full disk
would.
"""

from __future__ import annotations

import dataclasses
from typing import Unpack

from ._batch import Batch, GroupCommitStore, StoreOptions
from .base import DeadJob, StoredJob


@dataclasses.dataclass(slots=True)
class MemoryBacking:
    """The "database" behind one or more successive :class:`MemoryStore` instances."""

    jobs: dict[int, StoredJob] = dataclasses.field(default_factory=dict)
    chunks: dict[int, dict[int, bytes]] = dataclasses.field(default_factory=dict)
    dead: dict[int, DeadJob] = dataclasses.field(default_factory=dict)
    #: When set, every write raises this exception (without applying anything).
    fail_writes: BaseException | None = None
    #: When true, connecting fails with ConnectionRefusedError (the server is down).
    refuse_connects: bool = False


class MemoryStore(GroupCommitStore):
    """Queue store keeping records in a :class:`MemoryBacking`."""

    name = "memory"

    def __init__(
        self, backing: MemoryBacking | None = None, **options: Unpack[StoreOptions]
    ) -> None:
        super().__init__(**options)
        self.backing = backing if backing is not None else MemoryBacking()
        self._connected = False

    def break_connection(self) -> None:
        """Simulate the server killing our connection."""
        self._connected = False

    async def _connect(self) -> None:
        if self.backing.refuse_connects:
            raise ConnectionRefusedError("memory backend refuses connections")
        self._connected = True

    async def _disconnect(self) -> None:
        self._connected = False

    async def _create(self) -> None:
        return None

    async def _ping(self) -> None:
        self._check_connected()

    async def _load(self) -> list[StoredJob]:
        self._check_connected()
        return [self.backing.jobs[key] for key in sorted(self.backing.jobs)]

    async def _write(self, batch: Batch) -> None:
        self._check_connected()
        if self.backing.fail_writes is not None:
            raise self.backing.fail_writes
        jobs, chunks = self.backing.jobs, self.backing.chunks
        for job_id in batch.removes:
            jobs.pop(job_id, None)
        for job_id in batch.chunk_removes:
            chunks.pop(job_id, None)
        for job_id, seq, data in batch.chunks:
            chunks.setdefault(job_id, {})[seq] = data
        for job in batch.adds:
            jobs[job.id] = job
        for job_id, retries in batch.retries:
            if job_id in jobs:
                jobs[job_id] = jobs[job_id]._replace(retries=retries)
        for job_id, when, retries in batch.reschedules:
            if job_id in jobs:
                jobs[job_id] = jobs[job_id]._replace(when=when, retries=retries)
        for dead_id in batch.dead_removes:
            self.backing.dead.pop(dead_id, None)
        for dead in batch.dead_adds:
            self.backing.dead[dead.id] = dead

    async def _load_dead(self) -> list[DeadJob]:
        self._check_connected()
        return [self.backing.dead[key] for key in sorted(self.backing.dead)]

    async def _chunked_ids(self) -> set[int]:
        self._check_connected()
        return set(self.backing.chunks)

    async def _read_chunk(self, job_id: int, seq: int) -> bytes | None:
        self._check_connected()
        return self.backing.chunks.get(job_id, {}).get(seq)

    def _check_connected(self) -> None:
        if not self._connected:
            raise ConnectionResetError("memory backend connection lost")
