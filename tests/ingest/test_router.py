"""The pure core of ingest: topic → measurement or dead-letter verdict."""

from __future__ import annotations

import base64
import dataclasses
import inspect
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from citysense.registry import Registry, Sensor, Site
from citysense.settings import IngestSettings
from ingest import Accepted, Incoming, Rejected, Router, _router
from schemas import Source
from tests._source import plain_python

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
WS302 = bytes.fromhex("017564055B053F02DA016A02")  # vendor README vector


@pytest.fixture
def registry() -> Registry:
    site = Site(id="square", name="Square", lat=48.8, lon=2.3)
    return Registry(
        [
            Sensor(
                id="meter-1",
                kind="noise",
                codec="milesight-ws302",
                site="square",
                lat=48.8,
                lon=2.3,
            ),
            Sensor(
                id="meter-2",
                kind="noise",
                codec="milesight-ws302",
                lat=48.8,
                lon=2.3,
                gateway="gw-a",
            ),
            Sensor(
                id="meter-3",
                kind="noise",
                codec="milesight-ws302",
                lat=48.8,
                lon=2.3,
                dev_eui="24E124713B175390",
                transport="chirpstack",
            ),
        ],
        [site],
    )


def _chirpstack(dev_eui: str, payload: bytes, fcnt: int = 7, profile: str = "x") -> Incoming:
    body = orjson.dumps(
        {
            "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
            "time": "2026-05-04T09:59:58.5+00:00",
            "deviceInfo": {"devEui": dev_eui.lower(), "deviceProfileName": profile},
            "fCnt": fcnt,
            "fPort": 85,
            "data": base64.b64encode(payload).decode(),
            "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -36, "snr": 10.5}],
        }
    )
    return Incoming(f"application/app/device/{dev_eui.lower()}/event/up", body, NOW, {})


def test_direct_topic_decodes_with_the_registry_codec(registry: Registry) -> None:
    verdict = Router(registry, IngestSettings()).route(
        Incoming("sensors/meter-1/up", WS302, NOW, {"message_id": "42"})
    )
    assert isinstance(verdict, Accepted)
    m = verdict.measurement
    assert (m.sensor_id, m.kind, m.codec) == ("meter-1", "noise", "milesight-ws302")
    assert m.values["laeq_db"] == pytest.approx(47.4)
    assert m.observed_at == NOW
    assert verdict.idempotency_key == "meter-1:42"
    assert verdict.duplicate_key is None


def test_direct_topic_event_time_from_user_property(registry: Registry) -> None:
    earlier = NOW - timedelta(minutes=5)
    verdict = Router(registry, IngestSettings()).route(
        Incoming("sensors/meter-1/up", WS302, NOW, {"observed_at": earlier.isoformat()})
    )
    assert isinstance(verdict, Accepted)
    assert verdict.measurement.observed_at == earlier
    bad = Router(registry, IngestSettings()).route(
        Incoming("sensors/meter-1/up", WS302, NOW, {"observed_at": "yesterday"})
    )
    assert isinstance(bad, Rejected)
    assert bad.reason == "invalid_timestamp"


def test_without_message_id_the_key_is_a_content_digest(registry: Registry) -> None:
    router = Router(registry, IngestSettings())
    first = router.route(Incoming("sensors/meter-1/up", WS302, NOW, {}))
    again = router.route(Incoming("sensors/meter-1/up", WS302, NOW, {}))
    later = router.route(Incoming("sensors/meter-1/up", WS302, NOW + timedelta(seconds=1), {}))
    assert isinstance(first, Accepted)
    assert isinstance(again, Accepted)
    assert isinstance(later, Accepted)
    assert first.idempotency_key == again.idempotency_key != later.idempotency_key


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("sensors/meter-2/up", "unauthorized"),  # bound to gw-a, came unauthenticated
        ("gateways/gw-b/sensors/meter-2/up", "unauthorized"),  # another gateway
        ("sensors/nobody/up", "unknown_sensor"),
        ("something/else", "unknown_topic"),
    ],
)
def test_policy_rejections(registry: Registry, topic: str, reason: str) -> None:
    verdict = Router(registry, IngestSettings()).route(Incoming(topic, WS302, NOW, {}))
    assert isinstance(verdict, Rejected)
    assert verdict.reason == reason


