"""The simulated fleet: registry sensors → realistic payloads → MQTT messages like real gateways.

Each sensor's values come from the daily patterns in :mod:`simulators._patterns`, are shaped to
exactly what its codec carries (the encoders refuse anything else) and encoded by the codec's own
encoder. Devices with a ``dev_eui`` publish through a network-server envelope (ChirpStack v4 or
The Things Stack v3); the others publish raw bytes on ``sensors/<sensor_id>/up``. Late events
carry an event time minutes in the past: in the envelope's receive time, or, on the direct topic,
in the MQTT v5 user property ``observed_at`` (the convention gateways that buffer use here).
Malformed messages are checked to fail decoding, so the summary's ``malformed`` count is exactly
what ingest must dead-letter. Mobile sensors (a ``pollutrack`` fleet) ride vehicles along the
scenario's routes (:mod:`simulators._vehicles`) and send PM2.5 with a GNSS fix as Cayenne LPP,
without the fix in tunnels.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from citysense.registry import Registry, Sensor
from decoders import Decoded, DecodeError, RegionCount, TrafficCount, get_codec
from decoders.envelopes import (
    GatewayRx,
    Uplink,
    chirpstack_uplink_json,
    chirpstack_uplink_topic,
    tts_uplink_json,
    tts_uplink_topic,
)
from simulators._patterns import (
    DayWeather,
    air_quality,
    day_weather,
    noise_level_db,
    pool_occupancy,
    traffic_intensity,
)
from simulators._publisher import Outgoing
from simulators._vehicles import Route, Vehicle

__all__ = ["DIRECT_TOPIC", "GATEWAY_TOPIC", "Fleet", "FleetStats", "direct_topic"]

PARIS = ZoneInfo("Europe/Paris")
DIRECT_TOPIC = "sensors/{sensor_id}/up"
GATEWAY_TOPIC = "gateways/{gateway}/sensors/{sensor_id}/up"
APPLICATION_ID = "citysense-nation"
TENANT_ID = "paris"
#: Crossings per minute at full intensity, by class, for one counting line.
PEAK_PER_MINUTE = {"pedestrian": 60.0, "bicycle": 25.0, "two_wheeler": 8.0, "car": 40.0}


@dataclass
class FleetStats:
    sent: int = 0
    malformed: int = 0
    late: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "malformed": self.malformed,
            "late": self.late,
            "by_kind": dict(sorted(self.by_kind.items())),
        }


@dataclass
class _Context:
    now: datetime
    local: datetime
    weather: DayWeather
    rng: random.Random
    #: ``now`` as each envelope writes it (ChirpStack ``+00:00``, TTS ``Z``), rendered once.
    received_at: dict[str, bytes] = field(default_factory=dict)


@dataclass
class _SensorState:
    fcnt: int = 0
    cumulative: dict[tuple[int, str], int] = field(default_factory=dict)
    #: The last encoded uplink and its envelope template, reused within ``REFRESH`` at high rates.
    cached: tuple[datetime, int, bytes, bytes] | None = None
    #: The sensor's uplink topic, formatted once.
    topic: str = ""


#: At rates above one message per sensor per second, a sensor's values change once a second; each
#: message still gets its own frame counter, deduplication id and time.
REFRESH = timedelta(seconds=1)
#: Placeholders rendered into a cached envelope, then replaced per message.
_SENTINEL_TIME = datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
_SENTINEL_FCNT = 4_294_967_295
_SENTINEL_DEDUP = "ffffffff-ffff-4fff-bfff-ffffffffffff"
_SENTINEL_FCNT_TEXT = b":%d" % _SENTINEL_FCNT
_SENTINEL_DEDUP_TEXT = _SENTINEL_DEDUP.encode()
_SENTINEL_WHEN = {
    "chirpstack": _SENTINEL_TIME.isoformat().encode(),
    "tts": _SENTINEL_TIME.isoformat().replace("+00:00", "Z").encode(),
}
#: RFC 4122 §4.4 version 4: the variant bits (10) and the version nibble (0100) of a random UUID.
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def _uuid4_text(bits: int) -> str:
    """``str(uuid.UUID(int=bits, version=4))`` without building a ``UUID`` (a sixth of the
    per-message cost of an envelope at high rates)."""
    h = "%032x" % (bits & _UUID4_CLEAR | _UUID4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _envelope_time(moment: datetime, transport: str) -> bytes:
    """A receive time as the envelope writes it: ISO 8601 in UTC, ``Z`` for TTS."""
    text = moment.astimezone(UTC).isoformat()
    return (text.replace("+00:00", "Z") if transport == "tts" else text).encode()


def _r(value: float, step: float) -> float:
    """Round to the format's resolution so the decoded value equals what was meant."""
    return round(round(value / step) * step, 6)


