"""Kafka topic names of docs/architecture.md#kafka-contract."""

from __future__ import annotations

from decoders import KINDS

__all__ = [
    "AIR_CELLS_TOPIC",
    "DEADLETTER_TOPIC",
    "LATE_TOPIC",
    "aggregate_topic",
    "measurement_topic",
]

DEADLETTER_TOPIC = "city.deadletter.v1"
LATE_TOPIC = "city.late.v1"
#: The grid stage's results (``CellAggregate``), key = the cell id.
AIR_CELLS_TOPIC = "city.air.cells.v1"


def _checked(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    return kind


def measurement_topic(kind: str) -> str:
    """``city.<kind>.measurements.v1``: one kind's measurement records, key = sensor_id."""
    return f"city.{_checked(kind)}.measurements.v1"


def aggregate_topic(kind: str) -> str:
    """``city.<kind>.aggregates.v1``: one kind's window results, key = sensor_id or site:<site>."""
    return f"city.{_checked(kind)}.aggregates.v1"
