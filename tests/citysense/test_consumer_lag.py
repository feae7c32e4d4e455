"""Per-topic lag: the sum over held partitions, and no stale series after a rebalance."""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Gauge

from citysense.consumer_lag import TopicLagGauge, topic_lag
from tests._consumer import EndsConsumer

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


def test_lag_sums_the_known_partitions_of_each_topic() -> None:
    consumer = EndsConsumer({A0: 100, A1: 50, B0: None})
    # B0 has no fetch answered yet, A1 is read ahead of the last fetch's end: neither adds.
    assert topic_lag(consumer, {A0: 40, A1: 60, B0: 0}) == {"a": 60}
    # A partition not positioned in this process counts in no sum.
    assert topic_lag(consumer, {A1: 10}) == {"a": 40}


def _series(registry: CollectorRegistry) -> dict[tuple[str, ...], float]:
    return {
        tuple(sample.labels.values()): sample.value
        for metric in registry.collect()
        for sample in metric.samples
    }


def test_a_topic_no_longer_held_is_no_longer_reported() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("lag_records", "lag", ["stage", "topic"], registry=registry)
    lag = TopicLagGauge(gauge, "aggregate")
    lag.update({"a": 5, "b": 7})
    assert _series(registry) == {("aggregate", "a"): 5, ("aggregate", "b"): 7}
    lag.update({"a": 3})  # b's partitions went to another process
    assert _series(registry) == {("aggregate", "a"): 3}
    lag.clear()
    assert _series(registry) == {}
    lag.clear()  # nothing left to remove: no error
