"""ChirpStack v4 and The Things Stack v3 uplink envelopes: documentation examples, omitted zero
fields, topics, errors, and round trips through the simulator builders."""

from __future__ import annotations

import binascii
import copy
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders import InvalidPayloadError, Position, envelopes
from decoders.envelopes import (
    CHIRPSTACK_UPLINK_SUBSCRIPTION,
    TTS_UPLINK_SUBSCRIPTION,
    GatewayRx,
    Uplink,
    _chirpstack_careful,
    _chirpstack_fast,
    _tts_careful,
    _tts_fast,
    chirpstack_uplink_json,
    chirpstack_uplink_topic,
    parse_chirpstack_uplink,
    parse_tts_uplink,
    parse_uplink,
    tts_uplink_json,
    tts_uplink_topic,
)
from tests._source import plain_python

# docs/payload-formats.md, from the ChirpStack documentation (shortened).
CHIRPSTACK_DOC = b"""{"deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
 "time": "2022-07-18T09:34:15.775023242+00:00",
 "deviceInfo": {"tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
   "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
   "deviceProfileName": "Test device-profile", "deviceName": "Test device",
   "devEui": "0101010101010101", "tags": {"key": "value"}},
 "devAddr": "00189440", "dr": 1, "fPort": 1, "data": "qg==",
 "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -36, "snr": 10.5}]}"""
CHIRPSTACK_TOPIC = (
    "application/17c82e96-be03-4f38-aef3-f83d48582d97/device/0101010101010101/event/up"
)

# docs/payload-formats.md, from The Things Stack documentation (shortened).
TTS_DOC = b"""{"end_device_ids": {"device_id": "dev1",
   "application_ids": {"application_id": "app1"},
   "dev_eui": "0004A30B001C0530", "dev_addr": "00BCB929"},
 "received_at": "2020-02-12T15:15:46.014773143Z",
 "uplink_message": {"f_port": 1, "f_cnt": 1, "frm_payload": "gkHe",
   "rx_metadata": [{"gateway_ids": {"gateway_id": "gtw1"}, "rssi": -35, "snr": 5}],
   "settings": {"frequency": "868300000"},
   "version_ids": {"brand_id": "the-things-products", "model_id": "the-things-uno"}}}"""


