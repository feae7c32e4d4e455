"""LoRaWAN network-server uplink envelopes over MQTT: ChirpStack v4 and The Things Stack v3.

Source: payload-formats.md "How LoRaWAN payloads arrive over MQTT", the ChirpStack v4 event
documentation (``integrations/events``, JSON of ``integration.UplinkEvent``) and The Things Stack's
MQTT server documentation (``ApplicationUp`` with ``uplink_message``).

- ChirpStack v4, topic ``application/<application id>/device/<devEui>/event/up``: protobuf JSON
  mapping, camelCase, fields equal to their zero value are omitted. ``deduplicationId``, ``time``,
  ``deviceInfo{tenantId, applicationId, deviceProfileName, deviceName, devEui}``, ``fCnt``,
  ``fPort``, ``data`` (base64), ``rxInfo[]{gatewayId, rssi, snr}``.
- The Things Stack v3, topic ``v3/<application id>[@<tenant id>]/devices/<device id>/up``:
  ``end_device_ids{device_id, application_ids{application_id}, dev_eui}``, ``correlation_ids[]``,
  ``received_at``, ``uplink_message{f_port, f_cnt, frm_payload (base64), rx_metadata[
  {gateway_ids{gateway_id}, rssi, snr}], received_at, version_ids{brand_id, model_id}}``; empty
  fields are omitted too.

Both omit zero values, so a missing ``fCnt``/``f_cnt``, ``rssi`` or ``snr`` is 0; a missing fPort
is kept as None (unknown: the codec accepts it). A missing payload is an error: with nothing to
decode the uplink cannot become a measurement. Timestamps must carry an offset; digits beyond
microseconds are truncated (``datetime.fromisoformat`` does so since Python 3.11). The server's own
decoded ``object``/``decoded_payload`` is ignored: we decode ``data`` ourselves.

Idempotency: :attr:`Uplink.idempotency_key` is ``<device>:<fCnt>:<dedup id>`` with the device's
upper-case DevEUI (or ``<application>/<device id>`` for a TTS device without one) and the
ChirpStack ``deduplicationId`` / TTS ``as:up:`` correlation id. A broker redelivery repeats all
three; a device that rejoins restarts fCnt at 0 but gets a new dedup id, so it is not mistaken for
a duplicate. Without a dedup id the key ends in ``:`` and falls back to (device, fCnt).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from decoders._model import InvalidPayloadError

__all__ = [
    "CHIRPSTACK_UPLINK_SUBSCRIPTION",
    "TTS_UPLINK_SUBSCRIPTION",
    "GatewayRx",
    "Network",
    "Uplink",
    "chirpstack_uplink_json",
    "chirpstack_uplink_topic",
    "parse_chirpstack_uplink",
    "parse_tts_uplink",
    "parse_uplink",
    "tts_uplink_json",
    "tts_uplink_topic",
]

Network = Literal["chirpstack", "tts"]
CHIRPSTACK_UPLINK_SUBSCRIPTION = "application/+/device/+/event/up"
TTS_UPLINK_SUBSCRIPTION = "v3/+/devices/+/up"
_CHIRPSTACK_TOPIC = re.compile(r"application/(?P<app>[^/]+)/device/(?P<dev_eui>[^/]+)/event/up")
_TTS_TOPIC = re.compile(r"v3/(?P<app>[^/@]+)(?:@(?P<tenant>[^/]+))?/devices/(?P<device>[^/]+)/up")
_EUI = re.compile(r"[0-9A-F]{16}")


@dataclass(frozen=True, slots=True)
class GatewayRx:
    """One gateway that heard the uplink; rssi in dBm, snr in dB (0 when the server omits them)."""

    gateway_id: str
    rssi: float = 0.0
    snr: float = 0.0


@dataclass(frozen=True, slots=True)
class Uplink:
    """A LoRaWAN uplink as a network server published it, before decoding.

    ``device_name`` is ChirpStack's ``deviceName`` or TTS's ``device_id``; ``device_profile`` is
    ChirpStack's ``deviceProfileName`` or TTS's ``<brand_id>/<model_id>``; ``tenant_id`` is
    ChirpStack's ``tenantId`` or the ``@tenant`` of the TTS topic.
    """

    network: Network
    application_id: str
    payload: bytes
    dev_eui: str | None = None
    device_name: str | None = None
    tenant_id: str | None = None
    device_profile: str | None = None
    fport: int | None = None
    fcnt: int = 0
    gateways: tuple[GatewayRx, ...] = ()
    received_at: datetime | None = None
    dedup_id: str | None = None

    @property
    def idempotency_key(self) -> str:
        device = self.dev_eui or f"{self.application_id}/{self.device_name}"
        return f"{device}:{self.fcnt}:{self.dedup_id or ''}"


class _Fields:
    """Typed, error-raising access to one JSON object of an envelope."""

    __slots__ = ("network", "obj", "path")

    def __init__(self, network: Network, obj: object, path: str) -> None:
        if not isinstance(obj, dict):
            raise _invalid(network, f"{path or 'body'} is not a JSON object")
        self.network = network
        self.obj: dict[str, Any] = obj
        self.path = path

    def _get(self, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = self.obj.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise _invalid(self.network, f"{self.path}{key} is not {what}")
        return value

    def text(self, key: str) -> str | None:
        value: str | None = self._get(key, str, "a string")
        return value or None

    def integer(self, key: str) -> int | None:
        value: int | None = self._get(key, int, "an integer")
        return value

    def number(self, key: str) -> float:
        value: float | None = self._get(key, (int, float), "a number")
        return float(value or 0)

    def sub(self, key: str) -> _Fields:
        return _Fields(self.network, self.obj.get(key) or {}, f"{self.path}{key}.")

    def objects(self, key: str) -> list[_Fields]:
        value = self._get(key, list, "a list") or []
        path = f"{self.path}{key}"
        return [_Fields(self.network, item, f"{path}[{i}].") for i, item in enumerate(value)]


def _invalid(network: Network, detail: str) -> InvalidPayloadError:
    return InvalidPayloadError(network, None, detail)


def _load(network: Network, body: bytes) -> _Fields:
    try:
        return _Fields(network, orjson.loads(body), "")
    except orjson.JSONDecodeError as exc:
        raise _invalid(network, f"invalid JSON: {exc}") from exc


def _payload(network: Network, text: str | None, key: str) -> bytes:
    if text is None:
        raise _invalid(network, f"no payload ({key} missing)")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise _invalid(network, f"{key} is not base64: {exc}") from exc


def _timestamp(network: Network, text: str | None, key: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _invalid(network, f"{key} {text!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise _invalid(network, f"{key} {text!r} has no UTC offset")
    return moment.astimezone(UTC)


def _dev_eui(network: Network, text: str | None) -> str | None:
    if text is None:
        return None
    eui = text.upper()
    if not _EUI.fullmatch(eui):
        raise _invalid(network, f"devEUI {text!r} is not 16 hex digits")
    return eui


def _fcnt(network: Network, fields: _Fields, key: str) -> int:
    fcnt = fields.integer(key) or 0
    if not 0 <= fcnt <= 0xFFFFFFFF:
        raise _invalid(network, f"{key} {fcnt} out of range")
    return fcnt


def _fport(network: Network, fields: _Fields, key: str) -> int | None:
    fport = fields.integer(key)
    if fport is not None and not 0 <= fport <= 255:
        raise _invalid(network, f"{key} {fport} out of range")
    return fport


def parse_chirpstack_uplink(body: bytes, topic: str | None = None) -> Uplink:
    """Parse a ChirpStack v4 ``event/up`` JSON body; ``topic`` fills and cross-checks ids."""
    event = _load("chirpstack", body)
    info = event.sub("deviceInfo")
    application_id = info.text("applicationId")
    dev_eui = _dev_eui("chirpstack", info.text("devEui"))
    if topic is not None:
        match = _CHIRPSTACK_TOPIC.fullmatch(topic)
        if match is None:
            raise _invalid("chirpstack", f"topic {topic!r} is not a ChirpStack uplink topic")
        topic_eui = _dev_eui("chirpstack", match["dev_eui"])
        if dev_eui is not None and dev_eui != topic_eui:
            raise _invalid("chirpstack", f"devEui {dev_eui} differs from topic's {topic_eui}")
        dev_eui = topic_eui
        application_id = application_id or match["app"]
    if application_id is None or dev_eui is None:
        raise _invalid("chirpstack", "deviceInfo needs applicationId and devEui")
    return Uplink(
        network="chirpstack",
        application_id=application_id,
        payload=_payload("chirpstack", event.text("data"), "data"),
        dev_eui=dev_eui,
        device_name=info.text("deviceName"),
        tenant_id=info.text("tenantId"),
        device_profile=info.text("deviceProfileName"),
        fport=_fport("chirpstack", event, "fPort"),
        fcnt=_fcnt("chirpstack", event, "fCnt"),
        gateways=tuple(
            GatewayRx(gateway_id, rx.number("rssi"), rx.number("snr"))
            for rx in event.objects("rxInfo")
            if (gateway_id := rx.text("gatewayId"))
        ),
        received_at=_timestamp("chirpstack", event.text("time"), "time"),
        dedup_id=event.text("deduplicationId"),
    )


def _correlation_id(ids: object) -> str | None:
    """The application server's ``as:up:`` correlation id, else the first one."""
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise _invalid("tts", "correlation_ids is not a list of strings")
    return next((i for i in ids if i.startswith("as:up:")), ids[0] if ids else None)


