"""Ingest's Kafka records: the Avro value written from the router's parts is the measurement's."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

import schemas
from citysense.registry import load_registry, scenario_path
from citysense.settings import IngestSettings
from ingest import Accepted, Incoming, Router, _records
from ingest._records import accepted_kafka_record, measurement_kafka_record
from simulators import Fleet
from tests._source import plain_python


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


RECORDS_MODULES = {"imported": _records, "source": plain_python(_records)}


@pytest.mark.parametrize("module", RECORDS_MODULES.values(), ids=RECORDS_MODULES.keys())
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2),  # noqa: DTZ001  bounds for st.datetimes, which adds the zone
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        timezones=st.just(UTC)
        | st.builds(
            timezone,
            st.timedeltas(timedelta(hours=-23), timedelta(hours=23)).map(
                lambda t: timedelta(minutes=t // timedelta(minutes=1))
            ),
        ),
    )
)
def test_trace_header_is_epoch_micros(module: ModuleType, moment: datetime) -> None:
    """The trace header's compiled UTC shortcut gives ``schemas.epoch_micros`` exactly."""
    assert module._epoch_micros(moment) == schemas.epoch_micros(moment)
    headers = dict(module._headers("DeadLetter", moment, None))
    assert headers["trace"] == str(schemas.epoch_micros(moment)).encode()


@pytest.mark.parametrize("module", RECORDS_MODULES.values(), ids=RECORDS_MODULES.keys())
def test_trace_of_a_naive_time_is_epoch_micros_error(module: ModuleType) -> None:
    naive = datetime(2026, 1, 1)  # noqa: DTZ001  naive on purpose
    with pytest.raises(ValueError, match="naive") as caught:
        module._epoch_micros(naive)
    with pytest.raises(ValueError, match="naive") as expected:
        schemas.epoch_micros(naive)
    assert str(caught.value) == str(expected.value)


@pytest.mark.parametrize("module", RECORDS_MODULES.values(), ids=RECORDS_MODULES.keys())
def test_kafka_record_init_is_the_dataclass_one(module: ModuleType) -> None:
    """KafkaRecord spells out its ``__init__``: it takes the fields in order and stores each."""
    record_class = module.KafkaRecord
    names = [f.name for f in dataclasses.fields(record_class)]
    assert list(inspect.signature(record_class).parameters) == names
    values = ("topic", b"key", b"value", [("h", b"v")])
    record = record_class(*values)
    assert tuple(getattr(record, name) for name in names) == values
    assert record == record_class(**dict(zip(names, values, strict=True)))
    assert (
        repr(record)
        == "KafkaRecord(topic='topic', key=b'key', value=b'value', headers=[('h', b'v')])"
    )


@pytest.mark.parametrize("zone", [UTC, timezone(timedelta(hours=2))], ids=["utc", "plus-two-hours"])
@pytest.mark.parametrize(
    "observed", [None, "2026-03-03T06:59:00+00:00"], ids=["broker", "property"]
)
def test_direct_record_equals_the_measurements_record(zone: timezone, observed: str | None) -> None:
    """Receive times in UTC take the one-conversion path; others, and an event time of its own,
    must give the same record as the full ``Measurement``."""
    registry = load_registry(scenario_path("nation"))
    received = datetime(2026, 3, 3, 7, 0, 0, 250_001, tzinfo=UTC).astimezone(zone)
    fleet = Fleet(registry, seed=5, clock=lambda: received)
    router = Router(registry, IngestSettings())
    direct = [m for m in fleet.next_batch(len(fleet.sensors)) if m.topic.endswith("/up")]
    properties = {} if observed is None else {"observed_at": observed}
    checked = 0
    for message in direct:
        if not message.topic.startswith(("sensors/", "gateways/")):
            continue
        verdict = router.route(Incoming(message.topic, message.payload, received, properties))
        assert isinstance(verdict, Accepted), message.topic
        assert (verdict.observed_at is verdict.received_at) is (observed is None)
        assert accepted_kafka_record(verdict) == measurement_kafka_record(verdict.measurement)
        checked += 1
    assert checked > 0
