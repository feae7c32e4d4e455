"""Per-topic consumer lag for the stages' ``*_consumer_lag_records`` gauges.

Both consuming stages (the aggregator and the sink) export, per topic, the records between the
end of each partition they hold (the high watermark of its last fetch) and their next offset to
read, summed over those partitions. With several processes in a group the lag panel and the
autoscaler sum the processes' series, so a process must stop reporting a topic whose partitions
a rebalance moved away: a stale series would add lag that nobody has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Protocol

from aiokafka import TopicPartition
from prometheus_client import Gauge

__all__ = ["TopicLagGauge", "topic_lag"]


class _Consumer(Protocol):
    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...


def topic_lag(consumer: _Consumer, positions: Mapping[TopicPartition, int]) -> dict[str, int]:
    """Records behind, per topic, over the partitions held that were fetched and positioned.

    A partition with no fetch answered yet (no high watermark) or not read yet in this process
    (no position) counts in no sum: its lag is unknown, not zero.
    """
    lag: dict[str, int] = {}
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        position = positions.get(tp)
        if end is None or position is None:
            continue
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - position)
    return lag


class TopicLagGauge:
    """Sets ``gauge`` per topic (after the ``fixed`` label values) and removes the series of
    the topics no longer in the lag, so a revoked topic is not reported forever."""

    def __init__(self, gauge: Gauge, *fixed: str) -> None:
        self._gauge = gauge
        self._fixed = fixed
        self._reported: set[str] = set()

    def update(self, lag: Mapping[str, int]) -> None:
        for topic, value in lag.items():
            self._gauge.labels(*self._fixed, topic).set(value)
        for topic in self._reported - lag.keys():
            self._remove(topic)
        self._reported = set(lag)

    def clear(self) -> None:
        """Remove every series this process reported (the stage stopped)."""
        for topic in self._reported:
            self._remove(topic)
        self._reported = set()

    def _remove(self, topic: str) -> None:
        labels: tuple[Any, ...] = (*self._fixed, topic)
        with contextlib.suppress(KeyError):  # already gone
            self._gauge.remove(*labels)