def parse_tts_uplink(body: bytes, topic: str | None = None) -> Uplink:
    """Parse a The Things Stack v3 ``up`` JSON body; ``topic`` gives the tenant and cross-checks."""
    event = _load("tts", body)
    ids = event.sub("end_device_ids")
    application_id = ids.sub("application_ids").text("application_id")
    device_id = ids.text("device_id")
    tenant_id = None
    if topic is not None:
        match = _TTS_TOPIC.fullmatch(topic)
        if match is None:
            raise _invalid("tts", f"topic {topic!r} is not a The Things Stack uplink topic")
        if application_id not in (None, match["app"]) or device_id not in (None, match["device"]):
            raise _invalid("tts", f"device ids differ from topic {topic!r}")
        application_id, device_id, tenant_id = match["app"], match["device"], match["tenant"]
    if application_id is None or device_id is None:
        raise _invalid("tts", "end_device_ids needs device_id and application_ids.application_id")
    up = event.sub("uplink_message")
    version = up.sub("version_ids")
    brand, model = version.text("brand_id"), version.text("model_id")
    received = event.text("received_at") or up.text("received_at")
    return Uplink(
        network="tts",
        application_id=application_id,
        payload=_payload("tts", up.text("frm_payload"), "uplink_message.frm_payload"),
        dev_eui=_dev_eui("tts", ids.text("dev_eui")),
        device_name=device_id,
        tenant_id=tenant_id,
        device_profile=f"{brand}/{model}" if brand and model else None,
        fport=_fport("tts", up, "f_port"),
        fcnt=_fcnt("tts", up, "f_cnt"),
        gateways=tuple(
            GatewayRx(gateway_id, rx.number("rssi"), rx.number("snr"))
            for rx in up.objects("rx_metadata")
            if (gateway_id := rx.sub("gateway_ids").text("gateway_id"))
        ),
        received_at=_timestamp("tts", received, "received_at"),
        dedup_id=_correlation_id(event.obj.get("correlation_ids") or []),
    )


