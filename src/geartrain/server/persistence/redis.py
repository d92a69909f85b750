"""Redis queue store (redis-py asyncio).

URL: ``redis://[[user]:password@]host:6379/db`` (``rediss://`` for TLS,
``unix:///path/to/redis.sock?db=0`` for a socket), plus our query parameter ``prefix``
(keys ``<prefix>:…``, default ``geartrain``); other parameters go to redis-py.

Layout (three keys per queue, so ``load`` never needs ``KEYS`` or ``SCAN``):

* ``<prefix>:jobs``: a hash, field = job id in decimal, value = the packed record
  (priority, when, then function, unique, reducer and data with their lengths).
* ``<prefix>:order``: a sorted set of the same ids, scored ``priority * 2**51 + id``.
  Scores are doubles, exact up to 2**53, so this orders by (priority, id) exactly for
  any id below 2**51 (about 2.2e15; an id beyond that is refused).
  ``load`` walks it with ``ZRANGE`` in chunks and fetches the records with ``HMGET``,
  so the result arrives in (priority, id) order without sorting.
* ``<prefix>:retries``: a hash id -> retry count, only for jobs that were requeued.
  Keeping it apart lets ``update_retries`` be a plain ``HSET`` instead of a
  read-modify-write of the record.
* ``<prefix>:when``: a hash id -> run-at time, only for failed jobs waiting for their
  next attempt (``reschedule``); it overrides the time packed in the record, for the
  same reason. The store remembers which ids have an entry there, so that removing a
  job that never failed costs no command on this key.

* ``<prefix>:chunks:<id>``: for a large (spooled) payload only, a hash seq -> chunk
  (at most ``chunk_bytes``, 4 MiB, far below Redis' 512 MB per value), written in
  transactions of their own before the job's record, whose data is then empty; see
  ``_batch.py``. ``<prefix>:chunked`` is the set of ids that have such a key, so
  ``load`` finds them (and the orphans of a job whose record never came) without
  ``SCAN``, and a remove deletes the key of exactly those jobs.

* ``<prefix>:owner``: the Redis client id of the write connection of the server that
  holds the queue; a server whose claim names a client Redis still has refuses to
  start, one that names a gone client (a dead server) takes the queue over.
* ``<prefix>:dead``: a hash, field = dead job id in decimal, value = the packed dead job
  (``server/dead.py``); bounded by the dead-letter queue's limits, so ``load_dead``
  reads it with one ``HGETALL``.

A hash per job (``<prefix>:job:<id>``) was the alternative. Three fixed keys win on
every count that matters here: no per-key overhead (~70 bytes each in Redis) for
millions of jobs; ``load`` fetches ``LOAD_CHUNK`` records with one ``HMGET`` instead of
one command per key (and needs the index sorted set either way); ``HLEN``/``ZCARD``
give the queue size atomically; an operator deletes a queue with one ``DEL``. The
cost: a queue lives on one Redis node (no sharding, as with any single sorted set).

Every batch is one ``MULTI … EXEC`` pipeline: one round trip, applied atomically. We
pack its commands (RESP) ourselves and send them on a connection from redis-py's pool,
as its transactional pipeline would; redis-py's own packing of a few arguments per job
cost us several times the CPU of the rest of the write.
Unlike gearmand's redis queue (which refuses them), epoch jobs are stored like any other.

Durability is Redis's: a job is acknowledged once Redis has executed the EXEC. For
"nothing lost" run Redis with ``appendonly yes`` and ``appendfsync always`` (or
``everysec``, which loses at most about a second of jobs if the Redis *host* crashes).
A store opened on a Redis without AOF logs a warning. A lost connection is reopened by
the group-commit writer with jittered exponential backoff; see ``_batch.py``.

Failure handling is ours, not redis-py's, in every redis-py version we allow: its
retries are set to none, and writes go over one connection the store holds for itself
rather than one checked out of redis-py's pool per write. The pool reconnects a
connection the server dropped silently when it is checked out (and newer releases also
retry commands by default), so the store would never learn that its connection was cut.
Before each write the store checks its connection; one that the server closed is
reported as lost, and the writer reconnects and counts it. Reads (``load`` and the
start-up check) may go through the pool: they change nothing, so repeating one is safe.
"""

from __future__ import annotations

import itertools
import logging
import operator
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Unpack, cast