def _flow(sensor: Sensor, ctx: _Context) -> float:
    return traffic_intensity(ctx.local, ctx.weather, "car")


# --- per-codec value shapes -------------------------------------------------------------------


def _ws302(s: Sensor, ctx: _Context, _st: _SensorState) -> Decoded:
    leq = noise_level_db(_flow(s, ctx), ctx.weather, ctx.rng)
    return Decoded(
        "milesight-ws302",
        "noise",
        {
            "battery_pct": float(ctx.rng.randint(60, 100)),
            "laf_db": _r(leq + ctx.rng.gauss(0, 2), 0.1),
            "laeq_db": _r(leq, 0.1),
            "lafmax_db": _r(leq + 6 + abs(ctx.rng.gauss(0, 3)), 0.1),
        },
    )


def _browan(s: Sensor, ctx: _Context, _st: _SensorState) -> Decoded:
    level = min(100, max(40, round(noise_level_db(_flow(s, ctx), ctx.weather, ctx.rng))))
    return Decoded(
        "browan-tbsl100",
        "noise",
        {
            "la_db": float(level),
            "battery_v": _r(ctx.rng.uniform(3.3, 3.6), 0.1),
            "board_temperature_c": float(round(ctx.weather.temperature_c)),
            "threshold_event": 1.0 if level >= 75 else 0.0,
        },
    )


def _elsys_noise(s: Sensor, ctx: _Context, _st: _SensorState) -> Decoded:
    leq = noise_level_db(_flow(s, ctx), ctx.weather, ctx.rng)
    return Decoded(
        "elsys",
        "noise",
        {
            "temperature_c": _r(ctx.weather.temperature_c, 0.1),
            "humidity_pct": float(ctx.rng.randint(40, 90)),
            "lamax_db": float(round(leq + 8)),
            "laeq_db": float(round(leq)),
        },
    )


def _lorasoundkit(s: Sensor, ctx: _Context, _st: _SensorState) -> Decoded:
    leq = noise_level_db(_flow(s, ctx), ctx.weather, ctx.rng)
    bands = ("31_5", "63", "125", "250", "500", "1000", "2000", "4000", "8000")
    raw = {
        "lamin_db": leq - 6,
        "lamax_db": leq + 7,
        "laeq_db": leq,
        "lcmin_db": leq + 3,
        "lcmax_db": leq + 20,
        "lceq_db": leq + 12,
        "lzmin_db": leq + 4,
        "lzmax_db": leq + 23,
        "lzeq_db": leq + 14,
    }
    for index, band in enumerate(bands):
        raw[f"lz_{band}hz_db"] = leq + 12 - 3.5 * index + ctx.rng.gauss(0, 1)
    # The format scales every byte by round(max)/255; quantise the same way.
    scale = math.ceil(max(raw.values()))
    values = {k: round(v * 255 / scale) * scale / 255 for k, v in raw.items()}
    return Decoded("lorasoundkit", "noise", values)


def _am307(s: Sensor, ctx: _Context, _st: _SensorState) -> Decoded:
    air = air_quality(_flow(s, ctx), ctx.weather, ctx.rng)
    return Decoded(
        "milesight-am307",
        "air",
        {
            "temperature_c": _r(air["temperature_c"], 0.1),
            "humidity_pct": _r(air["humidity_pct"], 0.5),
            "co2_ppm": float(round(air["co2_ppm"])),
            "pressure_hpa": _r(air["pressure_hpa"], 0.1),
            "pm2_5_ugm3": float(round(air["pm2_5_ugm3"])),
            "pm10_ugm3": float(round(air["pm10_ugm3"])),
        },
    )