def test_bound_gateway_may_publish(registry: Registry) -> None:
    verdict = Router(registry, IngestSettings()).route(
        Incoming("gateways/gw-a/sensors/meter-2/up", WS302, NOW, {})
    )
    assert isinstance(verdict, Accepted)
    assert verdict.measurement.source.gateway_id == "gw-a"


def test_decode_errors_become_rejections_naming_codec_and_sensor(registry: Registry) -> None:
    verdict = Router(registry, IngestSettings()).route(
        Incoming("sensors/meter-1/up", WS302[:5], NOW, {})
    )
    assert isinstance(verdict, Rejected)
    assert verdict.reason == "truncated"
    assert verdict.codec == "milesight-ws302"
    assert verdict.sensor_id == "meter-1"
    assert "offset" in verdict.message


def test_oversized_payload(registry: Registry) -> None:
    verdict = Router(registry, IngestSettings(max_payload_bytes=64)).route(
        Incoming("sensors/meter-1/up", b"x" * 65, NOW, {})
    )
    assert isinstance(verdict, Rejected)
    assert verdict.reason == "oversized"


def test_chirpstack_uplink_with_source_metadata(registry: Registry) -> None:
    verdict = Router(registry, IngestSettings()).route(_chirpstack("24E124713B175390", WS302))
    assert isinstance(verdict, Accepted)
    m = verdict.measurement
    assert m.sensor_id == "meter-3"
    assert m.observed_at == datetime(2026, 5, 4, 9, 59, 58, 500000, tzinfo=UTC)
    assert m.source.network == "chirpstack"
    assert m.source.f_cnt == 7
    assert m.source.rssi == -36
    assert m.source.gateway_id == "0016c001f153a14c"
    assert verdict.idempotency_key.startswith("24E124713B175390:7:")
    assert verdict.duplicate_key is not None


def test_unknown_device_policy(registry: Registry) -> None:
    message = _chirpstack("0101010101010101", WS302, profile="milesight-ws302")
    rejected = Router(registry, IngestSettings()).route(message)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "unknown_device"
    accepted = Router(registry, IngestSettings(unknown_devices="accept")).route(message)
    assert isinstance(accepted, Accepted)
    assert accepted.measurement.sensor_id == "milesight-ws302:0101010101010101"
    unguessable = _chirpstack("0101010101010101", WS302, profile="some-profile")
    still = Router(registry, IngestSettings(unknown_devices="accept")).route(unguessable)
    assert isinstance(still, Rejected)
    assert "names no known codec" in still.message


def test_bad_envelope_is_rejected(registry: Registry) -> None:
    verdict = Router(registry, IngestSettings()).route(
        Incoming("application/app/device/24e124713b175390/event/up", b'{"fCnt": ', NOW, {})
    )
    assert isinstance(verdict, Rejected)
    assert verdict.reason == "invalid"


def test_event_time_far_in_the_future_is_rejected(registry: Registry) -> None:
    future = NOW + timedelta(hours=2)
    verdict = Router(registry, IngestSettings()).route(
        Incoming("sensors/meter-1/up", WS302, NOW, {"observed_at": future.isoformat()})
    )
    assert isinstance(verdict, Rejected)
    assert verdict.reason == "future_timestamp"


# --- the slots classes built once per message store what they are given ----------------------

#: The router as imported (compiled by ``make native`` when built) and run from its source.
ROUTER_MODULES = {"imported": _router, "source": plain_python(_router)}