from ._batch import Batch, GroupCommitStore, StoreOptions
from ._rows import as_row, check_prefix
from .base import DeadJob, StoredJob

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.connection import AbstractConnection

logger = logging.getLogger(__name__)

#: priority, when, then the lengths of function, unique, reducer and data.
_HEADER = struct.Struct(">BqIIII")
#: Replace a dead server's claim with ours, only if it is still the one we saw dead.
_TAKE_OVER = (
    b"if redis.call('GET', KEYS[1]) == ARGV[1] then"
    b" redis.call('SET', KEYS[1], ARGV[2]) return 1 end return 0"
)
#: Delete our claim, and only ours.
_GIVE_UP = b"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 0"

#: Ids must stay below this for ``priority * ID_LIMIT + id`` to be exact in a double.
ID_LIMIT = 2**51
#: Ids fetched per ZRANGE/HMGET round trip in load(): large enough that 1M jobs take
#: ~100 round trips, small enough that Redis is never blocked for long by one command.
LOAD_CHUNK = 10_000


def pack(job: StoredJob) -> bytes:
    """The hash value for ``job`` (the id is the field, retries live elsewhere)."""
    data = as_row(job)[3]  # bytes: a spooled payload went to its chunks key
    header = _HEADER.pack(
        job.priority, job.when, len(job.function), len(job.unique), len(job.reducer), len(data)
    )
    return b"".join((header, job.function, job.unique, job.reducer, data))


#: priority and time of death, then the lengths of handle, function, unique, reducer,
#: data and attempts.
_DEAD_HEADER = struct.Struct(">BdIIIIII")


def pack_dead(dead: DeadJob) -> bytes:
    """The hash value for a dead job (the id is the field)."""
    parts = (dead.handle, dead.function, dead.unique, dead.reducer, dead.data, dead.attempts)
    header = _DEAD_HEADER.pack(dead.priority, dead.died, *map(len, parts))
    return b"".join((header, *parts))


def unpack_dead(dead_id: int, record: bytes) -> DeadJob:
    """Inverse of :func:`pack_dead`."""
    priority, died, *sizes = _DEAD_HEADER.unpack_from(record)
    pos = _DEAD_HEADER.size
    parts = []
    for size in sizes:
        parts.append(record[pos : pos + size])
        pos += size
    if pos != len(record):
        raise ValueError(f"corrupt dead job {dead_id}: {len(record)} bytes, expected {pos}")
    handle, function, unique, reducer, data, attempts = parts
    return DeadJob(dead_id, handle, function, unique, data, priority, reducer, died, attempts)


def unpack(job_id: int, record: bytes, retries: int) -> StoredJob:
    """Inverse of :func:`pack`."""
    priority, when, n_function, n_unique, n_reducer, n_data = _HEADER.unpack_from(record)
    pos = _HEADER.size
    parts = []
    for size in (n_function, n_unique, n_reducer, n_data):
        parts.append(record[pos : pos + size])
        pos += size
    if pos != len(record):
        raise ValueError(f"corrupt record for job {job_id}: {len(record)} bytes, expected {pos}")
    function, unique, reducer, data = parts
    return StoredJob(job_id, function, unique, data, priority, when, reducer, retries)


_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"
_BULK = b"$%d\r\n%b\r\n"
_PAIR = b"$%d\r\n%b\r\n$%d\r\n%b\r\n"
_job_id = operator.attrgetter("id")


def _head(name: bytes, key: bytes, count: int) -> bytes:
    """The start of a RESP command of ``count`` arguments after ``name`` and ``key``."""
    return b"*%d\r\n" % (count + 2) + _BULK % (len(name), name) + _BULK % (len(key), key)


def _command(name: bytes, key: bytes, args: list[bytes]) -> bytes:
    return _head(name, key, len(args)) + b"".join([_BULK % (len(arg), arg) for arg in args])


def _pairs(name: bytes, key: bytes, firsts: list[bytes], seconds: list[bytes]) -> bytes:
    """``name key first1 second1 first2 second2 …`` (HSET field value, ZADD score member)."""
    return _head(name, key, 2 * len(firsts)) + b"".join(
        [_PAIR % (len(a), a, len(b), b) for a, b in zip(firsts, seconds, strict=True)]
    )


