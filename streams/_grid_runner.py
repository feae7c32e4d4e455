"""The grid stage's runner: the air measurement topic → PM2.5 per grid cell on the cells topic.

The logic is :class:`streams._grid_stage.GridStage` (pure); this module adapts it to the
service's consumer, checkpoint and send rules (:mod:`streams._service`), as the window stage's
runner does. A cell gathers vehicles from every partition, so the stage's group has one active
member holding them all (:class:`streams._service.AllToOneAssignor`), another taking over when
it leaves. Records the window stage dead-letters (undecodable) are skipped here, not sent twice.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from aiokafka import TopicPartition

from schemas import encode, measurement_topic
from streams import _metrics as metrics
from streams._columns import extract
from streams._grid_stage import GridStage
from streams._service import AggregateService, _StageRunner

__all__ = ["GridRunner"]


class GridRunner(_StageRunner):
    def __init__(self, service: AggregateService) -> None:
        aggregate = service.settings.aggregate
        super().__init__(service, "grid", aggregate.grid.group_id)
        registry = service.registry

        def mobile(sensor_id: str) -> bool:
            sensor = registry.get(sensor_id) if registry is not None else None
            return sensor is not None and sensor.mobile

        self.stage = GridStage(
            aggregate.grid, aggregate.out_of_orderness_s, aggregate.idle_timeout_s, mobile
        )
        self.topic = measurement_topic("air")

    def topics(self) -> list[str]:
        return [self.topic]

    def assign(self, tp: TopicPartition, now_s: float) -> None:
        self.stage.assign(tp, now_s)

    def revoke(self, tp: TopicPartition) -> None:
        self.stage.revoke(tp)

    def busy(self, tp: TopicPartition, now_s: float) -> None:
        self.stage.watermarks.busy(tp, now_s)

    def watermark(self, now_s: float) -> int:
        return self.stage.watermarks.current(now_s)

    def restore_watermark(self, watermark: int) -> None:
        self.stage.watermarks.restore(watermark)

    def needed(self) -> dict[Hashable, int]:
        return self.stage.needed_offsets()

    async def handle(self, tp: TopicPartition, records: Sequence[Any], now_s: float) -> None:
        replayed, fresh, replay_watermark = self.split_replay(tp, records)
        if replayed:
            columns = extract(replayed, "air", self.stage.keys)
            self.stage.fold(tp, columns, now_s, replay_watermark=replay_watermark)
        if fresh:
            self.stage.fold(tp, extract(fresh, "air", self.stage.keys), now_s)

    async def emit(self, now_s: float) -> None:
        results = self.stage.advance(now_s)
        settings = self.service.settings.aggregate.grid
        for result in results:
            value = encode("CellAggregate", result)
            await self.service.send(settings.topic, value, result["cell_id"].encode(), now_s)
        outcomes, cells = self.stage.take_counts()
        for outcome, count in outcomes.items():
            if count:
                metrics.GRID_RECORDS.labels(outcome).inc(count)
        for (window, outcome), count in cells.items():
            metrics.GRID_CELLS.labels(window, outcome).inc(count)
        for name, count in self.stage.open_cells().items():
            metrics.GRID_OPEN_CELLS.labels(name).set(count)
        self.emitted_watermark = self.stage.watermarks.current(now_s)