def parse_uplink(topic: str, body: bytes) -> Uplink:
    """Parse an uplink from either network server, chosen by its MQTT topic."""
    if topic.startswith("application/"):
        return parse_chirpstack_uplink(body, topic)
    if topic.startswith("v3/"):
        return parse_tts_uplink(body, topic)
    raise InvalidPayloadError("envelope", None, f"topic {topic!r} is no known uplink topic")


# ---- Builders for simulators: the inverse of the parsers, omitting zero fields like the servers.


def chirpstack_uplink_topic(application_id: str, dev_eui: str) -> str:
    """ChirpStack publishes with the DevEUI in lower case."""
    return f"application/{application_id}/device/{dev_eui.lower()}/event/up"


def tts_uplink_topic(application_id: str, device_id: str, tenant_id: str | None = None) -> str:
    tenant = f"@{tenant_id}" if tenant_id else ""
    return f"v3/{application_id}{tenant}/devices/{device_id}/up"


def _pruned(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None, zero, empty values, as protobuf JSON mapping does."""
    return {k: v for k, v in obj.items() if v not in (None, 0, "", [], {}) or v is False}


def _number(value: float) -> float | int:
    """Integral values as JSON integers, as the servers write an ``int32`` rssi."""
    return int(value) if value.is_integer() else value


def _iso(moment: datetime | None, zulu: bool) -> str | None:
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z") if zulu else text


def chirpstack_uplink_json(uplink: Uplink) -> bytes:
    """The ChirpStack v4 ``event/up`` body that :func:`parse_chirpstack_uplink` reads back."""
    if uplink.dev_eui is None:
        raise ValueError("a ChirpStack uplink needs a devEUI")
    info = {
        "tenantId": uplink.tenant_id,
        "applicationId": uplink.application_id,
        "deviceProfileName": uplink.device_profile,
        "deviceName": uplink.device_name,
        "devEui": uplink.dev_eui.lower(),
    }
    event = {
        "deduplicationId": uplink.dedup_id,
        "time": _iso(uplink.received_at, zulu=False),
        "deviceInfo": _pruned(info),
        "fCnt": uplink.fcnt,
        "fPort": uplink.fport,
        "data": base64.b64encode(uplink.payload).decode() if uplink.payload else None,
        "rxInfo": [
            _pruned({"gatewayId": g.gateway_id, "rssi": _number(g.rssi), "snr": _number(g.snr)})
            for g in uplink.gateways
        ],
    }
    return orjson.dumps(_pruned(event))


def tts_uplink_json(uplink: Uplink) -> bytes:
    """The The Things Stack v3 ``up`` body that :func:`parse_tts_uplink` reads back."""
    if uplink.device_name is None:
        raise ValueError("a The Things Stack uplink needs a device id")
    brand, _, model = (uplink.device_profile or "").partition("/")
    if uplink.device_profile is not None and not (brand and model):
        raise ValueError(f"device_profile {uplink.device_profile!r} is not <brand_id>/<model_id>")
    received_at = _iso(uplink.received_at, zulu=True)
    message = {
        "f_port": uplink.fport,
        "f_cnt": uplink.fcnt,
        "frm_payload": base64.b64encode(uplink.payload).decode() if uplink.payload else None,
        "rx_metadata": [
            _pruned(
                {
                    "gateway_ids": {"gateway_id": g.gateway_id},
                    "rssi": _number(g.rssi),
                    "snr": _number(g.snr),
                }
            )
            for g in uplink.gateways
        ],
        "received_at": received_at,
        "version_ids": _pruned({"brand_id": brand, "model_id": model}),
    }
    ids = {
        "device_id": uplink.device_name,
        "application_ids": {"application_id": uplink.application_id},
        "dev_eui": uplink.dev_eui,
    }
    event = {
        "end_device_ids": _pruned(ids),
        "correlation_ids": [uplink.dedup_id] if uplink.dedup_id else None,
        "received_at": received_at,
        "uplink_message": _pruned(message),
    }
    return orjson.dumps(_pruned(event))
