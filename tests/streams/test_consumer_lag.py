"""The aggregator's consumer lag: end offset of the last fetch minus the next offset to read."""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from citysense.settings import Settings
from streams._service import AggregateService, _StageRunner
from tests._consumer import EndsConsumer


def test_lag_is_summed_per_stage_and_topic_over_the_fetched_partitions() -> None:
    runner = _StageRunner(AggregateService(Settings()), "lagtest", "lagtest-group")
    noise = [TopicPartition("lag.noise", p) for p in range(3)]
    air = TopicPartition("lag.air", 0)
    # noise: 100 - 40 and 50 - 50 behind; partition 2 not fetched yet (no end offset) counts
    # in no sum. air: position unknown (nothing read in this process): no figure at all.
    runner.positions = {noise[0]: 40, noise[1]: 50, noise[2]: 7}
    consumer = EndsConsumer({noise[0]: 100, noise[1]: 50, noise[2]: None, air: 30})
    runner.update_lag(consumer)
    assert _lag("lag.noise") == 60
    assert _lag("lag.air") is None
    # Caught up: the gauge goes back to 0.
    runner.positions[noise[0]] = 100
    runner.update_lag(consumer)
    assert _lag("lag.noise") == 0


def _lag(topic: str) -> float | None:
    return REGISTRY.get_sample_value(
        "citysense_aggregate_consumer_lag_records", {"stage": "lagtest", "topic": topic}
    )