@pytest.mark.parametrize("module", ROUTER_MODULES.values(), ids=ROUTER_MODULES.keys())
@given(
    values=st.fixed_dictionaries(
        {
            "network": st.none() | st.sampled_from(["mqtt", "chirpstack", "tts"]),
            "gateway_id": st.none() | st.text(max_size=8),
            "rssi": st.none() | st.floats(allow_nan=False) | st.integers(-150, 0),
            "snr": st.none() | st.floats(allow_nan=False),
            "f_cnt": st.none() | st.integers(0, 0xFFFFFFFF),
            "dev_eui": st.none() | st.text(max_size=16),
            "dedup_id": st.none() | st.text(max_size=8),
            "idempotency_key": st.none() | st.text(max_size=20),
        }
    )
)
def test_source_init_stores_every_field(module: ModuleType, values: dict[str, Any]) -> None:
    """``Source`` spells out its ``__init__`` and ``__hash__``: a field they forget fails here."""
    source_class = module.Source
    assert list(inspect.signature(source_class).parameters) == [
        f.name for f in dataclasses.fields(source_class)
    ]
    assert set(values) == {f.name for f in dataclasses.fields(Source)}
    ordered = [values[f.name] for f in dataclasses.fields(source_class)]
    built = source_class(*ordered)
    assert built == source_class(**values)
    assert dataclasses.asdict(built) == values
    assert hash(built) == hash(source_class(**values))
    assert hash(built) == hash(tuple(ordered))


@pytest.mark.parametrize("module", ROUTER_MODULES.values(), ids=ROUTER_MODULES.keys())
def test_accepted_init_is_the_dataclass_one(module: ModuleType, registry: Registry) -> None:
    """Accepted spells out its ``__init__``: it takes the fields in order and stores each."""
    accepted_class = module.Accepted
    names = [f.name for f in dataclasses.fields(accepted_class)]
    assert list(inspect.signature(accepted_class).parameters) == names
    verdict = module.Router(registry, IngestSettings()).route(
        _chirpstack("24E124713B175390", WS302)
    )
    assert type(verdict) is accepted_class
    again = accepted_class(*(getattr(verdict, name) for name in names))
    assert again == verdict
    assert repr(again) == repr(verdict)
    assert again == accepted_class(**{name: getattr(verdict, name) for name in names})


@pytest.mark.parametrize("module", ROUTER_MODULES.values(), ids=ROUTER_MODULES.keys())
def test_incoming_init_is_the_dataclass_one(module: ModuleType) -> None:
    """Incoming spells out its ``__init__`` too: the fields in order, each stored."""
    incoming_class = module.Incoming
    names = [f.name for f in dataclasses.fields(incoming_class)]
    assert list(inspect.signature(incoming_class).parameters) == names
    values = ("sensors/meter-1/up", b"\x01\x02", NOW, {"message_id": "7"}, True)
    built = incoming_class(*values)
    assert tuple(getattr(built, name) for name in names) == values
    assert built == incoming_class(**dict(zip(names, values, strict=True)))
    assert built != incoming_class(*values[:3], {}, True)
    # Not a redelivery unless the DUP flag says so.
    assert incoming_class(*values[:4]).redelivered is False