def test_chirpstack_documentation_example() -> None:
    uplink = parse_uplink(CHIRPSTACK_TOPIC, CHIRPSTACK_DOC)
    assert uplink == Uplink(
        network="chirpstack",
        application_id="17c82e96-be03-4f38-aef3-f83d48582d97",
        payload=b"\xaa",
        dev_eui="0101010101010101",
        device_name="Test device",
        tenant_id="52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        device_profile="Test device-profile",
        fport=1,
        fcnt=0,  # omitted: protobuf JSON drops zero values
        gateways=(GatewayRx("0016c001f153a14c", -36.0, 10.5),),
        received_at=datetime(2022, 7, 18, 9, 34, 15, 775023, tzinfo=UTC),
        dedup_id="3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    )
    assert uplink.idempotency_key == "0101010101010101:0:3ac7e3c4-4401-4b8d-9386-a5c902f9202d"


def test_tts_documentation_example() -> None:
    uplink = parse_uplink("v3/app1/devices/dev1/up", TTS_DOC)
    assert uplink == Uplink(
        network="tts",
        application_id="app1",
        payload=bytes.fromhex("8241de"),
        dev_eui="0004A30B001C0530",
        device_name="dev1",
        tenant_id=None,
        device_profile="the-things-products/the-things-uno",
        fport=1,
        fcnt=1,
        gateways=(GatewayRx("gtw1", -35.0, 5.0),),
        received_at=datetime(2020, 2, 12, 15, 15, 46, 14773, tzinfo=UTC),
        dedup_id=None,
    )
    assert uplink.idempotency_key == "0004A30B001C0530:1:"


def test_tts_multi_tenant_topic_and_correlation_id() -> None:
    body = orjson.loads(TTS_DOC)
    body["correlation_ids"] = ["gs:uplink:01G", "as:up:01E0WFRHXQ", "rpc:/ttn.v3/x"]
    del body["end_device_ids"]["dev_eui"]
    uplink = parse_uplink("v3/app1@city-tenant/devices/dev1/up", orjson.dumps(body))
    assert uplink.tenant_id == "city-tenant"
    assert uplink.application_id == "app1"
    assert uplink.dev_eui is None
    assert uplink.dedup_id == "as:up:01E0WFRHXQ"
    assert uplink.idempotency_key == "app1/dev1:1:as:up:01E0WFRHXQ"


def test_tts_first_correlation_id_without_as_up() -> None:
    body = orjson.loads(TTS_DOC)
    body["correlation_ids"] = ["gs:uplink:01G", "ns:uplink:01H"]
    assert parse_tts_uplink(orjson.dumps(body)).dedup_id == "gs:uplink:01G"


def test_omitted_zero_fields() -> None:
    chirpstack = parse_chirpstack_uplink(
        b'{"deviceInfo": {"applicationId": "a", "devEui": "0a0b0c0d0e0f1011"}, "data": "AQ==",'
        b' "rxInfo": [{"gatewayId": "g1"}, {"rssi": -90}]}'
    )
    assert chirpstack.fcnt == 0
    assert chirpstack.fport is None
    assert chirpstack.dev_eui == "0A0B0C0D0E0F1011"
    assert chirpstack.gateways == (GatewayRx("g1", 0.0, 0.0),)  # no gatewayId: dropped
    assert chirpstack.received_at is None
    assert chirpstack.dedup_id is None
    tts = parse_tts_uplink(
        b'{"end_device_ids": {"device_id": "d", "application_ids": {"application_id": "a"}},'
        b' "uplink_message": {"frm_payload": "AQ==", "received_at": "2024-05-01T12:00:00Z",'
        b' "rx_metadata": [{"gateway_ids": {"gateway_id": "g"}}]}}'
    )
    assert (tts.fcnt, tts.fport, tts.device_profile) == (0, None, None)
    assert tts.gateways == (GatewayRx("g", 0.0, 0.0),)
    assert tts.received_at == datetime(2024, 5, 1, 12, tzinfo=UTC)  # from uplink_message


def test_offset_times_become_utc() -> None:
    body = orjson.loads(CHIRPSTACK_DOC)
    body["time"] = "2022-07-18T11:34:15.123456789+02:00"
    uplink = parse_chirpstack_uplink(orjson.dumps(body))
    assert uplink.received_at == datetime(2022, 7, 18, 9, 34, 15, 123456, tzinfo=UTC)
    assert uplink.received_at is not None
    assert uplink.received_at.tzinfo is UTC


def test_topics() -> None:
    assert chirpstack_uplink_topic("app", "0A0B0C0D0E0F1011") == (
        "application/app/device/0a0b0c0d0e0f1011/event/up"
    )
    assert tts_uplink_topic("app1", "dev1") == "v3/app1/devices/dev1/up"
    assert tts_uplink_topic("app1", "dev1", "ttn") == "v3/app1@ttn/devices/dev1/up"
    assert CHIRPSTACK_UPLINK_SUBSCRIPTION == "application/+/device/+/event/up"
    assert TTS_UPLINK_SUBSCRIPTION == "v3/+/devices/+/up"


def _chirpstack_with(**changes: object) -> bytes:
    body = orjson.loads(CHIRPSTACK_DOC)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (_chirpstack_with(data=None), "no payload"),
        (_chirpstack_with(data="not base64!"), "not base64"),
        (_chirpstack_with(data=12), "not a string"),
        (_chirpstack_with(fCnt="7"), "not an integer"),
        (_chirpstack_with(fCnt=-1), "out of range"),
        (_chirpstack_with(fPort=300), "out of range"),
        (_chirpstack_with(time="yesterday"), "ISO 8601"),
        (_chirpstack_with(time="2022-07-18T09:34:15"), "no UTC offset"),
        (_chirpstack_with(rxInfo={"gatewayId": "g"}), "not a list"),
        (_chirpstack_with(deviceInfo={"applicationId": "a"}), "devEui"),
        (_chirpstack_with(deviceInfo={"applicationId": "a", "devEui": "xyz"}), "16 hex"),
    ],
)
def test_chirpstack_errors(body: bytes, match: str) -> None:
    with pytest.raises(InvalidPayloadError, match=match) as caught:
        parse_chirpstack_uplink(body)
    assert caught.value.codec == "chirpstack"
    assert caught.value.reason == "invalid"


def test_chirpstack_topic_mismatch() -> None:
    topic = "application/a/device/0202020202020202/event/up"
    with pytest.raises(InvalidPayloadError, match="differs"):
        parse_chirpstack_uplink(CHIRPSTACK_DOC, topic)


@pytest.mark.parametrize(
    ("body", "topic", "match"),
    [
        (b'{"uplink_message": {"frm_payload": "AQ=="}}', None, "device_id"),
        (TTS_DOC.replace(b'"frm_payload": "gkHe",', b""), None, "no payload"),
        (TTS_DOC.replace(b'"gkHe"', b'"gk=He"'), None, "not base64"),
        (TTS_DOC.replace(b'"f_cnt": 1', b'"f_cnt": true'), None, "not an integer"),
        (TTS_DOC, "v3/app2/devices/dev1/up", "differ"),
        (TTS_DOC, "v3/app1/devices/dev1/down", "not a The Things Stack"),
        (TTS_DOC.replace(b"Z", b""), None, "no UTC offset"),
    ],
)
def test_tts_errors(body: bytes, topic: str | None, match: str) -> None:
    with pytest.raises(InvalidPayloadError, match=match) as caught:
        parse_tts_uplink(body, topic)
    assert caught.value.codec == "tts"


