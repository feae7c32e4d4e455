"""The aggregator service: consumer-group stages around the pure window and rollup logic.

The stages run in one process (``citysense aggregate``, also part of ``citysense run``):

- the **window stage** (group ``aggregate.group_id``) reads ``city.<kind>.measurements.v1``,
  folds each polled partition batch into :class:`streams._stage.WindowStage` as numpy columns
  (:func:`streams._columns.extract`) and sends per-sensor window results to
  ``city.<kind>.aggregates.v1`` (key = sensor id), late records to ``city.late.v1`` and records it
  cannot read to the dead-letter topic. Several processes share the partitions.
- the **grid stage** (group ``aggregate.grid.group_id``, :mod:`streams._grid_runner`) reads the
  air measurements again and pools mobile sensors' PM2.5 per cell of the European statistical
  grid, on ``city.air.cells.v1``; one member holds every partition, as for the rollup stage.
- the **rollup stage** (group ``aggregate.rollup_group_id``) reads the per-sensor results back and
  computes per-site and daily windows (:class:`streams._rollup.RollupStage`). Its input is small
  (one record per sensor and window), and a site's sensors sit in different partitions, so one
  member of its group holds every partition (:class:`AllToOneAssignor`); another member takes
  over when it leaves.

Delivery (docs/architecture.md#delivery-guarantees, rules 3 and 4): results, late records and dead
letters are acknowledged by Kafka before any offset is committed. Each stage commits, per partition,
the lowest offset its kept windows still need, with the stage's watermark and read position as the
commit's metadata. After a restart or a rebalance the partition is read again from that offset:
records before the stored position rebuild state only (windows that had closed are not emitted
twice, nothing is reported late twice), records after it are new. Outputs are deterministic, so a
window emitted again after a crash between sending and committing is an identical record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.partitioner import murmur2

from citysense.clients import ensure_topics, kafka_consumer, kafka_producer
from citysense.consumer_lag import TopicLagGauge, topic_lag
from citysense.registry import Registry
from citysense.runtime import Lifecycle
from citysense.settings import Settings
from schemas import aggregate_topic, encode, measurement_topic
from schemas._aggregate_codec import decode_aggregate as _decode_aggregate
from schemas._aggregate_codec import encode_aggregate
from streams import _metrics as metrics
from streams._columns import Columns, extract, extract_parts
from streams._stage import LateItem, WindowStage, registry_facts

__all__ = ["AggregateService", "AllToOneAssignor"]

log = logging.getLogger("citysense.aggregate")

_POLL_MS = 200
_COMMIT_TIMEOUT_S = 10.0


class AllToOneAssignor(AbstractPartitionAssignor):  # type: ignore[misc]  # aiokafka is untyped
    """Every partition of every subscribed topic to one member (the first by member id).

    The rollup stage needs all of a site's sensors, which are spread over partitions; its input
    is small, so one active member is enough, and the group still gives fail-over.
    """

    name = "citysense-all-to-one"
    version = 0

    @classmethod
    def assign(
        cls, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({t for m in members.values() for t in m.subscription})
        chosen = min(members)
        assignment: dict[str, ConsumerProtocolMemberAssignment] = {}
        for member in members:
            owned = (
                [(t, sorted(cluster.partitions_for_topic(t) or ())) for t in topics]
                if member == chosen
                else []
            )
            assignment[member] = ConsumerProtocolMemberAssignment(cls.version, owned, b"")
        return assignment

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass


@dataclass(slots=True)
class _Resume:
    """What the last commit said about a partition: read up to ``position`` at ``watermark``."""

    position: int
    watermark: int


class _SideGroup:
    """A consumer group used only to keep one number per partition as its committed offset.

    Why: the restart rule needs, per partition, the read position and the watermark of the last
    commit besides the offset the windows need. Kafka's commit metadata would hold them, but the
    embedded broker (Tansu) answers OffsetFetch with empty metadata; every Kafka-protocol broker
    stores a group's committed offsets, and a group with no members accepts any value. So the
    stage keeps them in two side groups, ``<group>.position`` and ``<group>.watermark``,
    committed before the stage's own group (see :meth:`_StageRunner.commit` for why that order).
    """

    def __init__(self, service: AggregateService, group_id: str) -> None:
        self.group_id = group_id
        self._service = service
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = kafka_consumer(self._service.settings.kafka, group_id=self.group_id)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()

    async def commit(self, values: Mapping[TopicPartition, int]) -> None:
        consumer = self._consumer
        assert consumer is not None
        if set(values) - consumer.assignment():
            partitions = sorted(set(values) | consumer.assignment())
            consumer.assign(partitions)
            consumer.pause(*partitions)  # it commits, it never fetches
        await asyncio.wait_for(consumer.commit(dict(values)), _COMMIT_TIMEOUT_S)

    async def read(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        stored = await self._service.admin().list_consumer_group_offsets(
            self.group_id, partitions=sorted(partitions)
        )
        return {tp: meta.offset for tp, meta in stored.items() if meta.offset >= 0}


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka calls these from its coordinator task, which runs beside the runner's loop: each
    waits for the loop's round in progress to end (:attr:`_StageRunner.round_lock`), so a
    revocation never commits a read position ahead of the watermark its records were judged at,
    nor frees state that a round is still folding into."""

    def __init__(self, runner: _StageRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._runner.round_lock:
            self._runner.rebalances += 1
            await self._runner.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._runner.round_lock:
            await self._runner.assigned(assigned)


class _StageRunner:
    """A consumer, its stage logic, and the commit rule shared by both stages."""

    def __init__(self, service: AggregateService, name: str, group_id: str) -> None:
        self.service = service
        self.name = name
        self.group_id = group_id
        self.consumer: AIOKafkaConsumer | None = None
        self.side_position = _SideGroup(service, f"{group_id}.position")
        self.side_watermark = _SideGroup(service, f"{group_id}.watermark")
        self.resume: dict[TopicPartition, _Resume] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.lag_gauge = TopicLagGauge(metrics.CONSUMER_LAG, name)
        #: The watermark of the last emit: every window due by it has been sent. The checkpoint
        #: stores this one, not the current watermark, which an idle partition may have moved
        #: on since (a restart would then take windows never sent for sent ones).
        self.emitted_watermark = 0
        self.last_commit = 0.0
        #: Held by each round of :meth:`run` from the records handed out to the commit, and by
        #: the rebalance callbacks (:class:`_Rebalance`): a round and a rebalance never overlap.
        self.round_lock = asyncio.Lock()
        #: Revocations so far: a poll that a revocation overtook is not handled (see run).
        self.rebalances = 0

    # Overridden by the two stages.
    def topics(self) -> list[str]:
        raise NotImplementedError

    def assign(self, tp: TopicPartition, now_s: float) -> None:
        raise NotImplementedError

    def revoke(self, tp: TopicPartition) -> None:
        raise NotImplementedError

    def watermark(self, now_s: float) -> int:
        raise NotImplementedError

    def restore_watermark(self, watermark: int) -> None:
        raise NotImplementedError

    def needed(self) -> dict[Hashable, int]:
        raise NotImplementedError

    async def handle(self, tp: TopicPartition, records: Sequence[Any], now_s: float) -> None:
        raise NotImplementedError

    async def emit(self, now_s: float) -> None:
        raise NotImplementedError

    def busy(self, tp: TopicPartition, now_s: float) -> None:
        """``tp`` has records left to read: not idle."""
        raise NotImplementedError

    # Shared.
    def build(self, **overrides: Any) -> AIOKafkaConsumer:
        settings = self.service.settings
        aggregate = settings.aggregate
        consumer = kafka_consumer(
            settings.kafka,
            group_id=self.group_id,
            session_timeout_ms=aggregate.session_timeout_ms,
            heartbeat_interval_ms=aggregate.heartbeat_interval_ms,
            max_poll_records=aggregate.max_poll_records,
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
            **overrides,
        )
        consumer.subscribe(self.topics(), listener=_Rebalance(self))
        self.consumer = consumer
        return consumer

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        now = time.monotonic()
        positions: dict[TopicPartition, int] = {}
        watermarks: dict[TopicPartition, int] = {}
        if assigned:
            try:
                positions = await self.side_position.read(assigned)
                watermarks = await self.side_watermark.read(assigned)
            except KafkaError as exc:
                log.warning(
                    "cannot read the last checkpoint; windows closed before the restart may be "
                    "emitted again",
                    extra={"runner": self.name, "error": str(exc)},
                )
        resumed = []
        for tp in assigned:
            self.assign(tp, now)
            if tp in positions and tp in watermarks:
                self.resume[tp] = _Resume(positions[tp], watermarks[tp])
                resumed.append(watermarks[tp])
        if resumed:
            self.restore({tp: r.watermark for tp, r in self.resume.items() if tp in assigned})
        log.info(
            "partitions assigned",
            extra={
                "runner": self.name,
                "partitions": len(assigned),
                "resumed": len(resumed),
                "watermark": min(resumed, default=None),
                # Per topic (the window stage's kinds restore their own): the lowest stored.
                "watermarks": {
                    topic: min(r.watermark for tp, r in self.resume.items() if tp.topic == topic)
                    for topic in {tp.topic for tp in self.resume}
                },
            },
        )

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        # Results of what was folded are sent by the loop before each commit; commit what the
        # kept state needs so the next owner replays the least.
        with contextlib.suppress(KafkaError, TimeoutError, AssertionError):
            await self.commit(force=True)
        for tp in revoked:
            self.revoke(tp)
            self.resume.pop(tp, None)
            self.positions.pop(tp, None)

    def restore(self, watermarks: dict[TopicPartition, int]) -> None:
        """Start from the watermarks the last checkpoint stored for the resumed partitions."""
        self.restore_watermark(min(watermarks.values()))
        self.emitted_watermark = max(self.emitted_watermark, min(watermarks.values()))

    def checkpoint_watermark(self, tp: TopicPartition) -> int:
        """The watermark stored with ``tp``'s checkpoint: every record read from it before the
        stored position was judged at or below it, and every window due by it was sent."""
        return self.emitted_watermark

    def split_replay(
        self, tp: TopicPartition, records: Sequence[Any]
    ) -> tuple[Sequence[Any], Sequence[Any], int | None]:
        """(records read before the restart, new records, the watermark they were read at)."""
        resume = self.resume.get(tp)
        if resume is None:
            return (), records, None
        if records[-1].offset + 1 >= resume.position:
            del self.resume[tp]
        cut = 0
        while cut < len(records) and records[cut].offset < resume.position:
            cut += 1
        return records[:cut], records[cut:], resume.watermark

    async def handle_poll(
        self, batches: Mapping[TopicPartition, Sequence[Any]], now_s: float
    ) -> None:
        """One poll's batches, partition by partition, in the poll's order."""
        for tp, records in batches.items():
            if records:
                await self.handle(tp, records, now_s)
                self.positions[tp] = records[-1].offset + 1

    def update_lag(self, consumer: AIOKafkaConsumer) -> None:
        """``citysense_aggregate_consumer_lag_records`` per topic (:mod:`citysense.consumer_lag`):
        what the autoscaler and the lag panel read; a topic no longer held is no longer
        reported."""
        self.lag_gauge.update(topic_lag(consumer, self.positions))

    async def commit(self, *, force: bool = False) -> None:
        """Commit, per partition, the lowest offset kept windows need.

        The side groups (position, watermark) are committed first: after a crash between the
        two, a restart replays from an older offset with the newer checkpoint, which only skips
        records of windows that checkpoint had already emitted. The other order could rebuild a
        window from part of its records and send it again.
        """
        consumer = self.consumer
        now = time.monotonic()
        if consumer is None:
            return
        if not force and now - self.last_commit < self.service.settings.aggregate.commit_interval_s:
            return
        self.last_commit = now
        # Nothing is committed past a result Kafka has not acknowledged (delivery rule 4): every
        # result sent so far, this runner's and the others', is acknowledged first.
        await self.service.flush()
        needed = self.needed()
        watermark = max(0, self.emitted_watermark)
        offsets: dict[TopicPartition, int] = {}
        positions: dict[TopicPartition, int] = {}
        for tp in consumer.assignment():
            position = self.positions.get(tp)
            if position is None or tp in self.resume:
                # Nothing read yet, or still replaying what the last checkpoint covered (the
                # state it needs is not rebuilt yet): that checkpoint stands.
                continue
            positions[tp] = position
            offsets[tp] = min(int(needed.get(tp, position)), position)
        if not offsets:
            return
        await self.side_position.commit(positions)
        await self.side_watermark.commit(
            {tp: max(0, self.checkpoint_watermark(tp)) for tp in positions}
        )
        await asyncio.wait_for(consumer.commit(offsets), _COMMIT_TIMEOUT_S)
        log.debug(
            "checkpoint committed",
            extra={"runner": self.name, "watermark": watermark, "partitions": len(offsets)},
        )

    async def mark_busy(self, consumer: AIOKafkaConsumer, now_s: float) -> None:
        """Partitions the consumer is behind on are not idle (see :mod:`streams._watermark`):
        their end offset, from the last fetch, is beyond the next offset to read.

        Called right after each poll, before the polled records are judged, with that poll's
        clock reading: a partition whose records are already fetched but not yet handed out
        (``getmany`` hands out at most ``max_poll_records``) is not idle, however long this
        loop was kept from polling (a slow flush, a busy process). Judged with the clock of the
        previous round, such a partition looked idle after one slow round, the others moved
        the watermark past its records, and they all went to the late topic."""
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:  # no fetch answered yet
                self.busy(tp, now_s)
                continue
            position = self.positions.get(tp)
            if position is None:
                # Nothing handed out in this process yet: the consumer's own position (known
                # without a request once a fetch has answered, as ``end`` shows).
                try:
                    position = await consumer.position(tp)
                except IllegalStateError:  # revoked meanwhile by a rebalance
                    continue
            if position < end:
                self.busy(tp, now_s)

    async def run(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        service = self.service
        interval_s = service.settings.aggregate.poll_interval_ms / 1000
        polled_at = -interval_s
        while not service.stopping.is_set():
            if interval_s:
                wait_s = polled_at + interval_s - time.monotonic()
                if wait_s > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(service.stopping.wait(), wait_s)
                    if service.stopping.is_set():
                        break
                polled_at = time.monotonic()
            rebalances = self.rebalances
            batches = await consumer.getmany(
                timeout_ms=_POLL_MS, max_records=service.settings.aggregate.max_poll_records
            )
            async with self.round_lock:
                if self.rebalances != rebalances:
                    # Fetched before a revocation: not handled. The partitions' next owner
                    # (this process too) reads them again from the checkpoint the revocation
                    # committed, which did not cover them.
                    batches = {}
                await self._round(consumer, batches)
        async with self.round_lock:
            await self.drain()

    async def _round(
        self, consumer: AIOKafkaConsumer, batches: Mapping[TopicPartition, Sequence[Any]]
    ) -> None:
        """One poll's records handled, what is due emitted, and a commit if one is due."""
        service = self.service
        now = time.monotonic()
        await self.mark_busy(consumer, now)
        await self.handle_poll(batches, now)
        await self.mark_busy(consumer, time.monotonic())
        await self.emit(time.monotonic())
        self.update_lag(consumer)
        # The acknowledgements are awaited by the commit (every commit_interval_s), not every
        # round: waiting for Kafka each round left the process idle for a round trip per
        # poll. Sends Kafka failed are sent again at once, as before.
        if service.reap():
            await service.flush()
        await self.try_commit()

    async def drain(self) -> None:
        """At stop: send what is due, wait for Kafka's acks, commit; within half the shutdown
        deadline, so the consumers still leave their groups before it.

        Kafka gone, :meth:`AggregateService.flush` would resend forever and each commit wait
        ``_COMMIT_TIMEOUT_S``: the stop would run over the deadline. Given up, nothing is lost:
        no commit covers a result Kafka did not acknowledge, and the next start replays from
        the last commit into the same results.
        """
        budget_s = self.service.settings.shutdown_deadline_s / 2
        try:
            async with asyncio.timeout(budget_s):
                await self.emit(time.monotonic())
                await self.service.flush()
                await self.try_commit(force=True)
        except TimeoutError:
            log.warning(
                "kafka did not take the last results or checkpoint before the deadline; the "
                "next start replays from the last checkpoint",
                extra={"runner": self.name, "budget_s": budget_s},
            )

    async def try_commit(self, *, force: bool = False) -> None:
        """Commit; a commit Kafka does not take (it is away) is only logged: every result is
        already acknowledged, so the next commit covers it, and a restart before that replays
        into identical results."""
        try:
            await self.commit(force=force)
        except (KafkaError, TimeoutError) as exc:
            log.warning(
                "checkpoint not committed; the next one covers it",
                extra={"runner": self.name, "error": repr(exc)},
            )


class _WindowRunner(_StageRunner):
    def __init__(self, service: AggregateService) -> None:
        settings = service.settings
        super().__init__(service, "window", settings.aggregate.group_id)
        facts = registry_facts(service.registry)
        self.stages: dict[str, WindowStage] = {
            kind: WindowStage(kind, settings.aggregate, facts) for kind in settings.aggregate.kinds
        }
        self.kind_of = {measurement_topic(kind): kind for kind in self.stages}
        #: Digests of the last records' idempotency keys, to drop ingest's duplicates, each
        #: with the offset of the record that carried it first.
        self._recent: dict[int, int] = {}
        self._recent_ring: deque[int] = deque(maxlen=_DUPLICATE_WINDOW)
        #: Per kind, the watermark of its last emit. A partition's checkpoint stores its own
        #: kind's: its records were judged late or on time against that kind's watermark. The
        #: minimum over the kinds (below it when another kind lags, 0 while a kind has no
        #: record yet) made a replay fold records the stage had sent to the late topic, and
        #: send their windows again with one record more (the fault suite's recomputation).
        self._emitted: dict[str, int] = {}

    def topics(self) -> list[str]:
        return list(self.kind_of)

    def assign(self, tp: TopicPartition, now_s: float) -> None:
        self.stages[self.kind_of[tp.topic]].assign(tp, now_s)

    def revoke(self, tp: TopicPartition) -> None:
        self.stages[self.kind_of[tp.topic]].revoke(tp)

    def busy(self, tp: TopicPartition, now_s: float) -> None:
        self.stages[self.kind_of[tp.topic]].watermarks.busy(tp, now_s)

    def watermark(self, now_s: float) -> int:
        return min(stage.watermarks.current(now_s) for stage in self.stages.values())

    def restore_watermark(self, watermark: int) -> None:
        for stage in self.stages.values():
            stage.watermarks.restore(watermark)

    def restore(self, watermarks: dict[TopicPartition, int]) -> None:
        """Each kind starts from the lowest watermark its resumed partitions stored."""
        by_topic: dict[str, int] = {}
        for tp, watermark in watermarks.items():
            by_topic[tp.topic] = min(watermark, by_topic.get(tp.topic, watermark))
        for topic, watermark in by_topic.items():
            kind = self.kind_of[topic]
            self.stages[kind].watermarks.restore(watermark)
            self._emitted[kind] = max(watermark, self._emitted.get(kind, watermark))
        self.emitted_watermark = max(self.emitted_watermark, min(by_topic.values()))

    def checkpoint_watermark(self, tp: TopicPartition) -> int:
        return self._emitted.get(self.kind_of[tp.topic], 0)

    def needed(self) -> dict[Hashable, int]:
        needed: dict[Hashable, int] = {}
        for stage in self.stages.values():
            needed.update(stage.needed_offsets())
        return needed

    def _unique(self, records: Sequence[Any]) -> Sequence[Any]:
        """``records`` less the copies of one seen among the last ``_DUPLICATE_WINDOW``, by
        their ``idempotency-key`` header: ingest is at-least-once (a message the MQTT broker
        redelivers, a record Kafka's producer sends again), and the sink's primary key keeps
        one row of each, so a window must count one too.

        A copy is a record at another offset than the first one with its key (a key's copies
        share the key's partition). The first one read again is no copy: after a rebalance in
        this process the partition is replayed from its checkpoint, and dropping those records
        rebuilt the windows without them (the fault suite's Kafka partition)."""
        recent, ring = self._recent, self._recent_ring
        # Per record, on every measurement: no generator per record, and no copy of the batch
        # unless something is dropped.
        kept: list[Any] | None = None
        for index, record in enumerate(records):
            headers = record.headers
            if headers:
                key = None
                for name, value in headers:
                    if name == "idempotency-key":
                        key = value
                        break
                if key is not None:
                    digest = hash(bytes(key))
                    first = recent.get(digest)
                    if first is None:
                        if len(ring) == ring.maxlen:
                            del recent[ring[0]]
                        ring.append(digest)
                        recent[digest] = record.offset
                    elif first != record.offset:
                        if kept is None:
                            kept = list(records[:index])
                        continue
            if kept is not None:
                kept.append(record)
        return records if kept is None else kept

    async def handle(self, tp: TopicPartition, records: Sequence[Any], now_s: float) -> None:
        kind = self.kind_of[tp.topic]
        stage = self.stages[kind]
        metrics.RECORDS.labels(tp.topic).inc(len(records))
        records = self._unique(records)
        if not records:
            return
        replayed, fresh, replay_watermark = self.split_replay(tp, records)
        if replayed:
            columns = extract(replayed, kind, stage.keys)
            stage.fold(tp, columns, now_s, replay_watermark=replay_watermark)
        if not fresh:
            return
        columns = extract(fresh, kind, stage.keys)
        for index, reason in columns.rejected:
            await self.service.dead_letter(tp.topic, fresh[index], reason)
        if len(columns):
            late = stage.fold(tp, columns, now_s)
            if late:
                await self.service.late(
                    kind, tp, fresh, columns, late, stage.watermarks.current(now_s)
                )

    async def handle_poll(
        self, batches: Mapping[TopicPartition, Sequence[Any]], now_s: float
    ) -> None:
        """One poll's batches, each kind's partitions folded together (:meth:`WindowStage.
        fold_parts`), with the same outcome as :meth:`handle` partition by partition: the same
        state, and the same records on each topic in the same order (dead letters, then late
        records, each in the poll's partition order, as the per-partition path sends them).

        While a partition is still replaying what the last checkpoint covered, the poll goes
        partition by partition (:meth:`handle`): a replayed batch is judged at its stored
        watermark, not the live one.
        """
        if self.resume:
            await super().handle_poll(batches, now_s)
            return
        service = self.service
        #: Per kind, its partitions' deduplicated batches, in the poll's order.
        parts: dict[str, list[tuple[TopicPartition, Sequence[Any]]]] = {}
        fresh: dict[TopicPartition, Sequence[Any]] = {}
        for tp, records in batches.items():
            if not records:
                continue
            self.positions[tp] = records[-1].offset + 1
            metrics.RECORDS.labels(tp.topic).inc(len(records))
            unique = self._unique(records)
            if unique:
                parts.setdefault(self.kind_of[tp.topic], []).append((tp, unique))
                fresh[tp] = unique
        if not parts:
            return
        extracted: dict[str, tuple[Columns, list[int]]] = {}
        rejected: dict[TopicPartition, list[tuple[int, str]]] = {}
        for kind, kind_parts in parts.items():
            columns, stops = extract_parts(
                [records for _, records in kind_parts], kind, self.stages[kind].keys
            )
            extracted[kind] = columns, stops
            if columns.rejected:
                starts = [0]
                for _, records in kind_parts:
                    starts.append(starts[-1] + len(records))
                part = 0
                for position, reason in columns.rejected:
                    while position >= starts[part + 1]:
                        part += 1
                    tp = kind_parts[part][0]
                    rejected.setdefault(tp, []).append((position - starts[part], reason))
        for tp in batches:
            for position, reason in rejected.get(tp, ()):
                await service.dead_letter(tp.topic, fresh[tp][position], reason)
        late: dict[TopicPartition, tuple[list[LateItem], int]] = {}
        for kind, kind_parts in parts.items():
            columns, stops = extracted[kind]
            outcome = self.stages[kind].fold_parts(
                [(tp, stop) for (tp, _), stop in zip(kind_parts, stops, strict=True)],
                columns,
                now_s,
            )
            for (tp, _), part_late in zip(kind_parts, outcome, strict=True):
                if part_late[0]:
                    late[tp] = part_late
        for tp in batches:
            if tp in late:
                kind = self.kind_of[tp.topic]
                items, watermark = late[tp]
                await service.late(kind, tp, fresh[tp], extracted[kind][0], items, watermark)

    async def emit(self, now_s: float) -> None:
        service = self.service
        wall = time.time()
        watermarks = []
        for kind, stage in self.stages.items():
            results = stage.advance(now_s)
            watermarks.append(stage.watermarks.current(now_s))
            await service.send_results(kind, results, now_s)
            self._emitted[kind] = watermarks[-1]
            for table in stage.tables:
                if table.revisions:
                    metrics.REVISIONS.labels(kind, table.window.name).inc(table.revisions)
                    table.revisions = 0
            watermark = stage.watermarks.current(now_s)
            if watermark > 0:
                metrics.WATERMARK_DELAY.labels("window", kind).set(wall - watermark / 1e6)
            for name, count in stage.open_windows().items():
                metrics.OPEN_WINDOWS.labels(kind, name).set(count)
        metrics.STATE_BYTES.set(sum(s.state_bytes() for s in self.stages.values()))
        self.emitted_watermark = min(watermarks)


@dataclass(slots=True)
class _Send:
    """Records on their way: the producer's future (one record's, or one batch's) and what to
    send again, in the same order, if Kafka fails it."""

    future: asyncio.Future[Any]
    due_at: float | None
    topic: str
    #: (key, value) of each record the future stands for.
    records: list[tuple[bytes | None, bytes]]
    #: The partition of a batch; None: one record, partitioned by the producer.
    partition: int | None = None
    #: When the future completed (monotonic), for the emit delay; None: not yet.
    done_at: float | None = None

    def __post_init__(self) -> None:
        self.future.add_done_callback(self._done)

    def _done(self, _future: asyncio.Future[Any]) -> None:
        self.done_at = time.monotonic()

    def observe_delay(self, now: float) -> None:
        """The emit delay of each result (due → acknowledged), one sample per result."""
        if self.due_at is not None:
            delay = (self.done_at if self.done_at is not None else now) - self.due_at
            for _ in self.records:
                metrics.EMIT_DELAY.observe(delay)


#: Measurement records remembered to recognise a duplicate (about 10 MB; 10 s at 10,000
#: records/s, longer than an MQTT reconnect's redelivery takes).
_DUPLICATE_WINDOW = 100_000

#: Keys whose partition is remembered per topic (sensors and sites: a bounded set).
_KEY_PARTITIONS_MAX = 100_000

#: Backoff between two attempts to send results Kafka did not acknowledge (s, doubling).
_RESEND_BACKOFF_S = (0.2, 5.0)


class AggregateService:
    """The aggregator; a :class:`citysense.runtime.Component`."""

    name = "aggregate"

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.stopping = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._runners: list[_StageRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: list[_Send] = []
        self._flushing = asyncio.Lock()
        #: Per topic, its partitions and the partition of each key seen (see _partition_of).
        self._partitions: dict[str, list[int]] = {}
        self._key_partitions: dict[str, dict[bytes, int]] = {}
        #: Kafka did not acknowledge some results: they are being sent again (not ready).
        self._resending = False
        #: Start steps and the two runners' tasks: one dying fails the stage.
        self._lifecycle = Lifecycle(self.name)
        self._started = False
        #: Started completely (a start that failed part way leaves it False).
        self._running = False
        self._stopped = False

    # --- Component ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        settings, aggregate = self.settings, self.settings.aggregate
        kinds = aggregate.kinds
        lifecycle = self._lifecycle
        log.info(
            "aggregator starting",
            extra={
                "kinds": list(kinds),
                "windows": [w.name for w in aggregate.windows],
                "group_id": aggregate.group_id,
            },
        )
        async with lifecycle.starting():
            await ensure_topics(
                settings.kafka,
                [
                    *(measurement_topic(k) for k in kinds),
                    *(aggregate_topic(k) for k in kinds),
                    aggregate.late_topic,
                    aggregate.dead_letter_topic,
                    *([aggregate.grid.topic] if aggregate.grid.enabled else []),
                ],
            )
            admin = self._admin = AIOKafkaAdminClient(**settings.kafka.client_options())
            lifecycle.started("kafka admin client", admin.close)
            await admin.start()
            producer = self._producer = kafka_producer(settings.kafka)
            lifecycle.started("kafka producer", producer.stop)
            await producer.start()
            window = _WindowRunner(self)
            self._runners.append(window)
            consumers = [window.build()]
            # Closed even if never started (aiokafka warns about an unclosed consumer).
            lifecycle.started("window consumer", consumers[0].stop)
            rollup = self._rollup_runner()
            if rollup is not None:
                self._runners.append(rollup)
                consumers.append(rollup.build(partition_assignment_strategy=(AllToOneAssignor,)))
                lifecycle.started("rollup consumer", consumers[-1].stop)
            grid = self._grid_runner()
            if grid is not None:
                self._runners.append(grid)
                consumers.append(grid.build(partition_assignment_strategy=(AllToOneAssignor,)))
                lifecycle.started("grid consumer", consumers[-1].stop)
            for runner in self._runners:
                for side in (runner.side_position, runner.side_watermark):
                    lifecycle.started(f"side group {side.group_id}", side.stop)
                    await side.start()
            for consumer in consumers:
                await consumer.start()
        for runner in self._runners:
            self._tasks.append(lifecycle.spawn(runner.run(), name=f"aggregate-{runner.name}"))
        self._running = True
        metrics.READY.set(1)

    def _rollup_runner(self) -> _StageRunner | None:
        aggregate = self.settings.aggregate
        sites = any("site" in w.scopes for w in aggregate.windows)
        if not (sites or aggregate.daily.enabled):
            return None
        from streams._rollup_runner import RollupRunner

        return RollupRunner(self)

    def _grid_runner(self) -> _StageRunner | None:
        aggregate = self.settings.aggregate
        if not (aggregate.grid.enabled and "air" in aggregate.kinds):
            return None
        from streams._grid_runner import GridRunner

        return GridRunner(self)

    async def stop(self) -> None:
        """Stop polling, send what is due, wait for the acks, commit, leave the groups."""
        if self._stopped:
            return
        self._stopped = True
        self._lifecycle.begin_stop()
        self.stopping.set()
        # A runner stuck on a Kafka that went away (a position or group request that is never
        # answered) is cancelled by close() below: the stop ends within the shutdown deadline.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.shutdown_deadline_s * 0.6)
        # Consumers leave their groups, then the side groups, the producer and the admin client.
        await self._lifecycle.close()
        metrics.READY.set(0)

    @property
    def failure(self) -> str | None:
        """Why the stage failed (a runner's task died), or None."""
        return self._lifecycle.failure

    def ready(self) -> bool:
        return (
            self._running
            and not self._stopped
            and not self._resending
            and not self._lifecycle.failed
        )

    async def wait_failed(self) -> None:
        await self._lifecycle.wait_failed()

    async def __aenter__(self) -> AggregateService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def admin(self) -> AIOKafkaAdminClient:
        assert self._admin is not None
        return self._admin

    # --- sending -----------------------------------------------------------------------------

    async def _send(
        self, topic: str, value: bytes, key: bytes | None, due_at: float | None
    ) -> None:
        assert self._producer is not None
        # send() returns once the record is in a batch (waiting only when the producer's buffer
        # is full); its future is done when Kafka acknowledged it, awaited in flush().
        try:
            future = await self._producer.send(topic, value, key=key)
        except KafkaError as exc:  # no metadata while Kafka is away: flush() sends it again
            future = _failed_future(exc)
        self._sends.append(_Send(future, due_at, topic, [(key, value)]))

    async def _partition_of(self, topic: str, key: bytes) -> int:
        """The partition aiokafka's default partitioner gives ``key`` (murmur2 of the key, as
        the Java client), cached per key: a city has a bounded set of sensors and sites."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            assert self._producer is not None
            partitions = sorted(await self._producer.partitions_for(topic))
            self._partitions[topic] = partitions
        keys = self._key_partitions.get(topic)
        if keys is None or len(keys) > _KEY_PARTITIONS_MAX:
            keys = self._key_partitions[topic] = {}
        partition: int = partitions[(int(murmur2(key)) & 0x7FFFFFFF) % len(partitions)]
        keys[key] = partition
        return partition

    async def _send_batches(
        self,
        topic: str,
        partition: int,
        records: list[tuple[bytes | None, bytes]],
        due_at: float | None,
    ) -> None:
        """Send ``records`` (key, value) to one partition in as few batches as they fit, in
        order, through aiokafka's public ``create_batch``/``send_batch``: one future per batch
        where ``send()`` made one per record (and looked the partition up each time)."""
        producer = self._producer
        assert producer is not None
        # One create time per batch, where aiokafka reads the clock per record.
        timestamp = int(time.time() * 1000)
        start = 0
        while start < len(records):
            builder = producer.create_batch()
            stop = start
            while stop < len(records):
                key, value = records[stop]
                if builder.append(key=key, value=value, timestamp=timestamp) is None:
                    break
                stop += 1
            # aiokafka takes any record into an empty batch (an oversized one alone).
            assert stop > start
            try:
                future = await producer.send_batch(builder, topic, partition=partition)
            except KafkaError as exc:  # Kafka is away: flush() sends them again
                future = _failed_future(exc)
            self._sends.append(_Send(future, due_at, topic, records[start:stop], partition))
            start = stop

    async def send(self, topic: str, value: bytes, key: bytes | None, due_at: float | None) -> None:
        """Send one record (a runner's result); Kafka's acknowledgement is awaited in
        :meth:`flush`. ``due_at``: the monotonic time it became due, for the emit delay."""
        await self._send(topic, value, key, due_at)

    async def send_results(
        self, kind: str, results: Sequence[Mapping[str, Any]], now_s: float
    ) -> None:
        topic = aggregate_topic(kind)
        window_names = {w.size_s: w.name for w in self.settings.aggregate.windows}
        emitted: dict[str, int] = {}
        sizes: dict[int, int] = {}
        # Per partition, in the results' order (a window's revisions stay in order).
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
        key_partitions = self._key_partitions.get(topic) or {}
        for result in results:
            key = result["key"].encode()
            partition = key_partitions.get(key)
            if partition is None:
                try:
                    partition = await self._partition_of(topic, key)
                except KafkaError:
                    # No metadata yet and Kafka away: sent alone, failed, and sent again by
                    # flush() as before batching.
                    await self._send(topic, encode_aggregate(result), key, now_s)
                    partition = -1
                key_partitions = self._key_partitions.get(topic) or {}
            if partition >= 0:
                pending = by_partition.get(partition)
                if pending is None:
                    pending = by_partition[partition] = []
                pending.append((key, encode_aggregate(result)))
            size = result["window_size_seconds"]
            sizes[size] = sizes.get(size, 0) + 1
        for partition, records in by_partition.items():
            await self._send_batches(topic, partition, records, now_s)
        # Counted per window size in the loop, named once per size here.
        for size, count in sizes.items():
            window = "daily" if size == 86_400 else window_names.get(size, str(size))
            emitted[window] = emitted.get(window, 0) + count
        for window, count in emitted.items():
            metrics.WINDOWS_EMITTED.labels(kind, window).inc(count)

    async def late(
        self,
        kind: str,
        tp: TopicPartition,
        records: Sequence[Any],
        columns: Any,
        late: Sequence[LateItem],
        watermark: int,
    ) -> None:
        now = datetime.now(UTC)
        # Rows of ``columns`` follow the records' order only on the fast path: find by offset.
        by_offset = {r.offset: r for r in records}
        for item in late:
            record = by_offset[int(columns.offset[item.index])]
            value = encode(
                "LateRecord",
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "offset": record.offset,
                    "key": record.key,
                    "value": record.value,
                    "observed_at": int(columns.time_us[item.index]),
                    "watermark": watermark,
                    "received_at": now,
                    "reason": item.reason,
                },
            )
            await self._send(self.settings.aggregate.late_topic, value, record.key, None)
            metrics.LATE_RECORDS.labels(kind, item.reason).inc()

    async def dead_letter(self, topic: str, record: Any, reason: str) -> None:
        value = encode(
            "DeadLetter",
            {
                "original_topic": topic,
                "payload": record.value or b"",
                "error_class": "AggregateInputError",
                "error_message": reason,
                "reason": "undecodable",
                "codec": None,
                "received_at": datetime.now(UTC),
                "sensor_id": None,
            },
        )
        await self._send(self.settings.aggregate.dead_letter_topic, value, record.key, None)
        metrics.DEAD_LETTERS.labels("undecodable").inc()
        log.warning(
            "record dead-lettered",
            extra={"topic": topic, "offset": record.offset, "reason": reason[:300]},
        )

    def reap(self) -> bool:
        """Forget the sends Kafka already acknowledged, without waiting; True when Kafka
        failed one (then :meth:`flush` should send it again now)."""
        sends = self._sends
        if not sends:
            return False
        now = time.monotonic()
        kept: list[_Send] = []
        failed = False
        for send in sends:
            future = send.future
            if not future.done() or future.cancelled():
                kept.append(send)
            elif future.exception() is not None:
                kept.append(send)
                failed = True
            else:
                send.observe_delay(now)
        self._sends = kept
        return failed

    async def flush(self) -> None:
        """Wait until Kafka acknowledged everything sent.

        A result Kafka did not take (it went away: a lost connection, a request timeout) is sent
        again, with a capped backoff, until it is acknowledged; meanwhile the stage reports not
        ready. The runners commit only after this returns, so nothing is committed past an
        unacknowledged result, and the stage outlives a Kafka outage instead of failing on it.

        One flush at a time: a runner's flush that found the list empty while another runner's
        flush still waited for sends taken from it would otherwise return (and let its runner
        commit) before those were acknowledged.
        """
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        backoff, backoff_max = _RESEND_BACKOFF_S
        while self._sends:
            sends, self._sends = self._sends, []
            outcomes = await asyncio.gather(*(s.future for s in sends), return_exceptions=True)
            acked = time.monotonic()
            failed: list[_Send] = []
            error: BaseException | None = None
            for send, outcome in zip(sends, outcomes, strict=True):
                if isinstance(outcome, KafkaError):
                    failed.append(send)
                    error = outcome
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    send.observe_delay(acked)
            if not failed:
                continue
            self._resending = True
            metrics.READY.set(0)
            log.warning(
                "kafka did not acknowledge results; sending them again",
                extra={
                    "results": sum(len(send.records) for send in failed),
                    "error": repr(error),
                    "retry_in_s": backoff,
                },
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, backoff_max)
            for send in failed:
                if send.partition is None:
                    for key, value in send.records:
                        await self._send(send.topic, value, key, send.due_at)
                else:
                    await self._send_batches(send.topic, send.partition, send.records, send.due_at)
        if self._resending:
            self._resending = False
            metrics.READY.set(1)
            log.info("kafka acknowledged the results again")


def decode_aggregate(value: bytes) -> dict[str, Any] | None:
    """An ``Aggregate`` record with its times as int µs; None for any other record."""
    return _decode_aggregate(value)


def _failed_future(exc: BaseException) -> asyncio.Future[Any]:
    """A future already failed with ``exc``: a send Kafka refused before taking it."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future
