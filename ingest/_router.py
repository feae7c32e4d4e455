"""From one MQTT message to a canonical measurement or a dead-letter verdict (pure).

Topic families (docs/architecture.md#data-flow and
docs/payload-formats.md#how-lorawan-uplinks-arrive-over-mqtt):

- ``sensors/<sensor_id>/up``: raw payload of a registered sensor; codec from the registry.
- ``gateways/<gateway>/sensors/<sensor_id>/up``: the same from an authenticated gateway; the
  broker's ACL (``pattern write gateways/%u/#``) makes the gateway segment the MQTT username, so
  a sensor bound to another gateway, or a bound sensor on the unauthenticated topic, is
  ``unauthorized``.
- ChirpStack v4 ``application/<app>/device/<devEui>/event/up`` and The Things Stack v3
  ``v3/<app>[@tenant]/devices/<device>/up``: JSON envelopes; the device is found by devEUI, else
  by device id; unknown devices follow the configured policy.

Event time: the device's own timestamp, else the network server's receive time, else (direct
topics) the MQTT v5 user property ``observed_at``, else the broker receive time. Idempotency key:
the envelope's (devEUI, fCnt, dedup id); on direct topics the ``message_id`` user property,
else a digest of the payload and its event time.

Position (a mobile air sensor's fix): the payload's own (a GNSS channel, ``lat``/``lon``), else
the network server's device location when the envelope has one. A latitude beyond ±90 degrees or
a longitude beyond ±180 (or one not finite) is ``out_of_range``; a position on a record of
another kind than air is dropped, as only the air record has a place for it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from citysense.registry import Registry, Sensor
from citysense.settings import IngestSettings
from decoders import EMPTY_PROFILE, Codec, Decoded, DecodeError, DeviceProfile, get_codec
from decoders.envelopes import parse_uplink
from schemas import Measurement, Source

__all__ = ["Accepted", "Incoming", "Rejected", "Router"]


# Incoming and Accepted are built once per message: not frozen, since a frozen dataclass sets
# each field through ``object.__setattr__`` (Accepted took ~1.3 µs to build, ~0.5 µs without).
# Nothing changes them once built. Both spell out their ``__init__`` (the dataclass decorator
# keeps it): compiled by mypyc, an explicit ``__init__`` is native code, ~0.05 µs, where the
# generated one stays a Python function, ~0.3 µs. Tests check it stores what the generated one
# would.
@dataclass(slots=True)
class Incoming:
    """One MQTT message as ingest received it."""

    topic: str
    payload: bytes
    received_at: datetime
    user_properties: Mapping[str, str]
    #: The PUBLISH had its DUP flag set (MQTT v5 §3.3.1.1): the broker may have sent it before.
    redelivered: bool

    def __init__(
        self,
        topic: str,
        payload: bytes,
        received_at: datetime,
        user_properties: Mapping[str, str],
        redelivered: bool = False,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.received_at = received_at
        self.user_properties = user_properties
        self.redelivered = redelivered


@dataclass(slots=True)
class Accepted:
    """A message that becomes a measurement: the decoder's output and what completes it.

    The :class:`~schemas.Measurement` itself is only built on request (:attr:`measurement`):
    ingest encodes its Avro value straight from these parts (``schemas.encode_decoded``), and a
    frozen dataclass of ten fields costs about as much as decoding the payload.
    """

    decoded: Decoded
    sensor_id: str
    observed_at: datetime
    received_at: datetime
    source: Source
    idempotency_key: str
    #: Set for LoRaWAN uplinks: (device, fCnt, payload digest) seen twice means a duplicate.
    duplicate_key: tuple[str, int, int] | None

    def __init__(
        self,
        decoded: Decoded,
        sensor_id: str,
        observed_at: datetime,
        received_at: datetime,
        source: Source,
        idempotency_key: str,
        duplicate_key: tuple[str, int, int] | None,
    ) -> None:
        self.decoded = decoded
        self.sensor_id = sensor_id
        self.observed_at = observed_at
        self.received_at = received_at
        self.source = source
        self.idempotency_key = idempotency_key
        self.duplicate_key = duplicate_key

    @property
    def kind(self) -> str:
        return self.decoded.kind

    @property
    def measurement(self) -> Measurement:
        """The canonical measurement (docs/architecture.md#canonical-measurement) they make."""
        return Measurement.from_decoded(
            self.decoded,
            sensor_id=self.sensor_id,
            observed_at=self.observed_at,
            received_at=self.received_at,
            source=self.source,
        )


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message becomes a dead letter; ``reason`` is short and machine-readable."""

    reason: str
    error_class: str
    message: str
    codec: str | None = None
    sensor_id: str | None = None


def _rejected(reason: str, message: str, **more: str | None) -> Rejected:
    return Rejected(reason, "IngestError", message, more.get("codec"), more.get("sensor_id"))


def _from_decode_error(exc: DecodeError, sensor_id: str | None) -> Rejected:
    return Rejected(exc.reason, type(exc).__name__, str(exc), exc.codec, sensor_id)


class Router:
    """Routes, decodes and validates messages against a registry; holds no mutable state."""

    def __init__(self, registry: Registry, settings: IngestSettings) -> None:
        self.registry = registry
        self.settings = settings
        self._max_future = timedelta(seconds=settings.max_future_s)
        # Read once: a settings attribute goes through pydantic's __getattr__ hook.
        self._max_payload_bytes = settings.max_payload_bytes

    def route(self, incoming: Incoming) -> Accepted | Rejected:
        if len(incoming.payload) > self._max_payload_bytes:
            return _rejected(
                "oversized",
                f"payload of {len(incoming.payload)} bytes exceeds the limit of "
                f"{self._max_payload_bytes}",
            )
        topic = incoming.topic
        if topic.startswith("application/") or topic.startswith("v3/"):
            return self._lorawan(incoming)
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] == "sensors" and parts[2] == "up":
            return self._direct(incoming, parts[1], gateway=None)
        if (
            len(parts) == 5
            and parts[0] == "gateways"
            and parts[2] == "sensors"
            and parts[4] == "up"
        ):
            return self._direct(incoming, parts[3], gateway=parts[1])
        return _rejected("unknown_topic", f"no uplink format is published on {topic!r}")

    # --- direct topics ---------------------------------------------------------------------

    def _direct(
        self, incoming: Incoming, sensor_id: str, gateway: str | None
    ) -> Accepted | Rejected:
        sensor = self.registry.get(sensor_id)
        if sensor is None:
            return _rejected("unknown_sensor", f"sensor {sensor_id!r} is not in the registry")
        if sensor.gateway is not None and sensor.gateway != gateway:
            who = f"gateway {gateway!r}" if gateway else "the unauthenticated direct topic"
            return _rejected(
                "unauthorized",
                f"sensor {sensor_id!r} is bound to gateway {sensor.gateway!r}, not {who}",
                sensor_id=sensor_id,
            )
        observed_text = incoming.user_properties.get("observed_at")
        observed_at = incoming.received_at
        if observed_text is not None:
            parsed = _parse_time(observed_text)
            if parsed is None:
                return _rejected(
                    "invalid_timestamp",
                    f"user property observed_at={observed_text!r} is not an ISO 8601 time "
                    "with an offset",
                    sensor_id=sensor_id,
                )
            observed_at = parsed
        codec = get_codec(sensor.codec)
        try:
            # decode_fn: what Codec.decode forwards to, without its interpreted frame.
            decoded = codec.decode_fn(incoming.payload, None, self.registry.profile(sensor_id))
        except DecodeError as exc:
            return _from_decode_error(exc, sensor_id)
        message_id = incoming.user_properties.get("message_id")
        if message_id is None:
            digest = hashlib.blake2b(incoming.payload, digest_size=8)
            digest.update(observed_at.isoformat().encode())
            message_id = digest.hexdigest()
        key = f"{sensor_id}:{message_id}"
        source = Source("mqtt", gateway or sensor.gateway, None, None, None, None, None, key)
        return self._accept(decoded, sensor, sensor_id, observed_at, incoming, source, key, None)

    # --- LoRaWAN envelopes -----------------------------------------------------------------

    def _lorawan(self, incoming: Incoming) -> Accepted | Rejected:
        try:
            uplink = parse_uplink(incoming.topic, incoming.payload)
        except DecodeError as exc:
            return _from_decode_error(exc, None)
        sensor = None
        if uplink.dev_eui is not None:
            sensor = self.registry.by_dev_eui.get(uplink.dev_eui)
        if sensor is None and uplink.dev_eui is None and uplink.device_name:
            sensor = self.registry.get(uplink.device_name)
        profile: DeviceProfile
        if sensor is not None:
            codec = get_codec(sensor.codec)
            sensor_id = sensor.id
            profile = self.registry.profile(sensor.id)
        else:
            device = uplink.dev_eui or uplink.device_name or "?"
            guessed = _codec_from_profile(uplink.device_profile)
            if self.settings.unknown_devices == "dead-letter" or guessed is None:
                why = (
                    "the unknown-device policy is dead-letter"
                    if self.settings.unknown_devices == "dead-letter"
                    else f"device profile {uplink.device_profile!r} names no known codec"
                )
                return _rejected("unknown_device", f"device {device} is not in the registry; {why}")
            codec = guessed
            sensor_id = f"{codec.name}:{device}"
            profile = EMPTY_PROFILE
        try:
            decoded = codec.decode_fn(uplink.payload, uplink.fport, profile)
        except DecodeError as exc:
            return _from_decode_error(exc, sensor_id)
        if decoded.position is None and uplink.location is not None:
            decoded.position = uplink.location
        observed_at = decoded.observed_at or uplink.received_at or incoming.received_at
        key = uplink.idempotency_key
        first = uplink.gateways[0] if uplink.gateways else None
        if first is None:
            source = Source(
                uplink.network, None, None, None, uplink.fcnt, uplink.dev_eui, uplink.dedup_id, key
            )
        else:
            source = Source(
                uplink.network,
                first.gateway_id,
                first.rssi,
                first.snr,
                uplink.fcnt,
                uplink.dev_eui,
                uplink.dedup_id,
                key,
            )
        device = uplink.dev_eui or f"{uplink.application_id}/{uplink.device_name}"
        duplicate_key = (device, uplink.fcnt, hash(uplink.payload))
        return self._accept(
            decoded, sensor, sensor_id, observed_at, incoming, source, key, duplicate_key
        )

    # --- validation ------------------------------------------------------------------------

    def _accept(
        self,
        decoded: Decoded,
        sensor: Sensor | None,
        sensor_id: str,
        observed_at: datetime,
        incoming: Incoming,
        source: Source,
        key: str,
        duplicate_key: tuple[str, int, int] | None,
    ) -> Accepted | Rejected:
        for name, value in decoded.values.items():
            if not math.isfinite(value):
                return Rejected(
                    "out_of_range",
                    "IngestError",
                    f"{decoded.codec}: {name} is {value}",
                    decoded.codec,
                    sensor_id,
                )
        if observed_at - incoming.received_at > self._max_future:
            return Rejected(
                "future_timestamp",
                "IngestError",
                f"event time {observed_at.isoformat()} is ahead of receive time "
                f"{incoming.received_at.isoformat()} by more than {self.settings.max_future_s} s",
                decoded.codec,
                sensor_id,
            )
        if sensor is not None and decoded.kind != sensor.kind:
            # The registry says what the sensor is; a multi-purpose codec (Elsys, Cayenne) may
            # report a frame without that kind's quantities, which still belongs to the sensor.
            decoded.kind = sensor.kind
        position = decoded.position
        if position is not None:
            if decoded.kind != "air":
                decoded.position = None
            elif not (-90.0 <= position.lat <= 90.0 and -180.0 <= position.lon <= 180.0) or (
                position.accuracy_m is not None and not 0.0 <= position.accuracy_m < math.inf
            ):
                return Rejected(
                    "out_of_range",
                    "IngestError",
                    f"{decoded.codec}: position lat={position.lat} lon={position.lon} "
                    f"accuracy_m={position.accuracy_m} is not a WGS84 fix",
                    decoded.codec,
                    sensor_id,
                )
        return Accepted(
            decoded, sensor_id, observed_at, incoming.received_at, source, key, duplicate_key
        )


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _codec_from_profile(profile: str | None) -> Codec | None:
    """A codec named by a ChirpStack device-profile name or TTS ``brand/model``, if any."""
    if not profile:
        return None
    for candidate in (profile, profile.replace("/", "-"), profile.split("/")[-1]):
        try:
            return get_codec(candidate.lower())
        except KeyError:
            continue
    return None