def test_unknown_topic() -> None:
    with pytest.raises(InvalidPayloadError, match="no known uplink topic"):
        parse_uplink("sensors/raw/x", b"{}")


def test_builders_omit_zero_fields_like_the_servers() -> None:
    uplink = Uplink(network="chirpstack", application_id="a", payload=b"\x01", dev_eui="0A" * 8)
    body = orjson.loads(chirpstack_uplink_json(uplink))
    assert body == {"deviceInfo": {"applicationId": "a", "devEui": "0a" * 8}, "data": "AQ=="}
    tts = Uplink(network="tts", application_id="a", payload=b"\x01", device_name="d", fcnt=3)
    assert orjson.loads(tts_uplink_json(tts)) == {
        "end_device_ids": {"device_id": "d", "application_ids": {"application_id": "a"}},
        "uplink_message": {"f_cnt": 3, "frm_payload": "AQ=="},
    }


def test_builders_reject_what_the_format_cannot_say() -> None:
    with pytest.raises(ValueError, match="devEUI"):
        chirpstack_uplink_json(Uplink(network="chirpstack", application_id="a", payload=b"x"))
    with pytest.raises(ValueError, match="device id"):
        tts_uplink_json(Uplink(network="tts", application_id="a", payload=b"x"))
    with pytest.raises(ValueError, match="brand_id"):
        tts_uplink_json(
            Uplink(
                network="tts", application_id="a", payload=b"x", device_name="d", device_profile="x"
            )
        )


# ---- Round trips through the builders.
IDENT = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
EUI = st.binary(min_size=8, max_size=8).map(lambda b: b.hex().upper())
GATEWAYS = st.lists(
    st.builds(
        GatewayRx,
        IDENT,
        st.integers(-140, 0).map(float),
        st.floats(-25, 15, allow_nan=False).map(lambda snr: round(snr, 1)),
    ),
    max_size=3,
).map(tuple)
TIMES = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive by API
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
COMMON = {
    "application_id": IDENT,
    "payload": st.binary(min_size=1, max_size=64),
    "fport": st.none() | st.integers(1, 255),
    "fcnt": st.integers(0, 2**32 - 1),
    "gateways": GATEWAYS,
    "received_at": TIMES,
    "dedup_id": st.none() | st.uuids().map(str),
}


@given(
    st.builds(
        Uplink,
        network=st.just("chirpstack"),
        dev_eui=EUI,
        device_name=st.none() | IDENT,
        tenant_id=st.none() | IDENT,
        device_profile=st.none() | st.text(min_size=1, max_size=30),
        **COMMON,
    )
)
def test_chirpstack_builder_roundtrip(uplink: Uplink) -> None:
    assert uplink.dev_eui is not None
    topic = chirpstack_uplink_topic(uplink.application_id, uplink.dev_eui)
    assert parse_uplink(topic, chirpstack_uplink_json(uplink)) == uplink


@given(
    st.builds(
        Uplink,
        network=st.just("tts"),
        dev_eui=st.none() | EUI,
        device_name=IDENT,
        tenant_id=st.none() | IDENT,
        device_profile=st.none() | st.builds("{}/{}".format, IDENT, IDENT),
        **COMMON,
    )
)
def test_tts_builder_roundtrip(uplink: Uplink) -> None:
    assert uplink.device_name is not None
    topic = tts_uplink_topic(uplink.application_id, uplink.device_name, uplink.tenant_id)
    assert parse_uplink(topic, tts_uplink_json(uplink)) == uplink


# ---- Fast paths and careful parsers.
#
# Each parser tries a fast path first and hands anything unusual to its careful parser, the
# reference. The tests below hold them to it: whatever the builders write takes the fast path,
# with any time format the servers use; wherever the fast path answers, the careful parser gives
# the same Uplink, and wherever the careful parser raises, the fast path declines; malformed
# variants raise InvalidPayloadError naming the field.

JsonPath = tuple[str | int, ...]
DELETE = object()  # a mutation that removes the value


def _put(body: dict[str, Any], path: JsonPath, value: object) -> bool:
    """Set a copy of ``value`` (or DELETE) at ``path``, making missing objects on the way; False
    if the path runs through something else."""
    *parents, last = path
    if value is not DELETE:
        value = copy.deepcopy(value)  # examples share the strategies' lists and dicts
    node: Any = body
    for key in parents:
        if isinstance(key, str) and isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(key, int) and isinstance(node, list) and key < len(node):
            node = node[key]
        else:
            return False
    if isinstance(last, str) and isinstance(node, dict):
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
        return True
    if isinstance(last, int) and isinstance(node, list) and last < len(node):
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
        return True
    return False


