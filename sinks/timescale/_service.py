"""The TimescaleDB sink: a consumer-group member writing Kafka records to TimescaleDB exactly once.

One task consumes and writes (docs/architecture.md#delivery-guarantees, rules 5 and 6):

- records are decoded into table rows as they are fetched and buffered until
  ``batch_max_records`` or ``batch_max_wait_s``;
- a batch is written in one transaction with the next offset of every partition it covers
  (:mod:`sinks.timescale._writer`); Kafka's group commit afterwards is informative only;
- one batch is written at a time, in a background task, while the loop goes on fetching and
  decoding the next one (at most one batch in the database and one in the buffer): the
  database's work on a batch overlaps the sink's CPU work on the next. Batches commit in order,
  each with its own offsets, so the database never holds the rows of a batch without its
  offsets nor offsets past rows it lacks;
- after every assignment (start, rebalance) the new partitions stay paused until they are
  positioned at the offsets stored in ``consumer_offsets`` (none stored: the beginning; stored
  beyond the end of the partition, e.g. the in-memory embedded broker restarted empty: a warning
  and the beginning);
- database down, read-only or slow: every partition is paused, the same batch is retried with
  capped exponential backoff and full jitter, ``ready()`` is False; the consumer keeps polling so
  it stays in its group; success resumes consumption where it stopped;
- a record the database rejects (SQLSTATE class 22/23/54) is isolated by bisection inside a
  rolled-back transaction, sent to the dead-letter topic with the error, and the batch is retried
  without it. Undecodable records are dead-lettered the same way. Dead letters are acknowledged
  by Kafka before the batch commits, so a crash can repeat a dead letter but never lose one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from citysense.clients import (
    check_database,
    connect_database,
    ensure_topics,
    kafka_consumer,
    kafka_producer,
)
from citysense.consumer_lag import TopicLagGauge, topic_lag
from citysense.logs import partition_summary
from citysense.registry import Registry
from citysense.runtime import Lifecycle, StageFailedError
from citysense.settings import FastPath, Settings, mask_url
from schemas import SchemaError, encode
from sinks.timescale import _metrics as metrics
from sinks.timescale._latency import observe_committed_rows
from sinks.timescale._migrations import migrate, set_role_passwords
from sinks.timescale._policies import apply_policies, drop_old_chunks
from sinks.timescale._registry import sync_registry
from sinks.timescale._settings import SinkSettings
from sinks.timescale._writer import (
    Record,
    Row,
    RowError,
    Rows,
    add_record,
    decode_record,
    decode_record_generic,
    is_poison,
    load_offsets,
    prepare_connection,
    record_labels,
    store_offsets,
    write_rows,
)

__all__ = ["TimescaleSink"]

log = logging.getLogger("citysense.sink.timescale")

#: Longest single wait in the loop, so stop() and rebalances are noticed quickly.
_MAX_POLL_S = 0.5
#: A write or positioning attempt that takes longer is abandoned and retried (a black-holed
#: connection would otherwise hang until the kernel's TCP timeout).
_ATTEMPT_TIMEOUT_S = 30.0
_MAX_REJECTION_ROUNDS = 5
_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, TimeoutError)


@dataclass(slots=True)
class _Entry:
    """One Kafka record of a batch, decoded; never changed once built.

    Not ``frozen``: a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, 0.8 µs per record instead of 0.2 µs, on the sink's hot path.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    schema: str
    record: Record


@dataclass(frozen=True, slots=True)
class _DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    error: BaseException
    reason: str
    codec: str | None = None
    sensor_id: str | None = None


#: Records decoded between two yields to the event loop, so a write in progress keeps streaming
#: its COPY to the database while the next batch is decoded.
_DECODE_CHUNK = 500


