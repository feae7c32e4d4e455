"""LoRaWAN network-server uplink envelopes over MQTT: ChirpStack v4 and The Things Stack v3.

Source: docs/payload-formats.md#how-lorawan-uplinks-arrive-over-mqtt, the ChirpStack v4 event
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
  fields are omitted too. ``uplink_message.locations`` maps a location source to
  ``{latitude, longitude, altitude, accuracy, source}`` (the data formats page's uplink example:
  ``"user"``, the location set on the device in the registry; ``"frm-payload"``, the one the
  application's payload formatter read from the payload): the device's position on the uplink.
  A moving device's own reading is the better one, so ``frm-payload`` wins over ``user``; any
  other source comes between them, by name. ChirpStack v4 puts no device location on its
  ``up`` event (it has one on the separate ``location`` event, not read here), only the
  gateways' in ``rxInfo``, which are not the device's.

Both omit zero values, so a missing ``fCnt``/``f_cnt``, ``rssi`` or ``snr`` is 0; a missing fPort
is kept as None (unknown: the codec accepts it). A missing payload is an error: with nothing to
decode the uplink cannot become a measurement. Timestamps must carry an offset; digits beyond
microseconds are truncated (``datetime.fromisoformat`` does so since Python 3.11). The server's own
decoded ``object``/``decoded_payload`` is ignored: we decode ``data`` ourselves.

Speed: ingest parses every uplink, so each parser first tries a fast path for the well-formed
envelope (plain dict access, exact type checks, one C call each for base64 and the time) and falls
back to the careful, field-by-field parser, the reference, for anything unusual; that one names the
field at fault in its :class:`InvalidPayloadError`.

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
from typing import Any, Final, Literal

import orjson

from decoders._model import InvalidPayloadError, Position

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


# Plain slots classes, not frozen: a frozen dataclass stores each field through
# ``object.__setattr__`` (Uplink(...) cost 1.1-1.6 µs in plain Python, a third of a whole fast
# path), and the workarounds (writing the slots from outside) leaned on CPython's member
# descriptors and mypyc's attribute layout. Nothing changes one once built. The ``__init__`` is
# spelled out (the dataclass decorator keeps it) so that mypyc compiles it; ``__hash__`` too, to
# stay hashable as the frozen classes were.
@dataclass(slots=True)
class GatewayRx:
    """One gateway that heard the uplink; rssi in dBm, snr in dB (0 when the server omits them)."""

    gateway_id: str
    rssi: float = 0.0
    snr: float = 0.0

    def __init__(self, gateway_id: str, rssi: float = 0.0, snr: float = 0.0) -> None:
        self.gateway_id = gateway_id
        self.rssi = rssi
        self.snr = snr

    def __hash__(self) -> int:
        return hash((self.gateway_id, self.rssi, self.snr))


@dataclass(slots=True)
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
    #: The device's location as the network server gives it (TTS ``uplink_message.locations``).
    location: Position | None = None

    def __init__(
        self,
        network: Network,
        application_id: str,
        payload: bytes,
        dev_eui: str | None = None,
        device_name: str | None = None,
        tenant_id: str | None = None,
        device_profile: str | None = None,
        fport: int | None = None,
        fcnt: int = 0,
        gateways: tuple[GatewayRx, ...] = (),
        received_at: datetime | None = None,
        dedup_id: str | None = None,
        location: Position | None = None,
    ) -> None:
        self.network = network
        self.application_id = application_id
        self.payload = payload
        self.dev_eui = dev_eui
        self.device_name = device_name
        self.tenant_id = tenant_id
        self.device_profile = device_profile
        self.fport = fport
        self.fcnt = fcnt
        self.gateways = gateways
        self.received_at = received_at
        self.dedup_id = dedup_id
        self.location = location

    def __hash__(self) -> int:
        return hash(
            (
                self.network,
                self.application_id,
                self.payload,
                self.dev_eui,
                self.device_name,
                self.tenant_id,
                self.device_profile,
                self.fport,
                self.fcnt,
                self.gateways,
                self.received_at,
                self.dedup_id,
                self.location,
            )
        )

    @property
    def idempotency_key(self) -> str:
        device = self.dev_eui or f"{self.application_id}/{self.device_name}"
        return f"{device}:{self.fcnt}:{self.dedup_id or ''}"


def _invalid(network: Network, detail: str) -> InvalidPayloadError:
    return InvalidPayloadError(network, None, detail)


def _load(network: Network, body: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid(network, f"invalid JSON: {exc}") from exc
    if type(event) is not dict:
        raise _invalid(network, "body is not a JSON object")
    return event


def parse_chirpstack_uplink(body: bytes, topic: str | None = None) -> Uplink:
    """Parse a ChirpStack v4 ``event/up`` JSON body; ``topic`` fills and cross-checks ids."""
    event = _load("chirpstack", body)
    return _chirpstack_fast(event, topic) or _chirpstack_careful(event, topic)


def parse_tts_uplink(body: bytes, topic: str | None = None) -> Uplink:
    """Parse a The Things Stack v3 ``up`` JSON body; ``topic`` gives the tenant and cross-checks."""
    event = _load("tts", body)
    return _tts_fast(event, topic) or _tts_careful(event, topic)


# ---- Fast paths: the common, well-formed envelope, with plain dict access and exact type checks.
#
# orjson builds exact dicts, lists, strs, ints, floats, bools and None, so ``type(v) is int`` is
# "an integer and not a bool", as the careful accessors' isinstance checks say. A fast path returns
# None at the first thing it does not expect: a wrong type, a missing or out-of-range value, a time
# or base64 it cannot read, but also rare valid forms such as ``"deviceInfo": 0`` (read as empty)
# or a reception without ``gateway_ids``. The careful parser then either accepts the envelope or
# names the field at fault. Wherever a fast path answers, its Uplink equals the careful parser's,
# and wherever the careful parser raises, the fast path declines (tests check both).

_HEX_DIGITS = "0123456789ABCDEF"
_MAX_FCNT = 0xFFFFFFFF


def _optional_text(value: object) -> bool:
    """A string or None (``type(value) in {str, NoneType}``, without the set)."""
    return value is None or type(value) is str


def _optional_number(value: object) -> bool:
    """An int (not a bool), a float or None, as orjson gives them."""
    return value is None or type(value) is float or type(value) is int


def _is_eui(eui: str) -> bool:
    """16 upper-case hex digits, as ``_EUI.fullmatch`` (strip leaves nothing only then)."""
    return len(eui) == 16 and not eui.strip(_HEX_DIGITS)


def _fast_payload(text: object) -> bytes | None:
    """Strict base64 of a non-empty string, else None: ``b64decode(validate=True)`` in one call."""
    if type(text) is not str or not text:
        return None
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except ValueError:  # binascii.Error, or a non-ASCII string
        return None


def _fast_utc(text: str) -> datetime | None:
    """An ISO 8601 time with an offset, in UTC, else None.

    ``datetime.fromisoformat`` is C code that reads the servers' nanoseconds (truncated) and
    ``Z``, and gives the ``UTC`` singleton for a zero offset, which needs no conversion.
    """
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is UTC:
            return moment
        return None if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _fast_counters(fport: object, fcnt: object) -> tuple[int | None, int] | None:
    """(fPort, fCnt) when both have the plain shape (fCnt omitted when 0), else None."""
    if fcnt is None:
        fcnt = 0
    if not (fport is None or (type(fport) is int and 0 <= fport <= 255)):
        return None
    if not (type(fcnt) is int and 0 <= fcnt <= _MAX_FCNT):
        return None
    return fport, fcnt


def _fast_gateway(gateway_id: str, rx: dict[str, Any], gateways: list[GatewayRx]) -> bool:
    """Append the reception's gateway; False when rssi/snr have an unexpected type.

    A reception without a gateway id is dropped by the callers, unchecked."""
    rssi, snr = rx.get("rssi"), rx.get("snr")
    if not (_optional_number(rssi) and _optional_number(snr)):
        return False
    gateways.append(GatewayRx(gateway_id, float(rssi or 0), float(snr or 0)))
    return True


def _chirpstack_fast(event: dict[str, Any], topic: str | None) -> Uplink | None:
    """:func:`parse_chirpstack_uplink` for a well-formed event, else None (see above)."""
    info = event.get("deviceInfo")
    if type(info) is not dict:
        return None
    application_id = info.get("applicationId")
    dev_eui = info.get("devEui")
    device_name = info.get("deviceName")
    tenant_id = info.get("tenantId")
    device_profile = info.get("deviceProfileName")
    time = event.get("time")
    dedup_id = event.get("deduplicationId")
    if not (
        _optional_text(application_id)
        and _optional_text(dev_eui)
        and _optional_text(device_name)
        and _optional_text(tenant_id)
        and _optional_text(device_profile)
        and _optional_text(time)
        and _optional_text(dedup_id)
    ):
        return None
    eui = dev_eui.upper() if dev_eui else None
    if topic is not None:
        # application/<app>/device/<devEui>/event/up, as _CHIRPSTACK_TOPIC.fullmatch.
        parts = topic.split("/")
        if not (
            len(parts) == 6
            and parts[0] == "application"
            and parts[1]
            and parts[2] == "device"
            and parts[3]
            and parts[4] == "event"
            and parts[5] == "up"
        ):
            return None
        topic_eui = parts[3].upper()
        if eui is not None and eui != topic_eui:
            return None
        eui = topic_eui
        application_id = application_id or parts[1]
    if not application_id or eui is None or not _is_eui(eui):
        return None
    payload = _fast_payload(event.get("data"))
    counters = _fast_counters(event.get("fPort"), event.get("fCnt"))
    if payload is None or counters is None:
        return None
    fport, fcnt = counters
    gateways: list[GatewayRx] = []
    rx_info = event.get("rxInfo")
    if rx_info is not None:
        if type(rx_info) is not list:
            return None
        for rx in rx_info:
            if type(rx) is not dict:
                return None
            gateway_id = rx.get("gatewayId")
            if not _optional_text(gateway_id):
                return None
            if gateway_id and not _fast_gateway(gateway_id, rx, gateways):
                return None
    received_at = None
    if time:
        received_at = _fast_utc(time)
        if received_at is None:
            return None
    return Uplink(
        network="chirpstack",
        application_id=application_id,
        payload=payload,
        dev_eui=eui,
        device_name=device_name or None,
        tenant_id=tenant_id or None,
        device_profile=device_profile or None,
        fport=fport,
        fcnt=fcnt,
        gateways=tuple(gateways),
        received_at=received_at,
        dedup_id=dedup_id or None,
    )


def _tts_fast(event: dict[str, Any], topic: str | None) -> Uplink | None:
    """:func:`parse_tts_uplink` for a well-formed event, else None (see above)."""
    ids = event.get("end_device_ids")
    up = event.get("uplink_message")
    if type(ids) is not dict or type(up) is not dict:
        return None
    application_ids = ids.get("application_ids")
    version = up.get("version_ids")
    if version is None:
        version = {}
    if type(application_ids) is not dict or type(version) is not dict:
        return None
    application_id = application_ids.get("application_id")
    device_id = ids.get("device_id")
    dev_eui = ids.get("dev_eui")
    brand, model = version.get("brand_id"), version.get("model_id")
    received = event.get("received_at")
    if not (
        _optional_text(application_id)
        and _optional_text(device_id)
        and _optional_text(dev_eui)
        and _optional_text(brand)
        and _optional_text(model)
        and _optional_text(received)
    ):
        return None
    application_id = application_id or None
    device_id = device_id or None
    tenant_id = None
    if topic is not None:
        # v3/<app>[@<tenant>]/devices/<device>/up, as _TTS_TOPIC.fullmatch.
        parts = topic.split("/")
        if not (
            len(parts) == 5
            and parts[0] == "v3"
            and parts[2] == "devices"
            and parts[3]
            and parts[4] == "up"
        ):
            return None
        topic_app, at, tenant = parts[1].partition("@")
        if not topic_app or (at and not tenant):
            return None
        if application_id not in (None, topic_app) or device_id not in (None, parts[3]):
            return None
        application_id, device_id, tenant_id = topic_app, parts[3], tenant or None
    if application_id is None or device_id is None:
        return None
    eui = dev_eui.upper() if dev_eui else None
    if eui is not None and not _is_eui(eui):
        return None
    payload = _fast_payload(up.get("frm_payload"))
    counters = _fast_counters(up.get("f_port"), up.get("f_cnt"))
    if payload is None or counters is None:
        return None
    fport, fcnt = counters
    gateways: list[GatewayRx] = []
    rx_metadata = up.get("rx_metadata")
    if rx_metadata is not None:
        if type(rx_metadata) is not list:
            return None
        for rx in rx_metadata:
            if type(rx) is not dict:
                return None
            gateway_ids = rx.get("gateway_ids")
            if type(gateway_ids) is not dict:
                return None
            gateway_id = gateway_ids.get("gateway_id")
            if not _optional_text(gateway_id):
                return None
            if gateway_id and not _fast_gateway(gateway_id, rx, gateways):
                return None
    if not received:  # the event's own time, else the uplink message's
        received = up.get("received_at")
        if not _optional_text(received):
            return None
    received_at = None
    if received:
        received_at = _fast_utc(received)
        if received_at is None:
            return None
    dedup_id = None
    correlation_ids = event.get("correlation_ids")
    if correlation_ids is not None:
        if type(correlation_ids) is not list:
            return None
        for correlation_id in correlation_ids:  # the as:up: one, else the first
            if type(correlation_id) is not str:
                return None
            if dedup_id is None and correlation_id.startswith("as:up:"):
                dedup_id = correlation_id
        if dedup_id is None and correlation_ids:
            dedup_id = correlation_ids[0]
    try:
        location = _tts_location(up.get("locations"))
    except InvalidPayloadError:
        return None  # the careful parser says what is wrong
    return Uplink(
        network="tts",
        application_id=application_id,
        payload=payload,
        dev_eui=eui,
        device_name=device_id,
        tenant_id=tenant_id,
        device_profile=f"{brand}/{model}" if brand and model else None,
        fport=fport,
        fcnt=fcnt,
        gateways=tuple(gateways),
        received_at=received_at,
        dedup_id=dedup_id,
        location=location,
    )


#: ``uplink_message.locations`` sources in order of preference (see the module doc); a source
#: not listed comes after ``frm-payload`` and before ``user``.
_LOCATION_FIRST: Final = "frm-payload"
_LOCATION_LAST: Final = "user"


def _location_number(value: object, key: str) -> float | None:
    if value is None:
        return None
    if type(value) is not float and type(value) is not int:
        raise _invalid("tts", f"uplink_message.locations.{key} is not a number")
    return float(value)


def _tts_location(locations: object) -> Position | None:
    """The device position of a TTS ``uplink_message.locations`` map, None when it is empty.

    Latitude and longitude absent mean 0 (protobuf JSON omits zero values), as do ``accuracy``
    (then None: unknown); a location that is not an object, or a value that is not a number, is
    an ``InvalidPayloadError``. Ranges are ingest's to check.
    """
    if locations is None:
        return None
    if type(locations) is not dict:
        raise _invalid("tts", "uplink_message.locations is not an object")
    if not locations:
        return None

    def rank(name: str) -> tuple[int, str]:
        order = 0 if name == _LOCATION_FIRST else 2 if name == _LOCATION_LAST else 1
        return order, name

    best = min(locations, key=rank)
    location = locations[best]
    if type(location) is not dict:
        raise _invalid("tts", f"uplink_message.locations.{best} is not an object")
    lat = _location_number(location.get("latitude"), f"{best}.latitude")
    lon = _location_number(location.get("longitude"), f"{best}.longitude")
    accuracy = _location_number(location.get("accuracy"), f"{best}.accuracy")
    return Position(lat or 0.0, lon or 0.0, accuracy or None)


# ---- Careful parsers: the reference behaviour, for whatever a fast path declined.


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


def _payload(network: Network, text: str | None, key: str) -> bytes:
    if text is None:
        raise _invalid(network, f"no payload ({key} missing)")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:  # binascii.Error, or a non-ASCII string
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
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # year 1 or 9999 pushed past the calendar by the offset
        raise _invalid(network, f"{key} {text!r} is out of range in UTC") from exc


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


def _chirpstack_careful(body: dict[str, Any], topic: str | None) -> Uplink:
    """:func:`parse_chirpstack_uplink`, field by field, raising on the first field at fault."""
    event = _Fields("chirpstack", body, "")
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


def _tts_careful(body: dict[str, Any], topic: str | None) -> Uplink:
    """:func:`parse_tts_uplink`, field by field, raising on the first field at fault."""
    event = _Fields("tts", body, "")
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
        location=_tts_location(up.obj.get("locations")),
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


def _tts_locations_json(location: Position | None) -> dict[str, Any] | None:
    """An uplink's location as TTS writes a device position read from the payload."""
    if location is None:
        return None
    entry = {
        "latitude": _number(location.lat),
        "longitude": _number(location.lon),
        "accuracy": None if location.accuracy_m is None else _number(location.accuracy_m),
        "source": "SOURCE_GPS",
    }
    return {_LOCATION_FIRST: _pruned(entry)}


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
        "locations": _tts_locations_json(uplink.location),
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
