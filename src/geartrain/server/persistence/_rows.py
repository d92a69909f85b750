"""Names and rows shared by the SQL backends (and the prefix rule for every backend)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

from .base import DeadJob, StoredJob

_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}\Z")


def check_prefix(prefix: str) -> str:
    """Validate a table/key prefix; it is spliced into SQL, so it must be a plain name.

    48 characters leaves room for the ``_jobs`` and ``_chunks`` suffixes within MySQL's 64-character
    identifier limit (PostgreSQL allows 63).
    """
    if not _PREFIX_RE.match(prefix):
        raise ValueError(
            f"invalid queue prefix {prefix!r}: use letters, digits and _ "
            "(not starting with a digit), at most 48 characters"
        )
    return prefix


#: Columns in :class:`StoredJob` field order, so a job *is* its row.
SQL_COLUMNS = "id, function, unique_key, data, priority, when_to_run, reducer, retries"
SqlRow = tuple[int, bytes, bytes, bytes, int, int, bytes, int]


#: Columns of the dead-letter table, in :class:`DeadJob` field order.
DEAD_COLUMNS = "id, handle, function, unique_key, data, priority, reducer, died, attempts"


def dead_from_row(row: Sequence[object]) -> DeadJob:
    """A dead job from a row in :data:`DEAD_COLUMNS` order (any bytes-like blobs)."""
    return DeadJob(
        id=int(cast("int", row[0])),
        handle=bytes(cast("bytes", row[1])),
        function=bytes(cast("bytes", row[2])),
        unique=bytes(cast("bytes", row[3])),
        data=bytes(cast("bytes", row[4])),
        priority=int(cast("int", row[5])),
        reducer=bytes(cast("bytes", row[6])),
        died=float(cast("float", row[7])),
        attempts=bytes(cast("bytes", row[8])),
    )


def as_row(job: StoredJob) -> SqlRow:
    """``job`` as a row in :data:`SQL_COLUMNS` order (it already is one).

    Only for jobs of a :class:`~geartrain.server.persistence._batch.Batch`, whose data
    is bytes: a spooled payload has been written in chunks and replaced by b"".
    """
    return cast("SqlRow", job)


def from_row(row: SqlRow) -> StoredJob:
    """Inverse of :func:`as_row`; bytes() accepts memoryview and bytearray rows too."""
    return StoredJob(
        id=int(row[0]),
        function=bytes(row[1]),
        unique=bytes(row[2]),
        data=bytes(row[3]),
        priority=int(row[4]),
        when=int(row[5]),
        reducer=bytes(row[6]),
        retries=int(row[7]),
    )
