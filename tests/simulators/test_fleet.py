"""The fleet: deterministic for a seed, payloads every decoder accepts, exact malformed counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from citysense.registry import Registry, load_registry, scenario_path
from decoders import DecodeError, get_codec
from decoders.envelopes import parse_uplink
from simulators import Fleet, Outgoing, direct_topic
from simulators._fleet import PARIS
from simulators._patterns import day_weather, pool_occupancy, traffic_intensity

NOON = datetime(2026, 3, 10, 11, 0, tzinfo=UTC)  # a Tuesday, 12:00 in Paris


@pytest.fixture(scope="module")
def nation() -> Registry:
    return load_registry(scenario_path("nation"))


def _fixed(moment: datetime) -> Fleet:
    return Fleet(load_registry(scenario_path("nation")), seed=7, clock=lambda: moment)


def _classify(registry: Registry, message: Outgoing) -> tuple[str, datetime | None]:
    """("valid", event time) or ("malformed", None), decoding as ingest would."""
    try:
        if message.topic.startswith(("sensors/", "gateways/")):
            sensor = registry.get(message.topic.split("/")[-2])
            assert sensor is not None
            get_codec(sensor.codec).decode(message.payload, None, sensor.profile())
            props = dict(message.user_properties)
            observed = props.get("observed_at")
            return "valid", datetime.fromisoformat(observed) if observed else None
        uplink = parse_uplink(message.topic, message.payload)
        sensor = registry.by_dev_eui[uplink.dev_eui] if uplink.dev_eui else None
        if sensor is None:
            sensor = registry.get(uplink.device_name or "")
        assert sensor is not None
        get_codec(sensor.codec).decode(uplink.payload, uplink.fport, sensor.profile())
        return "valid", uplink.received_at
    except DecodeError:
        return "malformed", None


def test_same_seed_same_messages() -> None:
    first = _fixed(NOON).next_batch(300)
    second = _fixed(NOON).next_batch(300)
    assert [(m.topic, m.payload) for m in first] == [(m.topic, m.payload) for m in second]
    other = Fleet(load_registry(scenario_path("nation")), seed=8, clock=lambda: NOON)
    assert [m.payload for m in other.next_batch(300)] != [m.payload for m in first]


def test_every_sensor_publishes_decodable_payloads_on_its_transport(nation: Registry) -> None:
    fleet = Fleet(nation, seed=1, clock=lambda: NOON)
    messages = fleet.next_batch(len(nation) * 3)
    assert all(_classify(nation, m)[0] == "valid" for m in messages)
    topics = {m.topic.split("/")[0] for m in messages}
    assert topics == {"gateways", "application", "v3"}
    direct = [s for s in nation.sensors.values() if s.transport == "direct"]
    assert direct_topic(direct[0]) in {m.topic for m in messages}
    assert direct_topic(direct[0]) == f"gateways/gw-nation-1/sensors/{direct[0].id}/up"
    assert fleet.stats.sent == len(messages)
    assert sum(fleet.stats.by_kind.values()) == len(messages)
    assert set(fleet.stats.by_kind) == {"noise", "air", "traffic", "occupancy"}


def test_malformed_and_late_counts_are_exact(nation: Registry) -> None:
    fleet = Fleet(nation, seed=3, bad_ratio=0.2, late_ratio=0.2, clock=lambda: NOON)
    messages = fleet.next_batch(2000)
    verdicts = [_classify(nation, m) for m in messages]
    malformed = sum(1 for kind, _ in verdicts if kind == "malformed")
    assert malformed == fleet.stats.malformed
    assert 300 < malformed < 500
    late = sum(
        1
        for kind, when in verdicts
        if kind == "valid" and when is not None and when < NOON - timedelta(minutes=1)
    )
    assert late == fleet.stats.late
    assert late > 200


def test_envelopes_carry_increasing_frame_counters(nation: Registry) -> None:
    fleet = Fleet(nation, seed=1, clock=lambda: NOON)
    counters: dict[str, list[int]] = {}
    for message in fleet.next_batch(len(nation) * 4):
        if message.topic.startswith(("application/", "v3/")):
            uplink = parse_uplink(message.topic, message.payload)
            counters.setdefault(uplink.dev_eui or "", []).append(uplink.fcnt)
    assert counters
    for fcnts in counters.values():
        assert fcnts == sorted(fcnts)
        assert len(set(fcnts)) == len(fcnts)


def test_daily_patterns() -> None:
    weather = day_weather(NOON.date(), seed=1)
    tuesday_8 = datetime(2026, 3, 10, 8, 15, tzinfo=PARIS)
    tuesday_3 = datetime(2026, 3, 10, 3, 0, tzinfo=PARIS)
    assert traffic_intensity(tuesday_8, weather, "car") > 4 * traffic_intensity(
        tuesday_3, weather, "car"
    )
    hours = ("07:00-08:30", "11:30-13:30")
    assert pool_occupancy(datetime(2026, 3, 10, 10, 0, tzinfo=PARIS), hours) == 0.0
    assert pool_occupancy(datetime(2026, 3, 10, 12, 30, tzinfo=PARIS), hours) > 0.5
    rainy = [d for d in range(60) if day_weather(NOON.date() + timedelta(days=d), seed=1).rain]
    assert 5 < len(rainy) < 30