def _dl_pm(s: Sensor, ctx: _Context, _st: _SensorState) -> Decoded:
    air = air_quality(_flow(s, ctx), ctx.weather, ctx.rng)
    values = {f"pm{k}_ugm3": _r(air[f"pm{k}_ugm3"], 0.1) for k in ("1", "2_5", "4", "10")}
    values.update(
        {
            "battery_v": _r(ctx.rng.uniform(3.0, 3.3), 0.001),
            "typical_particle_size_nm": float(ctx.rng.randint(300, 600)),
            "nc0_5_per_cm3": _r(values["pm1_ugm3"] * 6, 0.1),
            "nc1_per_cm3": _r(values["pm1_ugm3"] * 7, 0.1),
            "nc2_5_per_cm3": _r(values["pm2_5_ugm3"] * 7.2, 0.1),
            "nc4_per_cm3": _r(values["pm4_ugm3"] * 7.3, 0.1),
            "nc10_per_cm3": _r(values["pm10_ugm3"] * 7.4, 0.1),
        }
    )
    return _via_codec("decentlab-dl-pm", "air", values, s)


def _dl_ac(s: Sensor, ctx: _Context, _st: _SensorState) -> Decoded:
    air = air_quality(_flow(s, ctx), ctx.weather, ctx.rng)
    values = {
        "no2_ugm3": air["no2_ugm3"],
        "co_mgm3": air["co_mgm3"],
        "temperature_c": air["temperature_c"],
        "humidity_pct": air["humidity_pct"],
        "battery_v": _r(ctx.rng.uniform(3.0, 3.3), 0.001),
    }
    return _via_codec("decentlab-dl-ac", "air", values, s)


def _elsys_air(s: Sensor, ctx: _Context, _st: _SensorState) -> Decoded:
    air = air_quality(_flow(s, ctx), ctx.weather, ctx.rng)
    return Decoded(
        "elsys",
        "air",
        {
            "temperature_c": _r(air["temperature_c"], 0.1),
            "humidity_pct": float(round(air["humidity_pct"])),
            "co2_ppm": float(round(air["co2_ppm"])),
            "battery_v": _r(ctx.rng.uniform(3.4, 3.6), 0.001),
        },
    )


def _crossings(sensor: Sensor, ctx: _Context, state: _SensorState) -> list[TrafficCount]:
    counts: list[TrafficCount] = []
    minutes = sensor.interval_s / 60
    for line in sorted(sensor.line_classes) or [1]:
        traffic_class = sensor.line_classes.get(line, "unknown")
        mean = (
            PEAK_PER_MINUTE.get(traffic_class, 10.0)
            * traffic_intensity(ctx.local, ctx.weather, traffic_class)
            * minutes
            / 2
        )
        for direction in ("in", "out"):
            count = max(0, round(ctx.rng.gauss(mean, math.sqrt(mean + 1))))
            total = (state.cumulative.get((line, direction), 0) + count) % (1 << 16)
            state.cumulative[(line, direction)] = total
            counts.append(TrafficCount(line, direction, traffic_class, count, total))
    return counts


def _vs133(s: Sensor, ctx: _Context, st: _SensorState) -> Decoded:
    return Decoded("milesight-vs133", "traffic", counts=_crossings(s, ctx, st))


def _pcr2(s: Sensor, ctx: _Context, st: _SensorState) -> Decoded:
    values = {
        "battery_v": _r(ctx.rng.uniform(3.5, 3.9), 0.001),
        "solar_power_mw": float(ctx.rng.randint(0, 900)),
        "board_temperature_c": _r(ctx.weather.temperature_c + 3, 0.1),
    }
    return Decoded("parametric-pcr2", "traffic", values, counts=_crossings(s, ctx, st)[:2])