def _outcome(parse: Callable[[], Uplink]) -> Uplink | str:
    try:
        return parse()
    except InvalidPayloadError as exc:
        return f"InvalidPayloadError: {exc}"


def _is_base64(text: str) -> bool:
    try:
        binascii.a2b_base64(text, strict_mode=True)
    except ValueError:
        return False
    return True


def _is_utc_time(text: str) -> bool:
    try:
        moment = datetime.fromisoformat(text)
        moment.astimezone(UTC)  # OverflowError when the offset pushes it past year 1 or 9999
    except (ValueError, OverflowError):
        return False
    return moment.tzinfo is not None


CHIRPSTACK_UPLINKS = st.builds(
    Uplink,
    network=st.just("chirpstack"),
    dev_eui=EUI,
    device_name=st.none() | IDENT,
    tenant_id=st.none() | IDENT,
    device_profile=st.none() | st.text(min_size=1, max_size=30),
    **COMMON,
)
LOCATIONS = st.none() | st.builds(
    Position,
    st.floats(-90, 90, allow_nan=False),
    st.floats(-180, 180, allow_nan=False),
    st.none() | st.floats(0.5, 5000, allow_nan=False),
)
TTS_UPLINKS = st.builds(
    Uplink,
    network=st.just("tts"),
    location=LOCATIONS,
    dev_eui=st.none() | EUI,
    device_name=IDENT,
    tenant_id=st.none() | IDENT,
    device_profile=st.none() | st.builds("{}/{}".format, IDENT, IDENT),
    dedup_id=st.none() | st.uuids().map(str) | st.builds("as:up:{}".format, IDENT),
    **{k: v for k, v in COMMON.items() if k != "dedup_id"},
)


@dataclass(frozen=True)
class Format:
    """One network server's envelope, for the tests below."""

    network: str
    uplinks: st.SearchStrategy[Uplink]
    build: Callable[[Uplink], bytes]
    parse: Callable[[bytes, str | None], Uplink]
    fast: Callable[[dict[str, Any], str | None], Uplink | None]
    careful: Callable[[dict[str, Any], str | None], Uplink]
    payload: JsonPath
    time: JsonPath
    #: Where each field lives, its name in error messages, and wrong values it must refuse.
    typed_fields: tuple[tuple[JsonPath, str, tuple[object, ...]], ...]
    topics: tuple[str, ...]

    def topic(self, uplink: Uplink) -> str:
        if self.network == "chirpstack":
            assert uplink.dev_eui is not None
            return chirpstack_uplink_topic(uplink.application_id, uplink.dev_eui)
        assert uplink.device_name is not None
        return tts_uplink_topic(uplink.application_id, uplink.device_name, uplink.tenant_id)


# Wrong values by the type a field wants. None is "omitted", never wrong; a nested object that is
# falsy (0, "", [], {}) reads as an empty object; a list item must be an object, even null.
NOT_TEXT: tuple[object, ...] = (0, 7, 1.5, True, False, [], ["x"], {}, {"a": "x"})
NOT_INTEGER: tuple[object, ...] = (1.5, -0.0, True, False, "7", "", [], [1], {})
NOT_NUMBER: tuple[object, ...] = (True, False, "-90", "", [], [1], {})
NOT_LIST: tuple[object, ...] = (0, 1, True, False, "", "x", {}, {"a": 1})
NOT_OBJECT: tuple[object, ...] = (1, 1.5, True, "x", ["x"])
NOT_ITEM_OBJECT: tuple[object, ...] = (None, 0, 1, True, False, "", "x", [], ["x"])
NOT_TEXT_LIST: tuple[object, ...] = (1, True, "x", {"a": "x"}, [1], ["as:up:1", None], [["x"]])

