"""IngestService.handle without brokers: what reaches the Kafka batcher for one message."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

import schemas
from citysense.registry import Registry, Sensor
from citysense.settings import Settings
from ingest import Incoming, IngestService
from ingest._records import KafkaRecord

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
WS302 = bytes.fromhex("017564055B053F02DA016A02")  # vendor README vector


class _Batcher:
    """Stands in for the Kafka batcher: keeps what it is given."""

    def __init__(self) -> None:
        self.added: list[tuple[KafkaRecord, Callable[[], None]]] = []

    def add(self, record: KafkaRecord, done: Callable[[], None]) -> None:
        self.added.append((record, done))


@pytest.fixture
def service() -> IngestService:
    registry = Registry(
        [Sensor(id="meter-1", kind="noise", codec="milesight-ws302", lat=48.8, lon=2.3)], []
    )
    ingest = IngestService(Settings(), registry)
    ingest._batcher = _Batcher()  # type: ignore[assignment]
    return ingest


def _added(service: IngestService) -> list[tuple[KafkaRecord, Callable[[], None]]]:
    batcher = service._batcher
    assert isinstance(batcher, _Batcher)
    return batcher.added


class _BrokenRouter:
    """A router with a bug: raises what no codec declares."""

    def route(self, _incoming: Incoming) -> None:
        raise OverflowError("date value out of range")


def test_a_fault_of_ours_becomes_a_dead_letter_and_keeps_the_puback(
    service: IngestService,
) -> None:
    service._router = _BrokenRouter()  # type: ignore[assignment]
    released: list[int] = []
    service.handle(Incoming("sensors/meter-1/up", b"\x01\x02", NOW, {}), lambda: released.append(1))
    [(record, done)] = _added(service)
    assert record.topic == schemas.DEADLETTER_TOPIC
    name, dead = schemas.decode(record.value)
    assert name == "DeadLetter"
    assert dead["reason"] == "internal_error"
    assert dead["error_class"] == "OverflowError"
    assert dead["payload"] == b"\x01\x02"
    assert released == []
    done()  # Kafka's ack releases the PUBACK, as for any record
    assert released == [1]


def test_a_valid_message_becomes_a_measurement(service: IngestService) -> None:
    service.handle(Incoming("sensors/meter-1/up", WS302, NOW, {}), lambda: None)
    [(record, _done)] = _added(service)
    assert record.topic == schemas.measurement_topic("noise")


def test_a_redelivered_malformed_message_is_dead_lettered_once(service: IngestService) -> None:
    """The broker redelivers (DUP) what it had no PUBACK for, after ingest reconnects; the dead
    letter of the first copy is already on its way, so the copy is only acknowledged."""
    released: list[int] = []
    first = Incoming("sensors/meter-1/up", b"\x01\x02", NOW, {})
    again = Incoming("sensors/meter-1/up", b"\x01\x02", NOW, {}, redelivered=True)
    service.handle(first, lambda: released.append(1))
    service.handle(again, lambda: released.append(2))
    added = _added(service)
    assert [record.topic for record, _ in added] == [schemas.DEADLETTER_TOPIC]
    assert released == [2]  # the copy's PUBACK at once; the first's once Kafka has it
    added[0][1]()
    assert released == [2, 1]


def test_two_publishes_of_the_same_malformed_bytes_are_two_dead_letters(
    service: IngestService,
) -> None:
    """Without the DUP flag they are two messages, dead-lettered twice."""
    for _ in range(2):
        service.handle(Incoming("sensors/meter-1/up", b"\x01\x02", NOW, {}), lambda: None)
    assert [r.topic for r, _ in _added(service)] == [schemas.DEADLETTER_TOPIC] * 2


def test_a_redelivery_matches_only_the_same_message_id(service: IngestService) -> None:
    """A DUP copy of other broken bytes, or of the same bytes with another ``message_id``, is a
    message the first one does not stand for: it is dead-lettered (the fault suite lost such
    dead letters after a partition, when only the bytes were compared)."""
    service.handle(Incoming("sensors/meter-1/up", b"", NOW, {"message_id": "1"}), lambda: None)
    again = Incoming("sensors/meter-1/up", b"", NOW, {"message_id": "2"}, redelivered=True)
    service.handle(again, lambda: None)
    assert [r.topic for r, _ in _added(service)] == [schemas.DEADLETTER_TOPIC] * 2
