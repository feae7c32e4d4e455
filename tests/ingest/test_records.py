"""Ingest's Kafka records: the Avro value written from the router's parts is the measurement's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from citysense.registry import load_registry, scenario_path
from citysense.settings import IngestSettings
from ingest import Accepted, Incoming, Router
from ingest._records import accepted_kafka_record, measurement_kafka_record
from simulators import Fleet


def test_accepted_record_equals_the_measurements_record() -> None:
    """Every fleet message (direct topics and LoRaWAN envelopes, all kinds) gives the same Kafka
    record through ``accepted_kafka_record`` as through the full ``Measurement``."""
    registry = load_registry(scenario_path("nation"))
    start = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    fleet = Fleet(registry, seed=3, clock=lambda: start)
    router = Router(registry, IngestSettings())
    kinds = set()
    for message in fleet.next_batch(4 * len(fleet.sensors)):
        received = start + timedelta(milliseconds=250)
        verdict = router.route(
            Incoming(message.topic, message.payload, received, dict(message.user_properties))
        )
        assert isinstance(verdict, Accepted), message.topic
        assert accepted_kafka_record(verdict) == measurement_kafka_record(verdict.measurement)
        kinds.add(verdict.kind)
    assert kinds == {"noise", "air", "traffic", "occupancy"}
