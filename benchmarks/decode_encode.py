"""Ingest CPU path per message: codec decode + Avro encode of the canonical measurement, per codec.

Payloads are realistic: the simulator's ``Fleet`` on the ``nation`` scenario (a simulated day,
one message per sensor per simulated minute), LoRaWAN envelopes unwrapped as ingest would; the
two codecs the scenario does not use (Cayenne LPP, citysense JSON) get the same values through
their own encoders. For each codec, each figure is the median of 5 repetitions of ``MESSAGES``
messages, in µs of process CPU time per message (wall time is kept too; CPU time is what other
work on a shared machine inflates least):

- ``decode``: ``codec.decode(payload, fport, profile)`` alone;
- ``avro``: ``schemas.encode_decoded`` alone: the decoder's output completed with sensor id,
  times and network metadata, straight to the framed Avro value (single-object encoding);
- ``total``: the two in one loop, what ingest spends per message apart from MQTT and Kafka;
- ``via Measurement``: decode, ``Measurement.from_decoded``, ``schemas.encode_measurement``: the
  same bytes through the public canonical measurement object;
- ``record path``: decode, ``Measurement.from_decoded`` and the generic record encoder
  (``schemas.encode(name, measurement_record(m))``), the reference the fast paths are checked
  against;
- peers: ``json.dumps`` and ``orjson.dumps`` of the same record (timestamps as µs integers).

The garbage collector is set as the stages run it (``citysense.runtime``: young threshold
50,000, start-up objects frozen), so a figure is the code's cost, not that of collections
walking the benchmark's own 10,000 samples. Whether the hot modules run compiled (``make
native``, mypyc) or as plain Python is printed with the results.

One more figure for the nation mix: ingest's own code from the MQTT message, ``Router.route``
(topic, LoRaWAN envelope, registry lookup, decode, checks) then ``accepted_kafka_record`` (Avro
value, key, headers).

Target: decode + Avro encode (the ``total`` column) under 10 µs per message, for every codec and
for the nation mix.
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from benchmarks import median, table
from citysense.registry import Registry, Sensor, load_registry, scenario_path
from citysense.runtime import GC_YOUNG_THRESHOLD
from citysense.settings import IngestSettings
from decoders import Codec, Decoded, DeviceProfile, all_codecs, get_codec
from decoders.envelopes import Uplink, parse_uplink
from ingest import Accepted, Incoming, Router
from ingest._records import accepted_kafka_record
from schemas import (
    Measurement,
    Source,
    encode,
    encode_decoded,
    encode_measurement,
    measurement_record,
    measurement_schema_name,
)
from simulators import Fleet, Outgoing

MESSAGES = 5_000
REPETITIONS = 5
TARGET_US = 10.0
#: Simulated minutes of fleet traffic sampled (one message per sensor per minute).
FLEET_MINUTES = 240
SEED = 7
_DAY_START = datetime(2026, 3, 3, 5, 0, tzinfo=UTC)  # 06:00 in Paris: the morning rise
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Cayenne LPP devices: LPP names mapped onto canonical quantities by the registry.
_LPP_NOISE = DeviceProfile(
    channel_map={
        "analog_in_1": "laeq_db",
        "analog_in_2": "laf_db",
        "analog_in_3": "lafmax_db",
        "analog_in_4": "battery_pct",
    }
)
_LPP_AIR = DeviceProfile(
    channel_map={
        "temperature_1": "temperature_c",
        "relative_humidity_2": "humidity_pct",
        "barometric_pressure_3": "pressure_hpa",
        "luminosity_4": "co2_ppm",
        "analog_in_5": "pm2_5_ugm3",
        "analog_in_6": "pm10_ugm3",
    }
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One message as ingest meets it after the MQTT layer."""

    codec: Codec
    payload: bytes
    fport: int | None
    profile: DeviceProfile
    sensor_id: str
    received_at: datetime
    source: Source
    #: The MQTT message it came in (an envelope or the raw payload).
    topic: str
    body: bytes
    user_properties: tuple[tuple[str, str], ...] = ()


def _source(uplink: Uplink) -> Source:
    gateway = uplink.gateways[0] if uplink.gateways else None
    return Source(
        network=uplink.network,
        gateway_id=gateway.gateway_id if gateway else None,
        rssi=gateway.rssi if gateway else None,
        snr=gateway.snr if gateway else None,
        f_cnt=uplink.fcnt,
        dev_eui=uplink.dev_eui,
        dedup_id=uplink.dedup_id,
        idempotency_key=uplink.idempotency_key,
    )


def _sensor_of(registry: Registry, uplink: Uplink) -> Sensor:
    sensor = registry.by_dev_eui.get(uplink.dev_eui or "")
    if sensor is None:
        sensor = registry.get(uplink.device_name or "")
    if sensor is None:
        raise LookupError(f"no sensor for uplink {uplink.dev_eui} / {uplink.device_name}")
    return sensor