class _Batch:
    """Kafka records of a batch, decoded: their entries, dead letters and table rows.

    ``records`` keeps the Kafka records of each partition (the offsets to store are their last
    offset + 1, dead-lettered ones included); ``rows`` holds the rows of every entry.
    """

    __slots__ = ("count", "dead", "decode", "entries", "first_at", "records", "rows")

    def __init__(self, decode: Callable[[bytes], tuple[str, Record]] = decode_record) -> None:
        #: :func:`decode_record`, or its generic twin with the ``sink-copy`` fast path off.
        self.decode = decode
        self.records: dict[TopicPartition, list[Any]] = {}
        self.entries: list[_Entry] = []
        self.dead: list[_DeadLetter] = []
        self.rows = Rows()
        self.count = 0
        self.first_at = 0.0

    def add(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        """Decode ``records`` of ``tp`` (in offset order) into entries and rows."""
        if not self.count:
            self.first_at = time.monotonic()
        topic, partition = tp.topic, tp.partition
        entries, dead, rows, decode = self.entries, self.dead, self.rows, self.decode
        for r in records:
            value = r.value
            try:
                if value is None:
                    raise SchemaError("record has no value (tombstone)")
                name, record = decode(value)
                add_record(rows, name, record)  # RowError, before adding anything: no table
            except (SchemaError, RowError) as exc:
                dead.append(
                    _DeadLetter(topic, partition, r.offset, r.key, value or b"", exc, "undecodable")
                )
                continue
            entries.append(_Entry(topic, partition, r.offset, r.key, value, name, record))
        try:
            self.records[tp].extend(records)
        except KeyError:
            self.records[tp] = list(records)
        self.count += len(records)

    def offsets(self) -> dict[tuple[str, int], int]:
        """The next offset of every partition of the batch."""
        return {
            (tp.topic, tp.partition): records[-1].offset + 1
            for tp, records in self.records.items()
            if records
        }

    def without(self, partitions: set[TopicPartition]) -> _Batch:
        """This batch less the records of ``partitions`` (revoked, or read again)."""
        if not partitions & self.records.keys():
            return self
        dropped = {(tp.topic, tp.partition) for tp in partitions}
        kept = _Batch(self.decode)
        kept.first_at = self.first_at
        kept.records = {tp: r for tp, r in self.records.items() if tp not in partitions}
        kept.count = sum(len(r) for r in kept.records.values())
        kept.entries = [e for e in self.entries if (e.topic, e.partition) not in dropped]
        kept.dead = [d for d in self.dead if (d.topic, d.partition) not in dropped]
        for e in kept.entries:
            add_record(kept.rows, e.schema, e.record)
        return kept


class _TransientError(Exception):
    """A dependency is away; retry later."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, sink: TimescaleSink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Wait for a write in progress: its offsets must not be committed after the new owner
        # has read them (it would be harmless, as writes are idempotent, but noisy).
        async with self._sink._lock:
            self._sink._forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._sink._assigned(assigned)


class TimescaleSink:
    """Measurement and aggregate topics → TimescaleDB; a :class:`citysense.runtime.Component`."""

    name = "sink-timescale"

    def __init__(
        self, settings: Settings, sink: SinkSettings, registry: Registry | None = None
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._registry = registry
        #: The COPY transcoder (the ``sink-copy`` fast path) or the generic Avro decoder.
        self._decode: Callable[[bytes], tuple[str, Record]] = (
            decode_record if settings.fast(FastPath.SINK_COPY) else decode_record_generic
        )
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        #: Start steps and background tasks (consume, write, retention): one dying fails the
        #: stage, and a start failing part way undoes what it did.
        self._lifecycle = Lifecycle(self.name)
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._lag_gauge = TopicLagGauge(metrics.CONSUMER_LAG)
        #: Records being taken in; the batch being written (or waiting to be written again).
        self._buffer = _Batch(self._decode)
        self._pending: _Batch | None = None
        self._writing: asyncio.Task[None] | None = None
        self._write_error: BaseException | None = None
        self._unpositioned: set[TopicPartition] = set()
        self._unverified: set[TopicPartition] = set()
        self._excluded: set[tuple[str, int, int]] = set()
        self._dead_sent: set[tuple[str, int, int]] = set()
        self._prepared = False
        #: Set once the database is migrated and the registry synced (see :meth:`wait_prepared`).
        self._prepared_event = asyncio.Event()
        self._failing = False
        self._failures = 0
        self._retry_at = 0.0
        #: When a poll last took every record fetched so far (monotonic), for ``poll_interval_ms``.
        self._drained_at = -math.inf
        self._positions: dict[TopicPartition, int] = {}
        self._last_kafka_commit = 0.0
        self._started = False
        self._stopped = False

    # --- Component ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        kafka = self._settings.kafka
        lifecycle = self._lifecycle
        log.info(
            "sink starting",
            extra={
                "database": mask_url(self._settings.database.url.get_secret_value()),
                "topics": len(self._sink.topics),
                "group_id": self._sink.group_id,
            },
        )
        async with lifecycle.starting():
            await ensure_topics(kafka, [*self._sink.topics, self._sink.dead_letter_topic])
            # Wrong password, missing database, bad URL: said at start, not retried forever.
            # An outage later is retried (docs/architecture.md#delivery-guarantees).
            await check_database(self._settings.database)
            pool = self._pool = AsyncConnectionPool(
                self._settings.database.url.get_secret_value(),
                min_size=self._settings.database.pool_min,
                max_size=self._settings.database.pool_max,
                open=False,
                check=AsyncConnectionPool.check_connection,
                # The aggregates' staging tables, once per session instead of once per batch.
                configure=prepare_connection,
                kwargs={"connect_timeout": 5, "application_name": "citysense-sink"},
                name="citysense-sink",
            )
            lifecycle.started("database pool", pool.close)
            await pool.open(wait=False)
            producer = self._producer = kafka_producer(kafka)
            lifecycle.started("kafka producer", producer.stop)
            await producer.start()
            consumer = self._consumer = kafka_consumer(
                kafka,
                group_id=self._sink.group_id,
                session_timeout_ms=self._sink.session_timeout_ms,
                heartbeat_interval_ms=self._sink.heartbeat_interval_ms,
                max_poll_records=self._sink.batch_max_records,
                # Out of range raises, so the sink can say so
                # (docs/architecture.md#delivery-guarantees, rule 5) and start over.
                auto_offset_reset="none",
            )
            consumer.subscribe(list(self._sink.topics), listener=_Rebalance(self))
            lifecycle.started("kafka consumer", consumer.stop)
            await consumer.start()
        self._task = lifecycle.spawn(self._run(), name="sink-timescale-consume")

    async def stop(self) -> None:
        """Stop consuming, write what is buffered (one attempt), leave the group, close."""
        if self._stopped:
            return
        self._stopped = True
        self._lifecycle.begin_stop()
        self._stopping.set()
        if self._task is not None:
            # Its drain is bounded (see _run); a loop stuck on a broker that went away is
            # cancelled by close() below, so the stop ends within the shutdown deadline.
            await asyncio.wait({self._task}, timeout=self._settings.shutdown_deadline_s * 0.6)
        # The retention task is cancelled; the consumer, producer and pool close, in that order.
        await self._lifecycle.close()
        metrics.READY.set(0)

    @property
    def failure(self) -> str | None:
        """Why the stage failed (a background task died), or None."""
        return self._lifecycle.failure

    def ready(self) -> bool:
        return (
            self._started
            and not self._stopped
            and self._prepared
            and not self._failing
            and not self._lifecycle.failed
        )

    async def wait_failed(self) -> None:
        await self._lifecycle.wait_failed()

    async def wait_prepared(self, timeout_s: float = 120.0) -> None:
        """Until the database is migrated, the role passwords set and the registry synced.

        ``citysense run`` starts the publication API after this: on a fresh database the API
        would otherwise look for its views before the sink's first migration made them. Raises
        :class:`~citysense.runtime.StageFailedError` if the sink fails first (a migration that
        cannot apply ends the sink) or the database stays unreachable for ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while not self._prepared_event.is_set():
            if self._lifecycle.failed or self._stopped:
                raise StageFailedError(f"{self.name}: {self._lifecycle.failure or 'stopped'}")
            if time.monotonic() > deadline:
                raise StageFailedError(
                    f"{self.name}: the database was not prepared within {timeout_s:g} s "
                    "(see the sink's log lines above)"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._prepared_event.wait(), 0.2)

    async def __aenter__(self) -> TimescaleSink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- rebalance ---------------------------------------------------------------------------

    def _forget(self, revoked: set[TopicPartition]) -> None:
        # Called under the lock: no write is in progress.
        self._buffer = self._buffer.without(revoked)
        if self._pending is not None:
            self._pending = self._pending.without(revoked)
        for tp in revoked:
            self._unpositioned.discard(tp)
            self._unverified.discard(tp)
            self._positions.pop(tp, None)
        log.info("partitions revoked", extra=_partitions_extra(revoked))

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        self._unpositioned |= assigned
        if assigned and self._consumer is not None:
            # No record before the partition is positioned at the stored offset.
            self._consumer.pause(*assigned)
        log.info("partitions assigned", extra=_partitions_extra(assigned))

    # --- main loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stopping.is_set():
                if time.monotonic() >= self._retry_at and self._writing is None:
                    if not self._prepared:
                        await self._unless_stopped(self._attempt(self._prepare, "prepare"))
                    if self._prepared and self._unpositioned:
                        await self._unless_stopped(self._attempt(self._position, "position"))
                    if self._prepared:
                        self._start_write()
                self._apply_pauses()
                if self._writing is not None and self._due():
                    # Nothing more to take in until the batch in the database is committed.
                    await asyncio.wait({self._writing}, timeout=_MAX_POLL_S)
                    continue
                await self._fetch(consumer)
        finally:
            if self._writing is not None:
                with contextlib.suppress(BaseException):
                    await self._writing
        if self._write_error is not None:
            raise self._write_error
        # Drain: one last write of what is pending and buffered; if the database is away the
        # records stay in Kafka after the stored offsets and the next run writes them. Within
        # half the shutdown deadline, so the clients still close before it.
        if self._prepared:
            drain_s = min(_ATTEMPT_TIMEOUT_S, self._settings.shutdown_deadline_s / 2)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(drain_s):
                    if self._pending is not None:
                        await self._flush()
                    if self._buffer.count:
                        self._pending, self._buffer = self._buffer, _Batch(self._decode)
                        await self._flush()

    async def _unless_stopped(self, step: Awaitable[None]) -> None:
        """``step``, given up when :meth:`stop` is called: preparing or positioning against a
        broker or database that went away would hold the stop for up to ``_ATTEMPT_TIMEOUT_S``,
        past the shutdown deadline. Both are redone by the next run."""
        work = asyncio.ensure_future(step)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            return
        work.result()

    def _start_write(self) -> None:
        """Start writing the pending batch (a failed one again), else the buffer when due."""
        if self._pending is None or not self._pending.count:
            self._pending = None
            if not self._buffer.count or not (self._failing or self._due()):
                return
            self._pending, self._buffer = self._buffer, _Batch(self._decode)
        self._writing = self._lifecycle.spawn(
            self._attempt(self._flush, "write"), name="sink-timescale-write", finite=True
        )
        self._writing.add_done_callback(self._write_done)

    def _write_done(self, task: asyncio.Task[None]) -> None:
        self._writing = None
        if task.cancelled():
            self._write_error = RuntimeError("sink write cancelled")
        elif (error := task.exception()) is not None:
            # Not a dependency being away (_attempt handles those): the loop ends with it.
            self._write_error = error
        else:
            return
        self._stopping.set()

    async def _fetch(self, consumer: AIOKafkaConsumer) -> None:
        """One poll of Kafka, of at most ``_DECODE_CHUNK`` records; what it returns is decoded
        into the buffer.

        getmany() returns without yielding when records are fetched already, and builds its
        records (aiokafka's ``ConsumerRecord``, ~1.5 µs each) in one go: asking for a whole batch
        (10,000 records) would hold the event loop ~15 ms, and the write task with it (each of
        its round trips to the database is noticed only when the loop runs). So a chunk at a
        time, letting the write task and callbacks run before each.
        """
        wait_s = self._drained_at + self._sink.poll_interval_ms / 1000 - time.monotonic()
        if wait_s > 0:
            # The last poll emptied what was fetched, so this one makes the consumer fetch
            # again: not before the interval (a write in progress goes on meanwhile).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait_s)
            if self._stopping.is_set():
                return
        timeout_ms = int(self._poll_timeout() * 1000)
        await asyncio.sleep(0)
        max_records = max(1, min(_DECODE_CHUNK, self._sink.batch_max_records - self._buffer.count))
        try:
            fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except OffsetOutOfRangeError as exc:
            # Real Kafka: the stored offset is past the end (the broker lost data) or before
            # the start (retention deleted what the sink never read).
            await self._restart_from_beginning(set(exc.args[0]) if exc.args else set())
            return
        except NoOffsetForPartitionError as exc:
            # A partition assigned by a rebalance while a write was in progress: aiokafka's
            # fetcher looked for an offset committed to Kafka before _position() could seek it.
            # The sink keeps its offsets in the database, so there is none: not a failure, the
            # partition is positioned from the database on the next round of the loop.
            waiting = {tp for tp in exc.args if isinstance(tp, TopicPartition)}
            self._unpositioned |= waiting & consumer.assignment()
            log.debug("partition assigned before it was positioned", extra={"error": str(exc)})
            return
        if self._sink.poll_interval_ms and sum(map(len, fetched.values())) < max_records:
            self._drained_at = time.monotonic()
        if self._unverified:
            await self._verify_positions()
        for tp, records in fetched.items():
            for first in range(0, len(records), _DECODE_CHUNK):
                if first:
                    await asyncio.sleep(0)  # let a write in progress stream its COPY
                if tp in self._unpositioned or tp not in consumer.assignment():
                    break  # fetched before a seek: the partition is re-read from its position
                self._buffer.add(tp, records[first : first + _DECODE_CHUNK])

    def _apply_pauses(self) -> None:
        """Pause what must not be fetched: everything while failing or full, else the partitions
        not positioned yet; resume the rest."""
        consumer = self._consumer
        assert consumer is not None
        assignment = consumer.assignment()
        full = self._buffer.count >= self._sink.batch_max_records
        if self._failing or not self._prepared or full:
            wanted = set(assignment)
        else:
            wanted = assignment & self._unpositioned
        paused = consumer.paused() & assignment
        if wanted - paused:
            consumer.pause(*(wanted - paused))
        if paused - wanted:
            consumer.resume(*(paused - wanted))

    def _due(self) -> bool:
        buffered = self._buffer.count
        return buffered > 0 and (
            buffered >= self._sink.batch_max_records
            or time.monotonic() - self._buffer.first_at >= self._sink.batch_max_wait_s
            or self._stopping.is_set()
        )

    def _poll_timeout(self) -> float:
        now = time.monotonic()
        if self._writing is None and (self._failing or not self._prepared):
            return min(_MAX_POLL_S, max(0.0, self._retry_at - now))
        if self._buffer.count:
            deadline = self._buffer.first_at + self._sink.batch_max_wait_s
            return min(_MAX_POLL_S, max(0.0, deadline - now))
        return _MAX_POLL_S

    async def _attempt(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        """Run one attempt of ``step``; a transient failure schedules a retry with backoff."""
        try:
            await asyncio.wait_for(step(), _ATTEMPT_TIMEOUT_S)
        except (*_TRANSIENT, _TransientError, KafkaError, psycopg.Error) as exc:
            if isinstance(exc, psycopg.Error) and not _transient_db_error(exc):
                log.error("unexpected database error; retrying", extra={"error": _describe(exc)})
            self._failures += 1
            # Capped exponential backoff with full jitter (AWS Architecture Blog, "Exponential
            # Backoff And Jitter", 2015): spreads the retries of many sinks after an outage.
            ceiling = self._sink.retry_initial_s * 2 ** min(self._failures - 1, 30)
            self._retry_at = time.monotonic() + random.uniform(
                0, min(self._sink.retry_max_s, ceiling)
            )
            metrics.RETRIES.labels(what).inc()
            if not self._failing:
                log.warning(
                    "database or broker unavailable; consumption paused",
                    extra={"step": what, "error": _describe(exc)},
                )
            self._failing = True
            metrics.READY.set(0)
            return
        if self._failing:
            log.info("dependencies reachable again; consumption resumed", extra={"step": what})
            self._failing = False
            self._failures = 0
            self._retry_at = 0.0
            metrics.READY.set(1)

    # --- steps -------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Migrations, role passwords and storage policies; then the retention schedule."""
        conn = await connect_database(self._settings.database, autocommit=True)
        report = None
        try:
            if self._sink.migrate_on_start:
                applied = await migrate(conn)  # MigrationError is fatal: it ends the task
                if applied:
                    log.info(
                        "migrations applied",
                        extra={"versions": [f"{m.version:04d}_{m.name}" for m in applied]},
                    )
                await set_role_passwords(
                    conn,
                    _secret(self._sink.writer_password),
                    _secret(self._sink.reader_password),
                    _secret(self._sink.api_password),
                )
            if self._registry is not None:
                synced = await sync_registry(conn, self._registry)
                log.info(
                    "sites and sensors tables synced with the registry",
                    extra={"sites_changed": synced.sites, "sensors_changed": synced.sensors},
                )
            try:
                report = await apply_policies(conn, self._sink)
            except psycopg.errors.InsufficientPrivilege as exc:
                log.warning("cannot set retention/compression policies", extra={"error": str(exc)})
        finally:
            await conn.close()
        self._prepared = True
        self._prepared_event.set()
        metrics.READY.set(1)
        if report is not None and not report.retention_by_jobs and self._maintenance is None:
            self._maintenance = self._lifecycle.spawn(
                self._retention_loop(), name="sink-retention", finite=True
            )

    async def _position(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        assert self._pool is not None
        async with self._lock:
            assignment = consumer.assignment()
            self._unpositioned &= assignment
            partitions = sorted(self._unpositioned)
            if not partitions:
                return
            async with self._pool.connection(timeout=5) as conn:
                stored = await load_offsets(
                    conn, self._sink.group_id, [(tp.topic, tp.partition) for tp in partitions]
                )
            for tp in partitions:
                offset = stored.get((tp.topic, tp.partition))
                if offset is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, offset)
                    # Checked against the partition's high watermark once a fetch reports it
                    # (ListOffsets is not used: Tansu answers it with the last batch's base).
                    self._unverified.add(tp)
                self._positions[tp] = offset or 0
                self._unpositioned.discard(tp)
            stored_count = sum(1 for tp in partitions if (tp.topic, tp.partition) in stored)
            log.info(
                "partitions positioned at the stored offsets",
                extra={
                    "partitions": len(partitions),
                    "from_stored": stored_count,
                    "from_beginning": len(partitions) - stored_count,
                },
            )

    async def _verify_positions(self) -> None:
        """A stored offset beyond the partition's high watermark: the broker lost its data (the
        in-memory embedded broker restarted empty); docs/architecture.md#delivery-guarantees, rule 5
        says warn and start over."""
        consumer = self._consumer
        assert consumer is not None
        beyond: set[TopicPartition] = set()
        for tp in list(self._unverified):
            if tp not in consumer.assignment():
                self._unverified.discard(tp)
                continue
            end = consumer.highwater(tp)
            if end is None:
                continue  # no fetch answered yet
            self._unverified.discard(tp)
            if self._positions.get(tp, 0) > end:
                beyond.add(tp)
        if beyond:
            await self._restart_from_beginning(beyond)

    async def _restart_from_beginning(self, partitions: set[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        assert self._pool is not None
        partitions &= consumer.assignment()
        if not partitions:
            return
        async with self._lock:
            for tp in sorted(partitions):
                log.warning(
                    "stored offset beyond the end of its partition (the broker lost its data?) "
                    "or before its start; reading the partition from the beginning",
                    extra={
                        "partition": str(tp),
                        "stored": self._positions.get(tp),
                        "end": consumer.highwater(tp),
                    },
                )
                self._buffer = self._buffer.without({tp})
                if self._pending is not None:
                    self._pending = self._pending.without({tp})
                await consumer.seek_to_beginning(tp)
                self._positions[tp] = 0
                self._unverified.discard(tp)
            # Store the reset at once so the next start does not warn again; if the database is
            # away now, the next batch of these partitions stores it anyway.
            reset = {(tp.topic, tp.partition): 0 for tp in partitions}
            try:
                async with self._pool.connection(timeout=5) as conn:
                    await store_offsets(conn, self._sink.group_id, reset)
            except (*_TRANSIENT, psycopg.Error) as exc:
                log.info("offset reset not stored yet", extra={"error": _describe(exc)})

    async def _flush(self) -> None:
        """Write the pending batch with its offsets; it is cleared only on commit.

        Records the database rejects are dead-lettered and the batch is written again without
        them, at once (at most ``_MAX_REJECTION_ROUNDS`` times, then as a transient failure).
        """
        assert self._pool is not None
        async with self._lock:
            batch = self._pending
            if batch is None or not batch.count:
                self._pending = None
                return
            started = time.perf_counter()
            offsets = batch.offsets()
            for _round in range(_MAX_REJECTION_ROUNDS):
                await self._send_dead_letters(batch.dead)
                entries, tables = self._surviving(batch)
                try:
                    async with self._pool.connection(timeout=5) as conn:
                        written = await write_rows(conn, tables)
                        await store_offsets(conn, self._sink.group_id, offsets)
                        commit_started = time.perf_counter()
                        await conn.commit()
                        metrics.COMMIT_DURATION.observe(time.perf_counter() - commit_started)
                        observe_committed_rows(tables, written, time.time())
                    break
                except psycopg.Error as exc:
                    if not is_poison(exc):
                        raise
                    if not await self._reject(entries, exc):
                        raise _TransientError(f"rejected batch not narrowed down: {exc}") from exc
            else:
                raise _TransientError("too many rounds of rejected records")
            for table, count in written.items():
                metrics.ROWS_WRITTEN.labels(table).inc(count)
            for tp, records in batch.records.items():
                metrics.RECORDS_CONSUMED.labels(tp.topic).inc(len(records))
                self._positions[tp] = records[-1].offset + 1
            metrics.BATCH_RECORDS.observe(batch.count)
            metrics.BATCH_DURATION.observe(time.perf_counter() - started)
            self._pending = None
            self._excluded.clear()
            self._dead_sent.clear()
        self._update_lag()
        await self._commit_to_kafka(offsets)

    def _surviving(self, batch: _Batch) -> tuple[list[_Entry], dict[str, list[Row]]]:
        """The entries of ``batch`` not dead-lettered yet, and their rows per table."""
        excluded = self._excluded
        if not excluded:
            return batch.entries, batch.rows.tables()
        entries = [e for e in batch.entries if (e.topic, e.partition, e.offset) not in excluded]
        rows = Rows()
        for entry in entries:
            add_record(rows, entry.schema, entry.record)
        return entries, rows.tables()

    async def _reject(self, entries: Sequence[_Entry], error: psycopg.Error) -> bool:
        """Find the records the database rejects, dead-letter them and exclude them from the
        batch; False when bisection finds none (the error then counts as transient)."""
        assert self._pool is not None
        rejected: list[tuple[_Entry, psycopg.Error]] = []
        async with (
            self._pool.connection(timeout=5) as conn,
            conn.transaction(force_rollback=True),
        ):
            await self._bisect(conn, list(entries), rejected)
        if not rejected:
            log.warning("a rejected batch could not be narrowed down", extra={"error": str(error)})
            return False
        dead = [
            _DeadLetter(
                e.topic,
                e.partition,
                e.offset,
                e.key,
                e.value,
                exc,
                "rejected_by_database",
                *record_labels(e.schema, e.record),
            )
            for e, exc in rejected
        ]
        await self._send_dead_letters(dead)
        return True

    async def _bisect(
        self,
        conn: psycopg.AsyncConnection[Any],
        group: list[_Entry],
        rejected: list[tuple[_Entry, psycopg.Error]],
    ) -> None:
        rows = Rows()
        for entry in group:
            add_record(rows, entry.schema, entry.record)
        try:
            async with conn.transaction():
                await write_rows(conn, rows.tables(), clear_staging=True)
        except psycopg.Error as exc:
            if not is_poison(exc):
                raise
            if len(group) == 1:
                rejected.append((group[0], exc))
                return
            middle = len(group) // 2
            await self._bisect(conn, group[:middle], rejected)
            await self._bisect(conn, group[middle:], rejected)

    async def _send_dead_letters(self, dead: Sequence[_DeadLetter]) -> None:
        todo = [d for d in dead if (d.topic, d.partition, d.offset) not in self._dead_sent]
        if not todo:
            return
        assert self._producer is not None
        now = datetime.now(UTC)
        sends = []
        for d in todo:
            value = encode(
                "DeadLetter",
                {
                    "original_topic": d.topic,
                    "payload": d.value,
                    "error_class": type(d.error).__name__,
                    "error_message": str(d.error),
                    "reason": d.reason,
                    "codec": d.codec,
                    "received_at": now,
                    "sensor_id": d.sensor_id,
                },
            )
            sends.append(await self._producer.send(self._sink.dead_letter_topic, value, key=d.key))
        try:
            await asyncio.gather(*sends)
        except KafkaError as exc:
            raise _TransientError(f"dead-letter topic unavailable: {exc}") from exc
        for d in todo:
            self._dead_sent.add((d.topic, d.partition, d.offset))
            self._excluded.add((d.topic, d.partition, d.offset))
            metrics.DEAD_LETTERS.labels(d.reason).inc()
            log.warning(
                "record dead-lettered",
                extra={
                    "topic": d.topic,
                    "partition": d.partition,
                    "offset": d.offset,
                    "reason": d.reason,
                    "error": str(d.error)[:500],
                },
            )

    def _update_lag(self) -> None:
        """``citysense_sink_consumer_lag_records`` per topic (:mod:`citysense.consumer_lag`)."""
        if self._consumer is not None:
            self._lag_gauge.update(topic_lag(self._consumer, self._positions))

    async def _commit_to_kafka(self, offsets: dict[tuple[str, int], int]) -> None:
        """Informative group commit (tools show the group's progress); errors are ignored."""
        consumer = self._consumer
        now = time.monotonic()
        if consumer is None or now - self._last_kafka_commit < self._sink.kafka_commit_interval_s:
            return
        self._last_kafka_commit = now
        assigned = consumer.assignment()
        commit = {
            TopicPartition(t, p): o
            for (t, p), o in offsets.items()
            if TopicPartition(t, p) in assigned
        }
        if commit:
            with contextlib.suppress(KafkaError, AssertionError, TimeoutError):
                await asyncio.wait_for(consumer.commit(commit), 5)

    async def _retention_loop(self) -> None:
        """Apache-licence retention: ``drop_chunks`` every ``maintenance_interval_s``."""
        if self._sink.raw_retention_days is None and self._sink.aggregate_retention_days is None:
            return
        while True:
            try:
                conn = await connect_database(self._settings.database, autocommit=True)
                try:
                    dropped = await drop_old_chunks(conn, self._sink)
                finally:
                    await conn.close()
                if dropped:
                    log.info("old chunks dropped", extra={"chunks": dropped})
            except psycopg.Error as exc:
                log.warning("retention run failed", extra={"error": _describe(exc)})
            await asyncio.sleep(self._sink.maintenance_interval_s)


def _partitions_extra(partitions: set[TopicPartition]) -> dict[str, object]:
    """Log fields for a set of partitions: counts, and the ranges only at DEBUG (a sink reads
    dozens of partitions; one line must not list them all)."""
    extra: dict[str, object] = {
        "partitions": len(partitions),
        "topics": len({tp.topic for tp in partitions}),
    }
    if log.isEnabledFor(logging.DEBUG):
        extra["ranges"] = partition_summary((tp.topic, tp.partition) for tp in partitions)
    return extra


def _transient_db_error(exc: psycopg.Error) -> bool:
    return isinstance(exc, psycopg.OperationalError | psycopg.errors.ReadOnlySqlTransaction)


def _describe(exc: BaseException) -> str:
    # psycopg's messages name host, port and user, never the password.
    return f"{type(exc).__name__}: {str(exc).strip()[:300]}"


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())