def _chunks_by_job(
    chunks: list[tuple[int, int, bytes]],
) -> Iterator[tuple[int, list[bytes], list[bytes]]]:
    """``chunks`` grouped by job: (id, sequence numbers in decimal, chunks)."""
    for job_id, group in itertools.groupby(chunks, key=operator.itemgetter(0)):
        items = list(group)
        yield job_id, [b"%d" % seq for _, seq, _ in items], [data for _, _, data in items]


class RedisStore(GroupCommitStore):
    """Queue store in three Redis keys (see the module docstring).

    Args:
        url: redis-py connection URL (without our ``prefix`` parameter).
        prefix: keys are ``<prefix>:jobs``, ``<prefix>:order``, ``<prefix>:retries``.
        client_name: ``CLIENT SETNAME`` of our connections, to find them in
            ``CLIENT LIST``.
        **options: group-commit tuning, see :class:`StoreOptions`.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "geartrain",
        client_name: str = "geartrain",
        **options: Unpack[StoreOptions],
    ) -> None:
        super().__init__(**options)
        self.max_job_id = ID_LIMIT
        self.url = url
        self.prefix = check_prefix(prefix)
        self.jobs_key = f"{prefix}:jobs"
        self.order_key = f"{prefix}:order"
        self.retries_key = f"{prefix}:retries"
        self.chunked_key = f"{prefix}:chunked"
        self.owner_key = f"{prefix}:owner"
        self._key_owner = self.owner_key.encode()
        self.when_key = f"{prefix}:when"
        self._key_when = self.when_key.encode()
        self._rescheduled: set[int] = set()  # ids with an entry in when_key
        self.dead_key = f"{prefix}:dead"
        self._key_dead = self.dead_key.encode()
        self._key_chunked = self.chunked_key.encode()
        self._key_jobs, self._key_order, self._key_retries = (
            key.encode() for key in (self.jobs_key, self.order_key, self.retries_key)
        )
        self.client_name = client_name
        self._client: Redis | None = None
        #: The connection every write goes over; see the module docstring.
        self._connection: AbstractConnection | None = None

    def _redis(self) -> Redis:
        if self._client is None:
            raise ConnectionResetError("redis: not connected")
        return self._client

    async def _connect(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries of redis-py's own (some releases retry three times by default): the
        # group-commit writer owns reconnection, and it must see failures to make adds
        # fail fast while Redis is down and to undo a batch whose outcome is unknown.
        client = Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),  # type: ignore[no-untyped-call,unused-ignore]
            retry_on_error=[],
            health_check_interval=0,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            client_name=self.client_name,
        )
        # Typed in some redis-py releases, not in others.
        writer = client.connection_pool.make_connection()  # type: ignore[no-untyped-call,unused-ignore]
        try:
            await writer.connect()
            await client.ping()
        except BaseException:
            await writer.disconnect(nowait=True)
            await client.aclose()
            raise
        self._client, self._connection = client, writer

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        writer, self._connection = self._connection, None
        try:
            if writer is not None:
                await writer.disconnect(nowait=True)
            if client is not None:
                await client.aclose()
        except Exception as exc:  # a dead connection may complain while closing
            logger.debug("redis: error while closing: %s", exc)

    async def _try_claim(self) -> str | None:
        # The owner key names the Redis client id of our write connection. Redis drops
        # a client the moment its connection ends, so a key naming a client that no
        # longer exists is a dead server's claim, taken over atomically (_TAKE_OVER).
        own_id = await self._ask(b"CLIENT", b"ID")
        if await self._ask(b"SET", self._key_owner, own_id, b"NX") is not None:
            return None
        holder = await self._ask(b"GET", self._key_owner)
        if holder is None or int(holder) == own_id:
            return None if holder is not None else "a connection that just ended"
        alive = await self._ask(b"CLIENT", b"LIST", b"ID", holder)
        if not alive:
            taken = await self._ask(b"EVAL", _TAKE_OVER, 1, self._key_owner, holder, own_id)
            return None if taken == 1 else "a connection that just ended"
        fields = dict(field.split(b"=", 1) for field in bytes(alive).split() if b"=" in field)
        return (
            f"key {self.owner_key} names Redis client {int(holder)}"
            f" ({fields.get(b'name', b'').decode() or 'unnamed'},"
            f" {fields.get(b'addr', b'?').decode()})"
        )

    async def _release_claim(self) -> None:
        own_id = await self._ask(b"CLIENT", b"ID")
        await self._ask(b"EVAL", _GIVE_UP, 1, self._key_owner, own_id)

    async def _ask(self, *command: object) -> Any:
        """One command on the write connection, and its reply."""
        writer = await self._live_writer()
        await writer.send_command(*command)
        return await writer.read_response()

    async def _ping(self) -> None:
        # On the write connection: the client's pool would quietly open a fresh one.
        writer = await self._live_writer()
        await writer.send_command("PING", check_health=False)
        await writer.read_response()

    async def _live_writer(self) -> AbstractConnection:
        """The write connection, checked: one the server closed is reported as lost.

        Without this check redis-py would open a new connection inside
        ``send_packed_command`` and the store would never count the loss.
        """
        writer = self._connection
        if writer is None or not writer.is_connected:
            raise ConnectionResetError("redis: not connected")
        # Between writes nothing may arrive: end of stream, or any byte at all (an error
        # the server sent before it closed), means the connection is gone.
        # redis-py 8 renamed can_read_destructive (the old name now warns) to can_read.
        can_read = getattr(writer, "can_read", None) or writer.can_read_destructive
        if await can_read():
            raise ConnectionResetError("redis: connection closed by the server")
        return writer

    async def _create(self) -> None:
        # Keys spring into existence on first write; only check the durability setup.
        try:
            config = await self._redis().config_get("appendonly")
        except Exception as exc:  # CONFIG may be renamed or forbidden on managed Redis
            logger.debug("redis: cannot read appendonly setting: %s", exc)
            return
        if str(config.get("appendonly", "")).lower() != "yes":
            logger.warning(
                "redis: appendonly is off, queued jobs survive only until Redis restarts "
                "or snapshots (set appendonly yes for a durable queue)"
            )

    async def _load(self) -> list[StoredJob]:
        client = self._redis()
        jobs: list[StoredJob] = []
        start = 0
        while True:
            ids = cast(
                "list[bytes]", await client.zrange(self.order_key, start, start + LOAD_CHUNK - 1)
            )
            if not ids:
                return jobs
            async with client.pipeline(transaction=False) as pipe:
                pipe.hmget(self.jobs_key, ids)
                pipe.hmget(self.retries_key, ids)
                pipe.hmget(self.when_key, ids)
                records, retries, whens = await pipe.execute()
            for raw_id, record, count, when in zip(ids, records, retries, whens, strict=True):
                if record is None:  # cannot happen with MULTI writes; tolerate hand edits
                    logger.warning("redis: job %s is in %s only", raw_id, self.order_key)
                    continue
                job = unpack(int(raw_id), record, int(count or 0))
                if when is not None:
                    job = job._replace(when=int(when))
                    self._rescheduled.add(job.id)
                jobs.append(job)
            start += LOAD_CHUNK

    async def _load_dead(self) -> list[DeadJob]:
        raw = cast("dict[bytes, bytes]", await self._redis().hgetall(self.dead_key))  # type: ignore[misc,unused-ignore]
        return [unpack_dead(int(key), raw[key]) for key in sorted(raw, key=int)]

    def chunks_key(self, job_id: int) -> str:
        """The hash holding the chunks of job ``job_id``."""
        return f"{self.prefix}:chunks:{job_id}"

    async def _chunked_ids(self) -> set[int]:
        members = await self._redis().smembers(self.chunked_key)  # type: ignore[misc,unused-ignore]
        return {int(member) for member in members}

    async def _read_chunk(self, job_id: int, seq: int) -> bytes | None:
        chunk = await self._redis().hget(self.chunks_key(job_id), str(seq))  # type: ignore[misc,unused-ignore]
        return cast("bytes | None", chunk)  # bytes: the client does not decode

    async def _write(self, batch: Batch) -> None:
        from redis.exceptions import ResponseError

        commands = self._commands(batch)
        if not commands:
            return
        connection = await self._live_writer()
        try:
            # What redis-py's transactional pipeline does, with commands we packed.
            await connection.send_packed_command([_MULTI, *commands, _EXEC], check_health=False)
            errors: list[ResponseError] = []
            for _ in range(len(commands) + 1):  # +OK for MULTI, then +QUEUED each
                try:
                    await connection.read_response()
                except ResponseError as err:  # refused while queueing; EXEC will abort
                    errors.append(err)
            try:
                results = await connection.read_response()
            except ResponseError:
                if errors:
                    raise errors[0] from None
                raise
            failed = [r for r in results if isinstance(r, Exception)]  # e.g. WRONGTYPE
            if failed:
                raise failed[0]
        except ResponseError:
            raise  # every reply was read: the connection is still in step
        except BaseException:
            # Replies may be left unread: this connection must not serve another write.
            await connection.disconnect(nowait=True)
            raise

    def _commands(self, batch: Batch) -> list[bytes]:
        """The batch as packed commands (RESP), built here rather than by redis-py.

        redis-py encodes and frames every argument through several Python calls, which
        cost us about as much as everything else in a write; here each job is a couple
        of ``%`` formats. The commands and their arguments are exactly those of
        ``HSET``/``ZADD``/``HDEL``/``ZREM`` with ids in decimal.
        """
        commands = []
        if batch.removes:
            ids = [b"%d" % job_id for job_id in batch.removes]
            commands.append(_command(b"HDEL", self._key_jobs, ids))
            commands.append(_command(b"ZREM", self._key_order, ids))
            commands.append(_command(b"HDEL", self._key_retries, ids))
            rescheduled = self._rescheduled
            if rescheduled and not rescheduled.isdisjoint(batch.removes):
                # Forgotten at once: should this batch fail, an entry left behind for an
                # id that is never reused is only a few unread bytes.
                done = rescheduled.intersection(batch.removes)
                rescheduled -= done
                commands.append(_command(b"HDEL", self._key_when, [b"%d" % i for i in done]))
        if batch.chunk_removes:
            keys = [self.chunks_key(job_id).encode() for job_id in batch.chunk_removes]
            commands.append(_command(b"DEL", keys[0], keys[1:]))
            ids = [b"%d" % job_id for job_id in batch.chunk_removes]
            commands.append(_command(b"SREM", self._key_chunked, ids))
        for job_id, chunk_ids, chunks in _chunks_by_job(batch.chunks):
            # The set first: a chunk key is never without its entry there.
            commands.append(_command(b"SADD", self._key_chunked, [b"%d" % job_id]))
            key = self.chunks_key(job_id).encode()
            commands.append(_pairs(b"HSET", key, chunk_ids, chunks))
        if batch.adds:
            adds = batch.adds
            ids = [b"%d" % job.id for job in adds]
            commands.append(_pairs(b"HSET", self._key_jobs, ids, list(map(pack, adds))))
            scores = [b"%d" % (job.priority * ID_LIMIT + job.id) for job in adds]
            commands.append(_pairs(b"ZADD", self._key_order, scores, ids))
            retried = [job for job in adds if job.retries]
            if retried:
                commands.append(
                    _pairs(
                        b"HSET",
                        self._key_retries,
                        [b"%d" % job.id for job in retried],
                        [b"%d" % job.retries for job in retried],
                    )
                )
        if batch.retries:
            retries = dict(batch.retries)  # the last update of an id wins
            commands.append(
                _pairs(
                    b"HSET",
                    self._key_retries,
                    [b"%d" % job_id for job_id in retries],
                    [b"%d" % n for n in retries.values()],
                )
            )
        if batch.reschedules:
            self._rescheduled.update(job_id for job_id, _, _ in batch.reschedules)
            ids = [b"%d" % job_id for job_id, _, _ in batch.reschedules]
            whens = [b"%d" % when for _, when, _ in batch.reschedules]
            counts = [b"%d" % n for _, _, n in batch.reschedules]
            commands.append(_pairs(b"HSET", self._key_when, ids, whens))
            commands.append(_pairs(b"HSET", self._key_retries, ids, counts))
        if batch.dead_removes:
            ids = [b"%d" % dead_id for dead_id in batch.dead_removes]
            commands.append(_command(b"HDEL", self._key_dead, ids))
        if batch.dead_adds:
            ids = [b"%d" % dead.id for dead in batch.dead_adds]
            records = [pack_dead(dead) for dead in batch.dead_adds]
            commands.append(_pairs(b"HSET", self._key_dead, ids, records))
        return commands

    def _is_connection_error(self, exc: BaseException) -> bool:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        return isinstance(exc, OSError | RedisConnectionError | RedisTimeoutError)