def _unwrap(registry: Registry, message: Outgoing, received_at: datetime) -> Sample:
    """What ingest does before decoding: find the sensor, unwrap an envelope."""
    if not message.topic.startswith(("application/", "v3/")):
        # sensors/<id>/up or gateways/<gateway>/sensors/<id>/up
        parts = message.topic.split("/")
        sensor = registry.sensors[parts[1] if parts[0] == "sensors" else parts[3]]
        return Sample(
            get_codec(sensor.codec),
            message.payload,
            None,
            registry.profile(sensor.id),
            sensor.id,
            received_at,
            Source(network="mqtt", gateway_id=sensor.gateway),
            message.topic,
            message.payload,
            message.user_properties,
        )
    uplink = parse_uplink(message.topic, message.payload)
    sensor = _sensor_of(registry, uplink)
    return Sample(
        get_codec(sensor.codec),
        uplink.payload,
        uplink.fport,
        registry.profile(sensor.id),
        sensor.id,
        received_at,
        _source(uplink),
        message.topic,
        message.payload,
        message.user_properties,
    )


def fleet_samples() -> tuple[Registry, list[Sample]]:
    """The nation fleet's messages over ``FLEET_MINUTES`` simulated minutes, in fleet order."""
    registry = load_registry(scenario_path("nation"))
    now = [_DAY_START]

    def clock() -> datetime:
        now[0] += timedelta(minutes=1)
        return now[0]

    fleet = Fleet(registry, seed=SEED, clock=clock)
    samples: list[Sample] = []
    for _ in range(FLEET_MINUTES):
        batch = fleet.next_batch(len(fleet.sensors))
        received = now[0] + timedelta(milliseconds=350)
        samples.extend(_unwrap(registry, message, received) for message in batch)
    return registry, samples


def _reencoded(samples: Sequence[Sample], codec_name: str) -> list[Sample]:
    """The fleet's values carried by another codec (its encoder shapes the payload)."""
    codec = get_codec(codec_name)
    out: list[Sample] = []
    for sample in samples:
        decoded = sample.codec.decode(sample.payload, sample.fport, sample.profile)
        profile = DeviceProfile()
        if codec_name == "cayenne-lpp":
            if sample.codec.name == "milesight-ws302":
                profile = _LPP_NOISE
            elif sample.codec.name == "milesight-am307":
                profile = _LPP_AIR
            else:
                continue
            decoded = Decoded(codec_name, decoded.kind, dict(decoded.values))
        else:
            decoded.codec = codec_name
            decoded.observed_at = sample.received_at - timedelta(seconds=2)
        try:
            _fport, payload = codec.encode(decoded, profile)
        except ValueError:
            continue
        out.append(
            Sample(
                codec,
                payload,
                None,
                profile,
                sample.sensor_id,
                sample.received_at,
                Source(network="mqtt"),
                f"sensors/{sample.sensor_id}/up",
                payload,
            )
        )
    return out


def _cycle(samples: Sequence[Sample], count: int) -> list[Sample]:
    repeat = math.ceil(count / len(samples))
    return (list(samples) * repeat)[:count]


# --- the measured loops -------------------------------------------------------------------------


def _decode_only(samples: Sequence[Sample]) -> Callable[[], None]:
    items = [(s.codec.decode, s.payload, s.fport, s.profile) for s in samples]

    def run() -> None:
        for decode, payload, fport, profile in items:
            decode(payload, fport, profile)

    return run


def _decoded(samples: Sequence[Sample]) -> list[Decoded]:
    return [s.codec.decode(s.payload, s.fport, s.profile) for s in samples]


def _measurements(samples: Sequence[Sample], decoded: Sequence[Decoded]) -> list[Measurement]:
    return [
        Measurement.from_decoded(
            d,
            sensor_id=s.sensor_id,
            observed_at=d.observed_at or s.received_at,
            received_at=s.received_at,
            source=s.source,
        )
        for s, d in zip(samples, decoded, strict=True)
    ]


def _records(samples: Sequence[Sample]) -> list[tuple[str, dict[str, Any]]]:
    measurements = _measurements(samples, _decoded(samples))
    return [(measurement_schema_name(m.kind), measurement_record(m)) for m in measurements]