CHIRPSTACK = Format(
    network="chirpstack",
    uplinks=CHIRPSTACK_UPLINKS,
    build=chirpstack_uplink_json,
    parse=parse_chirpstack_uplink,
    fast=_chirpstack_fast,
    careful=_chirpstack_careful,
    payload=("data",),
    time=("time",),
    typed_fields=(
        (("deviceInfo",), "deviceInfo", NOT_OBJECT),
        (("deviceInfo", "applicationId"), "deviceInfo.applicationId", NOT_TEXT),
        (("deviceInfo", "devEui"), "deviceInfo.devEui", NOT_TEXT),
        (("deviceInfo", "deviceName"), "deviceInfo.deviceName", NOT_TEXT),
        (("deviceInfo", "tenantId"), "deviceInfo.tenantId", NOT_TEXT),
        (("deviceInfo", "deviceProfileName"), "deviceInfo.deviceProfileName", NOT_TEXT),
        (("data",), "data", NOT_TEXT),
        (("fPort",), "fPort", NOT_INTEGER),
        (("fCnt",), "fCnt", NOT_INTEGER),
        (("time",), "time", NOT_TEXT),
        (("deduplicationId",), "deduplicationId", NOT_TEXT),
        (("rxInfo",), "rxInfo", NOT_LIST),
        (("rxInfo", 0), "rxInfo[0]", NOT_ITEM_OBJECT),
        (("rxInfo", 0, "gatewayId"), "rxInfo[0].gatewayId", NOT_TEXT),
        (("rxInfo", 0, "rssi"), "rxInfo[0].rssi", NOT_NUMBER),
        (("rxInfo", 0, "snr"), "rxInfo[0].snr", NOT_NUMBER),
    ),
    topics=(
        "application/a/device/0101010101010101/event/up",
        "application/a/device/0a0b0c0d0e0f1011/event/up",
        "application//device/0101010101010101/event/up",
        "application/a/device//event/up",
        "application/a/device/0101010101010101/event/upx",
        "application/a/b/device/0101010101010101/event/up",
        "application/a/device/0101010101010101/event/up/",
        "application/a/device/010101010101010g/event/up",
        "v3/app1/devices/dev1/up",
    ),
)
TTS = Format(
    network="tts",
    uplinks=TTS_UPLINKS,
    build=tts_uplink_json,
    parse=parse_tts_uplink,
    fast=_tts_fast,
    careful=_tts_careful,
    payload=("uplink_message", "frm_payload"),
    time=("received_at",),
    typed_fields=(
        (("end_device_ids",), "end_device_ids", NOT_OBJECT),
        (("end_device_ids", "device_id"), "end_device_ids.device_id", NOT_TEXT),
        (("end_device_ids", "application_ids"), "end_device_ids.application_ids", NOT_OBJECT),
        (
            ("end_device_ids", "application_ids", "application_id"),
            "end_device_ids.application_ids.application_id",
            NOT_TEXT,
        ),
        (("end_device_ids", "dev_eui"), "end_device_ids.dev_eui", NOT_TEXT),
        (("correlation_ids",), "correlation_ids", NOT_TEXT_LIST),
        (("received_at",), "received_at", NOT_TEXT),
        (("uplink_message",), "uplink_message", NOT_OBJECT),
        (("uplink_message", "f_port"), "uplink_message.f_port", NOT_INTEGER),
        (("uplink_message", "f_cnt"), "uplink_message.f_cnt", NOT_INTEGER),
        (("uplink_message", "frm_payload"), "uplink_message.frm_payload", NOT_TEXT),
        (("uplink_message", "received_at"), "uplink_message.received_at", NOT_TEXT),
        (("uplink_message", "rx_metadata"), "uplink_message.rx_metadata", NOT_LIST),
        (("uplink_message", "rx_metadata", 0), "uplink_message.rx_metadata[0]", NOT_ITEM_OBJECT),
        (
            ("uplink_message", "rx_metadata", 0, "gateway_ids"),
            "uplink_message.rx_metadata[0].gateway_ids",
            NOT_OBJECT,
        ),
        (
            ("uplink_message", "rx_metadata", 0, "gateway_ids", "gateway_id"),
            "uplink_message.rx_metadata[0].gateway_ids.gateway_id",
            NOT_TEXT,
        ),
        (
            ("uplink_message", "rx_metadata", 0, "rssi"),
            "uplink_message.rx_metadata[0].rssi",
            NOT_NUMBER,
        ),
        (
            ("uplink_message", "rx_metadata", 0, "snr"),
            "uplink_message.rx_metadata[0].snr",
            NOT_NUMBER,
        ),
        (("uplink_message", "version_ids"), "uplink_message.version_ids", NOT_OBJECT),
        (
            ("uplink_message", "version_ids", "brand_id"),
            "uplink_message.version_ids.brand_id",
            NOT_TEXT,
        ),
        (
            ("uplink_message", "version_ids", "model_id"),
            "uplink_message.version_ids.model_id",
            NOT_TEXT,
        ),
        (("uplink_message", "locations"), "uplink_message.locations", NOT_OBJECT),
        (
            ("uplink_message", "locations", "frm-payload"),
            "uplink_message.locations.frm-payload",
            NOT_OBJECT,
        ),
        (
            ("uplink_message", "locations", "frm-payload", "latitude"),
            "uplink_message.locations.frm-payload.latitude",
            NOT_NUMBER,
        ),
        (
            ("uplink_message", "locations", "frm-payload", "longitude"),
            "uplink_message.locations.frm-payload.longitude",
            NOT_NUMBER,
        ),
        (
            ("uplink_message", "locations", "frm-payload", "accuracy"),
            "uplink_message.locations.frm-payload.accuracy",
            NOT_NUMBER,
        ),
    ),
    topics=(
        "v3/app1/devices/dev1/up",
        "v3/app1@t/devices/dev1/up",
        "v3/a@b@c/devices/dev1/up",
        "v3/app1@/devices/dev1/up",
        "v3/@t/devices/dev1/up",
        "v3//devices/dev1/up",
        "v3/app1/devices//up",
        "v3/app1/device/dev1/up",
        "v3/app1/devices/dev1/up/",
        "application/a/device/0101010101010101/event/up",
    ),
)
FORMATS = {"chirpstack": CHIRPSTACK, "tts": TTS}
NETWORKS = pytest.mark.parametrize("network", list(FORMATS))