def _vs121(s: Sensor, ctx: _Context, _st: _SensorState, registry: Registry) -> Decoded:
    site = registry.sites.get(s.site or "")
    fraction = pool_occupancy(ctx.local, site.opening_hours if site else ("07:00-22:00",))
    per_region = (s.capacity or 60) / max(len(s.regions), 1)
    regions = []
    for region in range(1, 9):
        mean = fraction * per_region if region in s.regions else 0.0
        regions.append(RegionCount(region, max(0, min(255, round(ctx.rng.gauss(mean, 1.5))))))
    return Decoded("milesight-vs121", "occupancy", regions=regions)


#: The mobile sensors' codec and its channels (the scenario's channel map names analog input 2
#: ``pm2_5_ugm3``; GPS channel 1 is the fix, altitude at street level in Paris, ~35 m).
MOBILE_CODEC = "cayenne-lpp"
_STREET_ALTITUDE_M = 35.0


def _pollutrack(ctx: _Context, vehicle: Vehicle) -> Decoded:
    """A vehicle's PM2.5 where it is now: the urban background with the traffic of the hour
    (commuter peaks), times its road's factor (higher on the Périphérique and in tunnels)."""
    fix = vehicle.advance(ctx.now.timestamp(), ctx.rng)
    air = air_quality(traffic_intensity(ctx.local, ctx.weather, "car"), ctx.weather, ctx.rng)
    values = {"pm2_5_ugm3": _r(min(300.0, air["pm2_5_ugm3"] * fix.factor), 0.01)}
    if fix.lat is not None and fix.lon is not None:
        values["gps_1_latitude"] = _r(fix.lat, 0.0001)
        values["gps_1_longitude"] = _r(fix.lon, 0.0001)
        values["gps_1_altitude"] = _STREET_ALTITUDE_M
    return Decoded(MOBILE_CODEC, "air", values)


def _via_codec(codec: str, kind: str, values: dict[str, float], sensor: Sensor) -> Decoded:
    """Values the format quantises in non-obvious ways: round-trip them through the codec."""
    decoded = Decoded(codec, kind, values)  # type: ignore[arg-type]
    fport, payload = get_codec(codec).encode(decoded, sensor.profile())
    return get_codec(codec).decode(payload, fport, sensor.profile())


def direct_topic(sensor: Sensor) -> str:
    """Sensors bound to a gateway publish under that gateway's (ACL-protected) prefix."""
    if sensor.gateway is not None:
        return GATEWAY_TOPIC.format(gateway=sensor.gateway, sensor_id=sensor.id)
    return DIRECT_TOPIC.format(sensor_id=sensor.id)


def _tts_version_ids(codec: str) -> str:
    """TTS ``version_ids`` as ``<brand_id>/<model_id>`` (e.g. ``milesight/ws302``)."""
    brand, _, model = codec.partition("-")
    return f"{brand}/{model or brand}"


_Shaper = Callable[[Sensor, _Context, _SensorState], Decoded]
_SHAPERS: dict[tuple[str, str], _Shaper] = {
    ("milesight-ws302", "noise"): _ws302,
    ("browan-tbsl100", "noise"): _browan,
    ("elsys", "noise"): _elsys_noise,
    ("lorasoundkit", "noise"): _lorasoundkit,
    ("milesight-am307", "air"): _am307,
    ("decentlab-dl-pm", "air"): _dl_pm,
    ("decentlab-dl-ac", "air"): _dl_ac,
    ("elsys", "air"): _elsys_air,
    ("milesight-vs133", "traffic"): _vs133,
    ("parametric-pcr2", "traffic"): _pcr2,
}


