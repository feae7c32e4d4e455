"""The rollup stage's runner: per-sensor aggregate topics → per-site and daily windows.

The logic is :class:`streams._rollup.RollupStage` (pure); this module adapts it to the service's
consumer, checkpoint and send rules (:mod:`streams._service`). Records read again after a restart
(before the checkpoint's position) rebuild the windows; late inputs among them were reported
before and are not reported again. Windows rebuilt this way are sent again with the same content
and revision (the inputs' total sample count), which consumers and the sink treat as a repeat.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import Any

from aiokafka import TopicPartition

from schemas import aggregate_topic
from schemas._aggregate_codec import decode_aggregate as _decode_aggregate
from streams import _metrics as metrics
from streams._rollup import LateInput, RollupStage
from streams._service import AggregateService, _StageRunner, decode_aggregate

__all__ = ["RollupRunner"]


class RollupRunner(_StageRunner):
    def __init__(self, service: AggregateService) -> None:
        settings = service.settings.aggregate
        super().__init__(service, "rollup", settings.rollup_group_id)
        if service.registry is None:
            raise ValueError("the rollup stage (site and daily windows) needs the sensor registry")
        self.stage = RollupStage(settings, service.registry, kinds=settings.kinds)
        self.kind_of = {aggregate_topic(kind): kind for kind in settings.kinds}
        self._late: list[LateInput] = []

    def topics(self) -> list[str]:
        return list(self.kind_of)

    def assign(self, tp: TopicPartition, now_s: float) -> None:
        self.stage.assign(tp, now_s)

    def revoke(self, tp: TopicPartition) -> None:
        self.stage.revoke(tp)

    def busy(self, tp: TopicPartition, now_s: float) -> None:
        self.stage.busy(tp, now_s)

    def watermark(self, now_s: float) -> int:
        return self.stage.watermark(now_s)

    def restore_watermark(self, watermark: int) -> None:
        self.stage.restore_watermark(watermark)

    def needed(self) -> dict[Hashable, int]:
        return {
            tp: offset
            for tp, offset in self.stage.needed_offsets().items()
            if isinstance(tp, TopicPartition)
        }

    async def handle(self, tp: TopicPartition, records: Sequence[Any], now_s: float) -> None:
        metrics.RECORDS.labels(tp.topic).inc(len(records))
        replayed, fresh, _watermark = self.split_replay(tp, records)
        if replayed:
            self._late += self.stage.late()
            for record in replayed:
                aggregate = decode_aggregate(record.value) if record.value else None
                if aggregate is not None:
                    self.stage.fold(tp, record.offset, aggregate, now_s)
            self.stage.late()  # reported before the restart
        fold = self.stage.fold
        for record in fresh:
            value = record.value
            # The codec's own function: this loop runs once per sensor and window.
            aggregate = _decode_aggregate(value) if value else None
            if aggregate is None:
                await self.service.dead_letter(tp.topic, record, "not an Aggregate record")
                continue
            fold(tp, record.offset, aggregate, now_s)

    async def emit(self, now_s: float) -> None:
        by_kind: dict[str, list[dict[str, Any]]] = {}
        results = self.stage.advance(now_s)
        self.emitted_watermark = self.stage.watermark(now_s)
        for result in results:
            by_kind.setdefault(result["kind"], []).append(result)
        for kind, batch in by_kind.items():
            await self.service.send_results(kind, batch, now_s)
        late, self._late = [*self._late, *self.stage.late()], []
        for item in late:
            # Results, not measurements: counted (the per-sensor result is on its topic).
            metrics.LATE_RECORDS.labels(item.kind, item.reason).inc()
        watermark = self.stage.watermark(now_s)
        if watermark > 0:
            metrics.WATERMARK_DELAY.labels("rollup", "all").set(time.time() - watermark / 1e6)