@NETWORKS
@given(data=st.data())
def test_builder_output_takes_the_fast_path(network: str, data: st.DataObject) -> None:
    fmt = FORMATS[network]
    uplink = data.draw(fmt.uplinks)
    topic = data.draw(st.sampled_from([fmt.topic(uplink), None]))
    if topic is None and fmt is TTS:
        uplink = replace(uplink, tenant_id=None)  # only the topic names the tenant
    event = orjson.loads(fmt.build(uplink))
    assert fmt.fast(event, topic) == uplink
    assert fmt.careful(event, topic) == uplink


@st.composite
def server_times(draw: st.DrawFn) -> tuple[str, datetime]:
    """A time as the servers write it (any offset, 0 to 9 fraction digits), and its UTC value."""
    moment = draw(TIMES.filter(lambda t: t is not None))
    assert moment is not None
    offset = timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60)))
    digits = draw(st.integers(0, 9))
    nanoseconds = moment.microsecond * 1000 + draw(st.integers(0, 999))
    fraction = f".{nanoseconds:09d}"[: digits + 1] if digits else ""
    local = moment.astimezone(timezone(offset))
    sign, minutes = ("-", -offset) if offset < timedelta(0) else ("+", offset)
    hours, rest = divmod(int(minutes.total_seconds()) // 60, 60)
    zone = draw(st.sampled_from(["Z", "+00:00"])) if not offset else f"{sign}{hours:02d}:{rest:02d}"
    text = f"{local:%Y-%m-%dT%H:%M:%S}{fraction}{zone}"
    kept = int(f"{nanoseconds:09d}"[:digits].ljust(6, "0")[:6]) if digits else 0
    return text, moment.replace(microsecond=kept)


@NETWORKS
@given(data=st.data(), time=server_times())
def test_server_times_take_the_fast_path(
    network: str, data: st.DataObject, time: tuple[str, datetime]
) -> None:
    fmt = FORMATS[network]
    uplink = data.draw(fmt.uplinks)
    event = orjson.loads(fmt.build(uplink))
    text, expected = time
    _put(event, fmt.time, text)
    parsed = fmt.fast(event, fmt.topic(uplink))
    assert parsed is not None
    assert parsed.received_at == expected
    assert parsed.received_at.tzinfo is UTC
    assert parsed == fmt.careful(event, fmt.topic(uplink))


EDGE_VALUES: list[object] = [
    *(None, 0, 1, -1, 255, 256, 2**32 - 1, 2**32, 2**64 - 1, 1.5, -0.0, True, False, DELETE),
    *("", "x", "AQ==", "AQ=", "AQ==é", "as:up:01X", "0A0B0C0D0E0F101", "ﬀ0A0B0C0D0E0F10"),
    *("010101010101010G", " 0101010101010101"),
    *("0101010101010101", "0a0b0c0d0e0f1011", "2024-05-01T12:00:00", "2024-05-01T12:00:00Z"),
    *("2024-05-01T14:00:00.123456789+02:00", "0001-01-01T00:30:00+01:00", "app1", "dev1"),
    *([], {}, ["x"], ["gs:1", "as:up:2"], [""], [1], [{}], [None], {"a": "x"}),
    *([{"gatewayId": "g"}, {"gatewayId": ""}], [{"gateway_ids": {"gateway_id": "g"}, "snr": -1}]),
    *({"gateway_id": ""}, {"application_id": "app1"}, {"brand_id": "b"}),
]


def _agree(fmt: Format, raw: bytes, topic: str | None) -> None:
    """Where the fast path answers, the careful parser gives the same; where the careful parser
    raises, the fast path declines; either way the public parser says what the careful one says."""
    careful = _outcome(lambda: fmt.careful(orjson.loads(raw), topic))
    fast = fmt.fast(orjson.loads(raw), topic)
    if fast is not None:
        assert careful == fast, (raw, topic)
    if isinstance(careful, str):
        assert fast is None, (raw, topic, careful)
    assert _outcome(lambda: fmt.parse(raw, topic)) == careful


RICH_CHIRPSTACK = Uplink(
    network="chirpstack",
    application_id="city",
    payload=b"\x01\x02",
    dev_eui="0A0B0C0D0E0F1011",
    device_name="noise-1",
    tenant_id="ville",
    device_profile="acme/nm-1",
    fport=5,
    fcnt=7,
    gateways=(GatewayRx("gw-1", -90.0, 7.5), GatewayRx("gw-2")),
    received_at=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
    dedup_id="as:up:01X",
)
RICH_TTS = replace(RICH_CHIRPSTACK, network="tts", location=Position(48.8584, 2.3488, 6.5))
TTS_LATE = orjson.loads(tts_uplink_json(RICH_TTS))
del TTS_LATE["received_at"]  # the uplink message's own received_at counts instead
TTS_WITH_IDS = orjson.loads(TTS_DOC)
TTS_WITH_IDS["correlation_ids"] = ["gs:uplink:01G", "as:up:01E0WFRHXQ"]
#: Envelopes to change one field at a time, with their topics.
EXAMPLES = {
    "chirpstack": [
        (CHIRPSTACK_DOC, CHIRPSTACK_TOPIC),
        (chirpstack_uplink_json(RICH_CHIRPSTACK), CHIRPSTACK.topic(RICH_CHIRPSTACK)),
        (
            b'{"deviceInfo": {"applicationId": "a", "devEui": "0101010101010101"}, "data": "AQ=="}',
            "application/a/device/0101010101010101/event/up",
        ),
    ],
    "tts": [
        (orjson.dumps(TTS_WITH_IDS), "v3/app1/devices/dev1/up"),
        (tts_uplink_json(RICH_TTS), TTS.topic(RICH_TTS)),
        (orjson.dumps(TTS_LATE), TTS.topic(RICH_TTS)),
        (
            b'{"end_device_ids": {"device_id": "dev1", "application_ids": {"application_id":'
            b' "app1"}}, "uplink_message": {"frm_payload": "AQ=="}}',
            "v3/app1/devices/dev1/up",
        ),
    ],
}


@NETWORKS
def test_fast_paths_agree_on_every_single_change(network: str) -> None:
    """Each example, each field set to each edge or wrong value in turn, with and without its
    topic; and each example under each topic variant."""
    fmt = FORMATS[network]
    for raw, topic in EXAMPLES[network]:
        for variant in (topic, None, *fmt.topics):
            _agree(fmt, raw, variant)
        for path, _, wrong in fmt.typed_fields:
            for value in (*EDGE_VALUES, *wrong):
                body = orjson.loads(raw)
                if _put(body, path, value):
                    _agree(fmt, orjson.dumps(body), topic)
                    _agree(fmt, orjson.dumps(body), None)


@NETWORKS
@settings(max_examples=300)
@given(data=st.data())
def test_fast_paths_agree_with_the_careful_parsers(network: str, data: st.DataObject) -> None:
    """As above, for random uplinks with up to three changes at once, under any topic."""
    fmt = FORMATS[network]
    uplink = data.draw(fmt.uplinks)
    body = orjson.loads(fmt.build(uplink))
    paths = [path for path, _, _ in fmt.typed_fields]
    values = st.sampled_from(EDGE_VALUES) | st.text(max_size=20) | st.integers(-(2**63), 2**64 - 1)
    for _ in range(data.draw(st.integers(1, 3))):
        _put(body, data.draw(st.sampled_from(paths)), data.draw(values))
    topic = data.draw(st.sampled_from([fmt.topic(uplink), None, *fmt.topics]))
    _agree(fmt, orjson.dumps(body), topic)


@NETWORKS
@given(data=st.data())
def test_wrong_types_name_the_field(network: str, data: st.DataObject) -> None:
    fmt = FORMATS[network]
    uplink = data.draw(fmt.uplinks.filter(lambda u: len(u.gateways) > 0))
    path, name, wrong = data.draw(st.sampled_from(fmt.typed_fields))
    body = orjson.loads(fmt.build(uplink))
    if path == ("uplink_message", "received_at"):
        body.pop("received_at", None)  # read only when the event's own time is missing
    assert _put(body, path, data.draw(st.sampled_from(wrong)))
    topic = data.draw(st.sampled_from([fmt.topic(uplink), None]))
    with pytest.raises(InvalidPayloadError, match=rf"{re.escape(name)}\.? is not ") as caught:
        fmt.parse(orjson.dumps(body), topic)
    assert caught.value.codec == fmt.network


NOT_BASE64 = st.sampled_from(["not base64!", "AQ=", "A===", "=AQ=", "AQ==é", "AQ==\n", "gk=He"]) | (
    st.text(min_size=1, max_size=20).filter(lambda text: not _is_base64(text))
)
BAD_TIMES = st.sampled_from(
    [
        "yesterday",
        "2022-07-18T09:34:15",
        "2024-05-01",
        "2024-13-01T00:00:00Z",
        "2024-05-01T12:00:00+25:00",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:59:59-01:00",
    ]
) | st.text(min_size=1, max_size=30).filter(lambda text: not _is_utc_time(text))


@NETWORKS
@given(data=st.data())
def test_bad_payloads_and_times_name_the_field(network: str, data: st.DataObject) -> None:
    fmt = FORMATS[network]
    uplink = data.draw(fmt.uplinks)
    topic = data.draw(st.sampled_from([fmt.topic(uplink), None]))
    payload_key = ".".join(map(str, fmt.payload))
    time_key = ".".join(map(str, fmt.time))
    missing = orjson.loads(fmt.build(uplink))
    _put(missing, fmt.payload, data.draw(st.sampled_from([DELETE, None, ""])))
    with pytest.raises(InvalidPayloadError, match=re.escape(f"no payload ({payload_key} missing)")):
        fmt.parse(orjson.dumps(missing), topic)
    garbled = orjson.loads(fmt.build(uplink))
    _put(garbled, fmt.payload, data.draw(NOT_BASE64))
    with pytest.raises(InvalidPayloadError, match=rf"{re.escape(payload_key)} is not base64"):
        fmt.parse(orjson.dumps(garbled), topic)
    late = orjson.loads(fmt.build(uplink))
    _put(late, fmt.time, data.draw(BAD_TIMES))
    why = "is not an ISO 8601 time|has no UTC offset|is out of range in UTC"
    with pytest.raises(InvalidPayloadError, match=rf"{re.escape(time_key)} .*({why})"):
        fmt.parse(orjson.dumps(late), topic)


#: The module as imported (compiled by ``make native`` when built) and run from its source: the
#: builders take a different path in each.
ENVELOPE_MODULES = {"imported": envelopes, "source": plain_python(envelopes)}


@pytest.mark.parametrize("module", ENVELOPE_MODULES.values(), ids=ENVELOPE_MODULES.keys())
@given(uplink=CHIRPSTACK_UPLINKS | TTS_UPLINKS)
def test_slots_classes_store_every_field(module: ModuleType, uplink: Uplink) -> None:
    """``Uplink`` and ``GatewayRx`` spell out their ``__init__`` and ``__hash__``: a field they
    forget fails here (unset, or unequal)."""
    uplink_class, gateway_class = module.Uplink, module.GatewayRx
    assert list(inspect.signature(uplink_class).parameters) == [
        f.name for f in fields(uplink_class)
    ]
    assert list(inspect.signature(gateway_class).parameters) == [
        f.name for f in fields(gateway_class)
    ]
    values = {f.name: getattr(uplink, f.name) for f in fields(Uplink)}
    gateways = tuple(gateway_class(g.gateway_id, g.rssi, g.snr) for g in uplink.gateways)
    built = uplink_class(*(values | {"gateways": gateways}).values())
    again = uplink_class(**(values | {"gateways": gateways}))
    assert built == again
    assert hash(built) == hash(again)
    assert repr(built) == repr(again)
    assert [getattr(built, name) for name in values if name != "gateways"] == [
        value for name, value in values.items() if name != "gateways"
    ]
    for gateway, original in zip(built.gateways, uplink.gateways, strict=True):
        assert (gateway.gateway_id, gateway.rssi, gateway.snr) == (
            original.gateway_id,
            original.rssi,
            original.snr,
        )
        assert hash(gateway) == hash(
            gateway_class(original.gateway_id, original.rssi, original.snr)
        )


# ---- Device locations (TTS uplink_message.locations).


def _tts_with_locations(locations: object) -> bytes:
    body = orjson.loads(tts_uplink_json(replace(RICH_TTS, location=None)))
    body["uplink_message"]["locations"] = locations
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("locations", "expected"),
    [
        # The data formats page's shape: the registry's ("user") and the payload's position.
        (
            {
                "user": {"latitude": 48.1, "longitude": 2.1, "source": "SOURCE_REGISTRY"},
                "frm-payload": {"latitude": 48.8584, "longitude": 2.3488, "accuracy": 7},
            },
            Position(48.8584, 2.3488, 7.0),
        ),
        (
            {"user": {"latitude": 48.1, "longitude": 2.1, "altitude": 35}},
            Position(48.1, 2.1, None),
        ),
        (
            {"user": {"latitude": 48.1, "longitude": 2.1}, "lora-rss": {"latitude": 48.2}},
            Position(48.2, 0.0, None),
        ),
        ({}, None),
        (None, None),
    ],
    ids=["frm-payload-wins", "user-only", "other-before-user", "empty", "null"],
)
def test_tts_device_location(locations: object, expected: Position | None) -> None:
    raw = _tts_with_locations(locations)
    topic = TTS.topic(RICH_TTS)
    assert parse_tts_uplink(raw, topic).location == expected
    _agree(TTS, raw, topic)


def test_chirpstack_up_events_carry_no_device_location() -> None:
    uplink = parse_chirpstack_uplink(chirpstack_uplink_json(RICH_CHIRPSTACK))
    assert uplink.location is None