def _avro_only(samples: Sequence[Sample]) -> Callable[[], None]:
    items = [
        (d, s.sensor_id, d.observed_at or s.received_at, s.received_at, s.source)
        for s, d in zip(samples, _decoded(samples), strict=True)
    ]

    def run() -> None:
        for decoded, sensor_id, observed_at, received_at, source in items:
            encode_decoded(
                decoded,
                sensor_id=sensor_id,
                observed_at=observed_at,
                received_at=received_at,
                source=source,
            )

    return run


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its timestamps as µs integers, as Avro stores them: JSON-serialisable."""
    out = dict(record)
    for key in ("observed_at", "received_at"):
        out[key] = (record[key] - _EPOCH) // timedelta(microseconds=1)
    return out


def _json_peer(samples: Sequence[Sample]) -> Callable[[], None]:
    items = [_plain(record) for _name, record in _records(samples)]
    dumps = json.dumps

    def run() -> None:
        for record in items:
            dumps(record)

    return run


def _orjson_peer(samples: Sequence[Sample]) -> Callable[[], None]:
    items = [_plain(record) for _name, record in _records(samples)]
    dumps = orjson.dumps

    def run() -> None:
        for record in items:
            dumps(record)

    return run


def _total(samples: Sequence[Sample]) -> Callable[[], None]:
    """Decode and encode the value, as ingest does per message."""
    items = [
        (s.codec.decode, s.payload, s.fport, s.profile, s.sensor_id, s.received_at, s.source)
        for s in samples
    ]

    def run() -> None:
        for decode, payload, fport, profile, sensor_id, received_at, source in items:
            decoded = decode(payload, fport, profile)
            encode_decoded(
                decoded,
                sensor_id=sensor_id,
                observed_at=decoded.observed_at or received_at,
                received_at=received_at,
                source=source,
            )

    return run


def _via_measurement(
    samples: Sequence[Sample], encode_value: Callable[[Measurement], bytes] = encode_measurement
) -> Callable[[], None]:
    """Decode, build the measurement and encode its value."""
    items = [
        (s.codec.decode, s.payload, s.fport, s.profile, s.sensor_id, s.received_at, s.source)
        for s in samples
    ]
    from_decoded = Measurement.from_decoded

    def run() -> None:
        for decode, payload, fport, profile, sensor_id, received_at, source in items:
            decoded = decode(payload, fport, profile)
            measurement = from_decoded(
                decoded,
                sensor_id=sensor_id,
                observed_at=decoded.observed_at or received_at,
                received_at=received_at,
                source=source,
            )
            encode_value(measurement)

    return run


def _record_path_value(measurement: Measurement) -> bytes:
    """The generic record encoder, the reference ``encode_measurement`` is checked against."""
    return encode(measurement_schema_name(measurement.kind), measurement_record(measurement))


def _ingest_router(registry: Registry, samples: Sequence[Sample]) -> Callable[[], None]:
    """ingest's own code from the MQTT message: ``Router.route`` (topic, envelope, registry,
    decode, checks) then ``accepted_kafka_record`` (Avro value, key, headers)."""
    router = Router(registry, IngestSettings())
    items = [Incoming(s.topic, s.body, s.received_at, dict(s.user_properties)) for s in samples]
    for incoming in items:
        if not isinstance(router.route(incoming), Accepted):
            raise RuntimeError(f"ingest rejected a fleet message on {incoming.topic}")

    def run() -> None:
        for incoming in items:
            accepted = router.route(incoming)
            assert isinstance(accepted, Accepted)
            accepted_kafka_record(accepted)

    return run


@dataclass(frozen=True, slots=True)
class Timing:
    """Medians over ``REPETITIONS`` of the process CPU time and the wall time per message, in µs.

    CPU time is the headline: other work on the machine inflates wall time, hardly CPU time.
    """

    cpu_us: float
    wall_us: float


def _per_message(run: Callable[[], None], count: int) -> Timing:
    """Time ``run`` (a loop over ``count`` messages) ``REPETITIONS`` times after a warm-up."""
    run()
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(REPETITIONS):
        gc.collect()
        cpu_started = time.process_time_ns()
        wall_started = time.perf_counter_ns()
        run()
        wall.append((time.perf_counter_ns() - wall_started) / count / 1000)
        cpu.append((time.process_time_ns() - cpu_started) / count / 1000)
    return Timing(median(cpu), median(wall))


_COLUMNS = ("decode", "avro", "total", "via Measurement", "record path", "json", "orjson")


def _measure(samples: Sequence[Sample]) -> dict[str, Timing]:
    count = len(samples)
    return {
        "decode": _per_message(_decode_only(samples), count),
        "avro": _per_message(_avro_only(samples), count),
        "total": _per_message(_total(samples), count),
        "via Measurement": _per_message(_via_measurement(samples), count),
        "record path": _per_message(_via_measurement(samples, _record_path_value), count),
        "json": _per_message(_json_peer(samples), count),
        "orjson": _per_message(_orjson_peer(samples), count),
    }


def _compiled() -> str:
    """Which hot modules run as mypyc extensions (``make native``) rather than plain Python."""
    import decoders._reader
    import schemas._measurement_encoder

    modules = (decoders._reader, schemas._measurement_encoder)
    native = [m.__name__ for m in modules if (m.__file__ or "").endswith(".so")]
    if len(native) == len(modules):
        return "compiled (mypyc)"
    return "plain Python" if not native else f"partly compiled ({', '.join(native)})"


def main() -> dict[str, Any]:
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    try:
        return _main()
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _main() -> dict[str, Any]:
    registry, samples = fleet_samples()
    by_codec: dict[str, list[Sample]] = {}
    for sample in samples:
        by_codec.setdefault(sample.codec.name, []).append(sample)
    for extra in ("cayenne-lpp", "citysense-json"):
        if extra not in by_codec:
            by_codec[extra] = _reencoded(samples, extra)
    missing = [c.name for c in all_codecs() if not by_codec.get(c.name)]
    if missing:
        raise RuntimeError(f"no sample payloads for codecs {missing}")

    gc.collect()
    gc.freeze()  # as the stages do after start-up
    compiled = _compiled()
    print(
        f"{len(samples):,} fleet messages ({FLEET_MINUTES} simulated minutes of the nation "
        f"scenario); median of {REPETITIONS} x {MESSAGES:,} messages per figure; hot modules: "
        f"{compiled}",
        flush=True,
    )
    rows: dict[str, dict[str, Timing]] = {}
    payload_bytes: dict[str, float] = {}
    for codec in all_codecs():
        pool = by_codec[codec.name]
        rows[codec.name] = _measure(_cycle(pool, MESSAGES))
        payload_bytes[codec.name] = sum(len(s.payload) for s in pool) / len(pool)
        total = rows[codec.name]["total"]
        print(
            f"  {codec.name}: total {total.cpu_us:.2f} µs CPU, {total.wall_us:.2f} µs wall",
            flush=True,
        )
    mix = _cycle(samples, MESSAGES)
    rows["nation mix"] = _measure(mix)
    payload_bytes["nation mix"] = sum(len(s.payload) for s in samples) / len(samples)
    ingest = _per_message(_ingest_router(registry, mix), len(mix))

    def cpu(name: str, column: str) -> float:
        return rows[name][column].cpu_us

    table_rows: list[list[object]] = [
        [
            name,
            payload_bytes[name],
            *(cpu(name, column) for column in _COLUMNS),
            rows[name]["total"].wall_us,
            "PASS" if cpu(name, "total") < TARGET_US else "FAIL",
        ]
        for name in rows
    ]
    print()
    print(
        table(
            ["codec", "bytes", *_COLUMNS, "total wall", "target"],
            table_rows,
            title=(
                f"µs of CPU per message, median of {REPETITIONS} (total wall: the same loop in "
                "wall time); total = decode + Avro in one loop, as ingest runs them; "
                "json / orjson: peers serialising the same record"
            ),
        )
    )
    enveloped = sum(1 for s in samples if s.topic.startswith(("application/", "v3/")))
    print(
        f"\nnation mix through ingest's Router.route + accepted_kafka_record from the MQTT "
        f"message ({enveloped / len(samples):.0%} in LoRaWAN envelopes): "
        f"{ingest.cpu_us:.2f} µs CPU ({ingest.wall_us:.2f} µs wall) per message"
    )
    passing = [name for name in rows if cpu(name, "total") < TARGET_US]
    codec_count = len(rows) - 1
    codecs_passing = len([name for name in passing if name != "nation mix"])
    target_met = len(passing) == len(rows)
    mix_line = (
        f"nation mix {cpu('nation mix', 'total'):.2f} µs = decode "
        f"{cpu('nation mix', 'decode'):.2f} + Avro {cpu('nation mix', 'avro'):.2f}; via "
        f"Measurement {cpu('nation mix', 'via Measurement'):.2f}; orjson peer "
        f"{cpu('nation mix', 'orjson'):.2f}"
    )
    print(
        f"target decode + Avro encode < {TARGET_US:.0f} µs/message: "
        f"{'PASS' if target_met else 'FAIL'} ({codecs_passing}/{codec_count} codecs under it; "
        f"{mix_line})"
    )
    return {
        "unit": "µs/message (cpu_us: process CPU time, wall_us: wall time; medians)",
        "hot_modules": compiled,
        "messages_per_repetition": MESSAGES,
        "repetitions": REPETITIONS,
        "target_us": TARGET_US,
        "by_codec": {
            name: {
                "payload_bytes": payload_bytes[name],
                **{column: asdict(timing) for column, timing in figures.items()},
            }
            for name, figures in rows.items()
        },
        "nation_mix_ingest_router": asdict(ingest),
        "target_met": target_met,
        "summary": (
            f"nation mix {cpu('nation mix', 'total'):.2f} µs CPU/msg (target < "
            f"{TARGET_US:.0f}); {codecs_passing}/{codec_count} codecs under it; orjson peer "
            f"{cpu('nation mix', 'orjson'):.2f} µs"
        ),
    }
