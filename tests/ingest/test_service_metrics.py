"""What ingest's hot path feeds besides Kafka: fleet health and Mosquitto's queue depth."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from prometheus_client import REGISTRY

from citysense.registry import Registry, Sensor, Site
from citysense.settings import IngestSettings, Settings
from ingest import Incoming, IngestService
from ingest._broker import SYS_TOPICS
from ingest._fleet import FleetHealth, run_fleet_refresh
from ingest._records import KafkaRecord
from ingest._service import broker_subscriptions
from tests.sinks._helpers import wait_until

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
#: Milesight WS302 (vendor README vector): battery 100 %, then the sound record.
WS302 = bytes.fromhex("017564055B053F02DA016A02")
#: The same with a battery of 10 %.
WS302_LOW = bytes.fromhex("01750A055B053F02DA016A02")
SITE = "metrics-square"


class _Batcher:
    def __init__(self) -> None:
        self.added: list[tuple[KafkaRecord, Callable[[], None]]] = []

    def add(self, record: KafkaRecord, done: Callable[[], None]) -> None:
        self.added.append((record, done))


def _registry() -> Registry:
    def meter(sid: str, **more: str) -> Sensor:
        return Sensor(
            id=sid, kind="noise", codec="milesight-ws302", site=SITE, lat=48.8, lon=2.3, **more
        )

    return Registry(
        [
            meter("meter-1"),
            meter("meter-2"),
            meter("meter-3", dev_eui="24E124713B175390", transport="chirpstack"),
        ],
        [Site(id=SITE, name="Square", lat=48.8, lon=2.3)],
    )


def _service(settings: Settings | None = None) -> IngestService:
    service = IngestService(settings or Settings(), _registry())
    service._batcher = _Batcher()  # type: ignore[assignment]
    return service


def _chirpstack(payload: bytes) -> Incoming:
    body = orjson.dumps(
        {
            "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
            "time": "2026-05-04T09:59:58.5+00:00",
            "deviceInfo": {"devEui": "24e124713b175390", "deviceProfileName": "x"},
            "fCnt": 7,
            "fPort": 85,
            "data": base64.b64encode(payload).decode(),
            "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -36, "snr": 10.5}],
        }
    )
    return Incoming("application/app/device/24e124713b175390/event/up", body, NOW, {})


def _histogram_count(name: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_count", {"kind": "noise"}) or 0


def test_accepted_measurements_feed_fleet_health_at_the_refresh() -> None:
    service = _service()
    fleet = service._fleet = FleetHealth(service._router.registry, clock=NOW.timestamp() - 10)
    rssi0 = _histogram_count("citysense_fleet_rssi_dbm")
    snr0 = _histogram_count("citysense_fleet_snr_db")
    service.handle(Incoming("sensors/meter-1/up", WS302, NOW - timedelta(seconds=5), {}), _no)
    service.handle(Incoming("sensors/meter-1/up", WS302_LOW, NOW, {}), _no)
    service.handle(_chirpstack(WS302), _no)
    service.handle(Incoming("sensors/nobody/up", WS302, NOW, {}), _no)  # a dead letter
    # The hot path only keeps the latest measurement per sensor; nothing is observed yet.
    assert sorted(fleet.heard) == ["meter-1", "meter-3"]
    assert _histogram_count("citysense_fleet_rssi_dbm") == rssi0
    assert fleet.take_heard() == 2
    assert fleet.heard == {}
    # Only the LoRaWAN uplink has a signal.
    assert _histogram_count("citysense_fleet_rssi_dbm") == rssi0 + 1
    assert _histogram_count("citysense_fleet_snr_db") == snr0 + 1

    # Interval 60 s, silent after 3 of them (180 s). meter-2 was never heard: it counts from
    # ingest's start (10 s before NOW), so it is silent at NOW + 175 and the others are not.
    counts = fleet.refresh(now=NOW.timestamp() + 175)[("noise", SITE)]
    assert (counts.sensors, counts.silent, counts.low_battery) == (3, 1, 1)
    labels = {"kind": "noise", "site": SITE}
    assert REGISTRY.get_sample_value("citysense_fleet_silent_sensors", labels) == 1
    assert REGISTRY.get_sample_value("citysense_fleet_low_battery_sensors", labels) == 1
    assert REGISTRY.get_sample_value("citysense_fleet_sensors", labels) == 3
    # A few seconds later the three intervals have passed for every one of them.
    fleet.refresh(now=NOW.timestamp() + 181)
    assert REGISTRY.get_sample_value("citysense_fleet_silent_sensors", labels) == 3
    # Heard again: no longer silent, and the battery was replaced.
    service.handle(Incoming("sensors/meter-1/up", WS302, NOW + timedelta(seconds=181), {}), _no)
    fleet.take_heard()
    fleet.refresh(now=NOW.timestamp() + 182)
    assert REGISTRY.get_sample_value("citysense_fleet_silent_sensors", labels) == 2
    assert REGISTRY.get_sample_value("citysense_fleet_low_battery_sensors", labels) == 0


def test_fleet_health_can_be_switched_off() -> None:
    service = _service(Settings(ingest=IngestSettings(fleet_refresh_s=0)))
    assert service._fleet is None
    service.handle(Incoming("sensors/meter-1/up", WS302, NOW, {}), _no)
    batcher = service._batcher
    assert isinstance(batcher, _Batcher)
    assert len(batcher.added) == 1


async def test_the_refresh_task_takes_what_was_heard_and_sets_the_gauges() -> None:
    service = _service()
    fleet = service._fleet
    assert fleet is not None
    service.handle(Incoming("sensors/meter-2/up", WS302_LOW, datetime.now(UTC), {}), _no)
    task = asyncio.create_task(run_fleet_refresh(fleet, 0.01))

    async def taken() -> bool:
        return not fleet.heard

    try:
        await wait_until(taken, 10, "the refresh task to take the measurement", interval=0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    labels = {"kind": "noise", "site": SITE}
    assert REGISTRY.get_sample_value("citysense_fleet_low_battery_sensors", labels) == 1
    assert REGISTRY.get_sample_value("citysense_fleet_silent_sensors", labels) == 0


def test_sys_messages_set_the_queue_depth_and_never_reach_kafka() -> None:
    service = _service()
    received = "citysense_ingest_received_messages_total"
    before = {
        family: REGISTRY.get_sample_value(received, {"family": family}) or 0
        for family in ("other", "direct")
    }
    released: list[str] = []
    service.handle(
        Incoming("$SYS/broker/store/messages/count", b"4242", NOW, {}),
        lambda: released.append("count"),
    )
    service.handle(
        Incoming("$SYS/broker/store/messages/bytes", b"123456", NOW, {}),
        lambda: released.append("bytes"),
    )
    # Another $SYS topic (never subscribed, but a broker may send it) is dropped too.
    service.handle(Incoming("$SYS/broker/uptime", b"10 seconds", NOW, {}), _no)
    service.flush_metrics()
    assert REGISTRY.get_sample_value("citysense_ingest_broker_stored_messages") == 4242
    assert REGISTRY.get_sample_value("citysense_ingest_broker_stored_bytes") == 123456
    assert released == ["count", "bytes"]  # acknowledged at once: there is nothing to send
    batcher = service._batcher
    assert isinstance(batcher, _Batcher)
    assert batcher.added == []
    for family, count in before.items():
        assert REGISTRY.get_sample_value(received, {"family": family}) == count


@pytest.mark.parametrize("shared", [None, "city"])
def test_the_first_broker_is_also_asked_for_its_queue_depth(shared: str | None) -> None:
    ingest = IngestSettings(shared_group=shared)
    first = broker_subscriptions(ingest, 0)
    assert first == [*ingest.subscriptions(), *SYS_TOPICS]
    # $SYS is never shared: each ingest process reads the broker's own numbers.
    assert all(not t.startswith("$share") for t in SYS_TOPICS)
    assert broker_subscriptions(ingest, 1) == ingest.subscriptions()
    off = IngestSettings(shared_group=shared, broker_stats=False)
    assert broker_subscriptions(off, 0) == off.subscriptions()


def _no() -> None:
    return None