class Fleet:
    """Generates the next messages of a registry's sensors, deterministically for a seed."""

    def __init__(
        self,
        registry: Registry,
        *,
        seed: int = 0,
        bad_ratio: float = 0.0,
        late_ratio: float = 0.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        replay: bool = False,
        routes: Sequence[Route] = (),
    ) -> None:
        """``replay``: the clock replays a past period, so direct-topic messages always carry
        ``observed_at``, like a gateway flushing its buffer (ingest would otherwise stamp them
        with the broker's receive time, now). ``routes``: where mobile sensors drive (the
        scenario's ``[[routes]]``), vehicle i on route i modulo their number."""
        if not 0 <= bad_ratio <= 1 or not 0 <= late_ratio <= 1:
            raise ValueError("bad_ratio and late_ratio are fractions between 0 and 1")
        self.registry = registry
        self.sensors = sorted(registry.sensors.values(), key=lambda s: s.id)
        unsupported = [
            s.id
            for s in self.sensors
            if (s.codec, s.kind) not in _SHAPERS
            and s.codec != "milesight-vs121"
            and not (s.mobile and s.codec == MOBILE_CODEC)
        ]
        if unsupported:
            raise ValueError(f"the simulator has no value model for sensors {unsupported}")
        mobile = [s for s in self.sensors if s.mobile]
        if mobile and not routes:
            raise ValueError("mobile sensors need routes (the scenario's [[routes]])")
        self.rng = random.Random(seed)
        self._vehicles = {
            s.id: Vehicle(
                route=routes[i % len(routes)],
                distance=self.rng.uniform(0.0, routes[i % len(routes)].length),
                forward=self.rng.random() < 0.5,
            )
            for i, s in enumerate(mobile)
        }
        self.seed = seed
        self.bad_ratio = bad_ratio
        self.late_ratio = late_ratio
        self.clock = clock
        self.replay = replay
        self.stats = FleetStats()
        self._states = {s.id: _SensorState() for s in self.sensors}
        self._next = 0
        self._weather: tuple[object, DayWeather] | None = None

    def _context(self) -> _Context:
        now = self.clock()
        local = now.astimezone(PARIS)
        if self._weather is None or self._weather[0] != local.date():
            self._weather = (local.date(), day_weather(local.date(), self.seed))
        return _Context(now, local, self._weather[1], self.rng)

    def _shape(self, sensor: Sensor, ctx: _Context) -> Decoded:
        state = self._states[sensor.id]
        if sensor.codec == "milesight-vs121":
            return _vs121(sensor, ctx, state, self.registry)
        vehicle = self._vehicles.get(sensor.id)
        if vehicle is not None:
            return _pollutrack(ctx, vehicle)
        return _SHAPERS[(sensor.codec, sensor.kind)](sensor, ctx, state)

    def next_batch(self, size: int) -> list[Outgoing]:
        ctx = self._context()
        return [self._next_message(ctx) for _ in range(size)]

    def _next_message(self, ctx: _Context) -> Outgoing:
        sensor = self.sensors[self._next % len(self.sensors)]
        self._next += 1
        state = self._states[sensor.id]
        state.fcnt += 1
        rng = self.rng
        observed_at = ctx.now
        late = rng.random() < self.late_ratio
        if late:
            observed_at = ctx.now - timedelta(seconds=rng.uniform(120, 600))
        stats = self.stats
        stats.sent += 1
        if rng.random() < self.bad_ratio:
            stats.malformed += 1
            fport, payload = get_codec(sensor.codec).encode(
                self._shape(sensor, ctx), sensor.profile()
            )
            return self._malformed(sensor, fport, payload, state.fcnt, observed_at)
        stats.by_kind[sensor.kind] += 1
        if late:
            stats.late += 1
        cached = state.cached
        if cached is None or ctx.now - cached[0] >= REFRESH:
            fport, payload = get_codec(sensor.codec).encode(
                self._shape(sensor, ctx), sensor.profile()
            )
            template = b""
            if sensor.transport != "direct":
                template = self._message(
                    sensor, fport, payload, _SENTINEL_FCNT, _SENTINEL_TIME, late=False
                ).payload
            cached = state.cached = (ctx.now, fport, payload, template)
        if not state.topic:
            state.topic = (
                direct_topic(sensor) if sensor.transport == "direct" else self._topic(sensor)
            )
        if sensor.transport == "direct":
            return Outgoing(
                state.topic,
                cached[2],
                self._direct_properties(state.fcnt, observed_at, late or self.replay),
            )
        if late:
            when = _envelope_time(observed_at, sensor.transport)
        else:
            when = ctx.received_at.get(sensor.transport) or ctx.received_at.setdefault(
                sensor.transport, _envelope_time(observed_at, sensor.transport)
            )
        return Outgoing(state.topic, self._render(sensor, cached[3], state.fcnt, when))

    @staticmethod
    def _direct_properties(
        fcnt: int, observed_at: datetime, buffered: bool
    ) -> tuple[tuple[str, str], ...]:
        """``message_id`` makes redeliveries recognisable; ``observed_at`` only when buffered."""
        if buffered:
            return (("message_id", str(fcnt)), ("observed_at", observed_at.isoformat()))
        return (("message_id", str(fcnt)),)

    def _render(self, sensor: Sensor, template: bytes, fcnt: int, when: bytes) -> bytes:
        """The cached envelope with this message's frame counter, dedup id and receive time
        (``when``, already as the envelope writes it)."""
        dedup = _uuid4_text(self.rng.getrandbits(128)).encode()
        return (
            template.replace(_SENTINEL_FCNT_TEXT, b":%d" % fcnt)
            .replace(_SENTINEL_WHEN[sensor.transport], when)
            .replace(_SENTINEL_DEDUP_TEXT, dedup)
        )

    @staticmethod
    def _topic(sensor: Sensor) -> str:
        if sensor.transport == "chirpstack":
            assert sensor.dev_eui is not None
            return chirpstack_uplink_topic(APPLICATION_ID, sensor.dev_eui)
        return tts_uplink_topic(APPLICATION_ID, sensor.id, TENANT_ID)

    def _uplink(
        self, sensor: Sensor, fport: int, payload: bytes, fcnt: int, observed_at: datetime
    ) -> Uplink:
        network: Literal["chirpstack", "tts"] = (
            "chirpstack" if sensor.transport == "chirpstack" else "tts"
        )
        return Uplink(
            network=network,
            application_id=APPLICATION_ID,
            payload=payload,
            dev_eui=sensor.dev_eui,
            device_name=sensor.id,
            tenant_id=TENANT_ID if network == "tts" else None,
            device_profile=(
                sensor.codec if network == "chirpstack" else _tts_version_ids(sensor.codec)
            ),
            fport=fport,
            fcnt=fcnt,
            gateways=(
                GatewayRx(
                    "gw-nation-1",
                    float(self.rng.randint(-120, -40)),
                    round(self.rng.uniform(-10, 12), 1),
                ),
            ),
            received_at=observed_at,
            dedup_id=(
                _SENTINEL_DEDUP
                if fcnt == _SENTINEL_FCNT
                else _uuid4_text(self.rng.getrandbits(128))
            ),
        )

    def _message(
        self,
        sensor: Sensor,
        fport: int,
        payload: bytes,
        fcnt: int,
        observed_at: datetime,
        late: bool,
    ) -> Outgoing:
        if sensor.transport == "direct":
            properties = self._direct_properties(fcnt, observed_at, late)
            return Outgoing(direct_topic(sensor), payload, properties)
        uplink = self._uplink(sensor, fport, payload, fcnt, observed_at)
        if sensor.transport == "chirpstack":
            return Outgoing(self._topic(sensor), chirpstack_uplink_json(uplink))
        return Outgoing(self._topic(sensor), tts_uplink_json(uplink))

    def _malformed(
        self, sensor: Sensor, fport: int, payload: bytes, fcnt: int, observed_at: datetime
    ) -> Outgoing:
        """A message ingest must dead-letter: a truncated payload or a broken envelope."""
        codec = get_codec(sensor.codec)
        broken = payload[: self.rng.randint(0, max(len(payload) - 1, 0))]
        try:
            codec.decode(broken, fport, sensor.profile())
        except DecodeError:
            pass
        else:  # a prefix that still decodes (e.g. a whole record): send nothing instead
            broken = b""
        if sensor.transport == "direct":
            return Outgoing(direct_topic(sensor), broken, (("message_id", str(fcnt)),))
        good = self._message(sensor, fport, broken, fcnt, observed_at, late=False)
        if self.rng.random() < 0.5:  # an envelope cut in the middle is not JSON
            return Outgoing(good.topic, good.payload[: len(good.payload) // 2])
        return good
