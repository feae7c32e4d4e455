"""A stand-in for the two reads the lag helpers make of an aiokafka consumer (pure-logic tests)."""

from __future__ import annotations

from aiokafka import TopicPartition


class EndsConsumer:
    """``assignment()`` and ``highwater()`` of a consumer holding ``ends``' partitions.

    ``None`` as an end offset is a partition whose first fetch has not been answered yet.
    """

    def __init__(self, ends: dict[TopicPartition, int | None]) -> None:
        self.ends = ends

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.ends[partition]
