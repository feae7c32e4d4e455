"""The aggregator's consumer lag: end offset of the last fetch minus the next offset to read."""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from citysense.settings import Settings
from streams._service import AggregateService, _StageRunner


class _Consumer:
    """What ``mark_busy`` asks of the consumer: its partitions and their end offsets."""

    def __init__(self, ends: dict[TopicPartition, int | None]) -> None:
        self.ends = ends

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends[tp]


class _Runner(_StageRunner):
    def __init__(self) -> None:
        super().__init__(AggregateService(Settings()), "lagtest", "lagtest-group")
        self.busy_partitions: set[TopicPartition] = set()

    def busy(self, tp: TopicPartition, now_s: float) -> None:
        self.busy_partitions.add(tp)


async def test_lag_is_summed_per_stage_and_topic_over_the_fetched_partitions() -> None:
    runner = _Runner()
    noise = [TopicPartition("lag.noise", p) for p in range(3)]
    air = TopicPartition("lag.air", 0)
    # noise: 100 - 40 and 50 - 50 behind; partition 2 not fetched yet (no end offset) counts
    # in neither the lag nor as read. air: position unknown (nothing read in this process).
    runner.positions = {noise[0]: 40, noise[1]: 50, noise[2]: 7}
    consumer = _Consumer({noise[0]: 100, noise[1]: 50, noise[2]: None, air: 30})
    await runner.mark_busy(consumer, 0.0)
    value = REGISTRY.get_sample_value
    assert (
        value(
            "citysense_aggregate_consumer_lag_records", {"stage": "lagtest", "topic": "lag.noise"}
        )
        == 60
    )
    assert (
        value("citysense_aggregate_consumer_lag_records", {"stage": "lagtest", "topic": "lag.air"})
        is None
    )
    # The idle rule is unchanged: busy when behind or when no fetch answered yet.
    assert runner.busy_partitions == {noise[0], noise[2]}
    # Caught up: the gauge goes back to 0.
    runner.positions[noise[0]] = 100
    await runner.mark_busy(consumer, 0.0)
    assert (
        value(
            "citysense_aggregate_consumer_lag_records", {"stage": "lagtest", "topic": "lag.noise"}
        )
        == 0
    )
