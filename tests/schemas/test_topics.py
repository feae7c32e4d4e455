from __future__ import annotations

import pytest

from decoders import KINDS
from schemas import (
    DEADLETTER_TOPIC,
    LATE_TOPIC,
    aggregate_topic,
    measurement_schema_name,
    measurement_topic,
)


def test_topic_names_follow_design_section_4() -> None:
    assert measurement_topic("noise") == "city.noise.measurements.v1"
    assert aggregate_topic("occupancy") == "city.occupancy.aggregates.v1"
    assert DEADLETTER_TOPIC == "city.deadletter.v1"
    assert LATE_TOPIC == "city.late.v1"
    assert len({measurement_topic(k) for k in KINDS} | {aggregate_topic(k) for k in KINDS}) == 8


def test_every_kind_has_a_measurement_schema() -> None:
    assert [measurement_schema_name(k) for k in KINDS] == [
        "NoiseMeasurement",
        "AirMeasurement",
        "TrafficMeasurement",
        "OccupancyMeasurement",
    ]


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown kind 'water'"):
        measurement_topic("water")
    with pytest.raises(ValueError, match="unknown kind 'water'"):
        aggregate_topic("water")
