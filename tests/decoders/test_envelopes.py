"""ChirpStack v4 and The Things Stack v3 uplink envelopes: documentation examples, omitted zero
fields, topics, errors, and round trips through the simulator builders."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoders import InvalidPayloadError
from decoders.envelopes import (
    CHIRPSTACK_UPLINK_SUBSCRIPTION,
    TTS_UPLINK_SUBSCRIPTION,
    GatewayRx,
    Uplink,
    chirpstack_uplink_json,
    chirpstack_uplink_topic,
    parse_chirpstack_uplink,
    parse_tts_uplink,
    parse_uplink,
    tts_uplink_json,
    tts_uplink_topic,
)

# payload-formats.md, from the ChirpStack documentation (shortened).
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

# payload-formats.md, from The Things Stack documentation (shortened).
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