@pytest.mark.parametrize("module", ROUTER_MODULES.values(), ids=ROUTER_MODULES.keys())
def test_routed_sources_equal_the_constructed_ones(module: ModuleType, registry: Registry) -> None:
    router = module.Router(registry, IngestSettings())
    lorawan = router.route(_chirpstack("24E124713B175390", WS302))
    assert lorawan.source == Source(
        network="chirpstack",
        gateway_id="0016c001f153a14c",
        rssi=-36.0,
        snr=10.5,
        f_cnt=7,
        dev_eui="24E124713B175390",
        dedup_id="3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
        idempotency_key="24E124713B175390:7:3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    )
    direct = router.route(Incoming("sensors/meter-2/up", WS302, NOW, {"message_id": "9"}))
    assert isinstance(direct, module.Rejected)  # bound to gw-a
    bound = router.route(Incoming("gateways/gw-a/sensors/meter-2/up", WS302, NOW, {}))
    assert bound.source.network == "mqtt"
    assert bound.source == Source(
        network="mqtt", gateway_id="gw-a", idempotency_key=bound.idempotency_key
    )


# --- positions of mobile sensors ------------------------------------------------------------

#: Cayenne LPP: analog input 2 = 18.50 (0x073A; PM2.5 by the channel map), GPS channel 1 at
#: 48.8584 N 2.3488 E, 35 m (Châtelet): 0x077488, 0x005BC0, 0x000DAC.
LPP_FIX = bytes.fromhex("0202073A0188077488005BC0000DAC")
LPP_NO_FIX = bytes.fromhex("0202073A")


@pytest.fixture
def mobile_registry() -> Registry:
    common: dict[str, Any] = {
        "kind": "air",
        "codec": "cayenne-lpp",
        "lat": 48.84,
        "lon": 2.38,
        "mobile": True,
        "channel_map": {"analog_in_2": "pm2_5_ugm3"},
    }
    return Registry(
        [
            Sensor(id="car-1", **common),
            Sensor(id="car-2", dev_eui="70B3D57ED005A001", transport="tts", **common),
            Sensor(
                id="lpp-noise",
                kind="noise",
                codec="cayenne-lpp",
                lat=48.8,
                lon=2.3,
                channel_map={"analog_in_2": "laeq_db"},
            ),
        ]
    )


def _tts(device: str, payload: bytes, locations: dict[str, Any] | None) -> Incoming:
    message: dict[str, Any] = {
        "f_port": 1,
        "f_cnt": 3,
        "frm_payload": base64.b64encode(payload).decode(),
        "received_at": "2026-05-04T09:59:58Z",
    }
    if locations is not None:
        message["locations"] = locations
    body = {
        "end_device_ids": {
            "device_id": device,
            "application_ids": {"application_id": "fleet"},
            "dev_eui": "70B3D57ED005A001",
        },
        "uplink_message": message,
    }
    return Incoming(f"v3/fleet/devices/{device}/up", orjson.dumps(body), NOW, {})


def test_lpp_fix_becomes_the_measurement_position(mobile_registry: Registry) -> None:
    verdict = Router(mobile_registry, IngestSettings()).route(
        Incoming("sensors/car-1/up", LPP_FIX, NOW, {})
    )
    assert isinstance(verdict, Accepted)
    measurement = verdict.measurement
    assert measurement.values["pm2_5_ugm3"] == 18.5
    assert measurement.position is not None
    assert (measurement.position.lat, measurement.position.lon) == (48.8584, 2.3488)


def test_envelope_location_fills_a_payload_without_fix(mobile_registry: Registry) -> None:
    router = Router(mobile_registry, IngestSettings())
    where = {"frm-payload": {"latitude": 48.85, "longitude": 2.35, "accuracy": 12}}
    verdict = router.route(_tts("car-2", LPP_NO_FIX, where))
    assert isinstance(verdict, Accepted)
    position = verdict.measurement.position
    assert position is not None
    assert (position.lat, position.lon, position.accuracy_m) == (48.85, 2.35, 12.0)
    # The payload's own fix wins over the network server's.
    verdict = router.route(_tts("car-2", LPP_FIX, where))
    assert isinstance(verdict, Accepted)
    assert verdict.measurement.position is not None
    assert verdict.measurement.position.lat == 48.8584
    # Neither: a mobile record without a position is still a measurement (kept raw).
    verdict = router.route(_tts("car-2", LPP_NO_FIX, None))
    assert isinstance(verdict, Accepted)
    assert verdict.measurement.position is None


@pytest.mark.parametrize(
    "location",
    [
        {"latitude": 91.0, "longitude": 2.35},
        {"latitude": 48.85, "longitude": -180.5},
        {"latitude": 48.85, "longitude": 2.35, "accuracy": -1},
    ],
)
def test_a_position_off_the_globe_is_out_of_range(
    mobile_registry: Registry, location: dict[str, float]
) -> None:
    verdict = Router(mobile_registry, IngestSettings()).route(
        _tts("car-2", LPP_NO_FIX, {"frm-payload": location})
    )
    assert isinstance(verdict, Rejected)
    assert verdict.reason == "out_of_range"
    assert "position" in verdict.message


def test_a_position_on_another_kind_is_dropped(mobile_registry: Registry) -> None:
    verdict = Router(mobile_registry, IngestSettings()).route(
        Incoming("sensors/lpp-noise/up", LPP_FIX, NOW, {})
    )
    assert isinstance(verdict, Accepted)
    assert verdict.kind == "noise"
    assert verdict.measurement.position is None
    assert verdict.measurement.values["laeq_db"] == 18.5
