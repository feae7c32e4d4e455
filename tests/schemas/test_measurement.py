"""Canonical measurement ↔ Avro record, for every kind."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

import schemas
from decoders import KINDS, Decoded, RegionCount, TrafficCount
from schemas import Measurement, SchemaError, Source
from tests.schemas._samples import OBSERVED, RECEIVED, SOURCE
from tests.schemas._strategies import decoded_of

MEASUREMENTS = {
    "noise": Measurement(
        sensor_id="nation-noise-07",
        kind="noise",
        observed_at=OBSERVED,
        received_at=RECEIVED,
        codec="cesva_ta120",
        values={"laeq_db": 62.4, "lz_8000hz_db": 31.0, "la90_db": 51.3, "battery_pct": 80.0},
        source=Source.from_mapping(SOURCE),
    ),
    "air": Measurement(
        sensor_id="nation-air-03",
        kind="air",
        observed_at=OBSERVED,
        received_at=RECEIVED,
        codec="decentlab_dl_ac",
        values={"pm10_ugm3": 20.5, "co_mgm3": 0.4, "hcho_mgm3": 0.01, "laeq_db": 50.0},
        partial=True,
    ),
    "traffic": Measurement(
        sensor_id="nation-cam-01",
        kind="traffic",
        observed_at=OBSERVED,
        received_at=RECEIVED,
        codec="milesight_vs133",
        counts=(
            TrafficCount(1, "in", "pedestrian", 3, 1000),
            TrafficCount(1, "out", "two_wheeler", None, 12),
        ),
        source=Source(network="tts", f_cnt=1),
    ),
    "occupancy": Measurement(
        sensor_id="pool-cam-01",
        kind="occupancy",
        observed_at=OBSERVED,
        received_at=RECEIVED,
        codec="pool_counter",
        values={"board_temperature_c": 41.0},
        regions=(RegionCount(1, 22), RegionCount(2, 0)),
    ),
}


@pytest.mark.parametrize("kind", KINDS)
def test_measurement_record_round_trip_through_avro(kind: str) -> None:
    measurement = MEASUREMENTS[kind]
    record = schemas.measurement_record(measurement)
    name = schemas.measurement_schema_name(kind)
    decoded_name, decoded = schemas.decode(schemas.encode(name, record))
    assert decoded_name == name
    assert decoded == record
    assert schemas.measurement_from_record(decoded) == measurement


def test_typed_quantities_go_to_fields_the_others_to_other_values() -> None:
    record = schemas.measurement_record(MEASUREMENTS["noise"])
    assert record["laeq_db"] == 62.4
    assert record["lz_8000hz_db"] == 31.0
    assert record["battery_pct"] == 80.0
    assert record["lafmax_db"] is None
    assert record["other_values"] == {"la90_db": 51.3}
    air = schemas.measurement_record(MEASUREMENTS["air"])
    assert air["other_values"] == {"laeq_db": 50.0}  # a noise quantity on an air sensor
    assert air["partial"] is True
    assert air["source"] == dict.fromkeys(SOURCE)


def test_typed_quantities_follow_design_section_3() -> None:
    assert {
        "laeq_db",
        "laf_db",
        "lafmax_db",
        "lamin_db",
        "lamax_db",
        "lceq_db",
        "lcpeak_db",
        "lzeq_db",
        "lz_31_5hz_db",
        "lz_63hz_db",
        "lz_8000hz_db",
    } <= schemas.typed_quantities("noise")
    assert schemas.typed_quantities("air") >= {
        "pm1_ugm3",
        "pm2_5_ugm3",
        "pm4_ugm3",
        "pm10_ugm3",
        "no2_ugm3",
        "o3_ugm3",
        "so2_ugm3",
        "co_mgm3",
        "co2_ppm",
        "tvoc_ppb",
        "hcho_mgm3",
        "temperature_c",
        "humidity_pct",
        "pressure_hpa",
    }
    health = {"battery_pct", "battery_v", "board_temperature_c"}
    for kind in KINDS:
        assert health <= schemas.typed_quantities(kind)
    assert schemas.typed_quantities("traffic") == health
    assert schemas.typed_quantities("occupancy") == health


def test_non_finite_values_survive() -> None:
    measurement = Measurement(
        "s", "noise", OBSERVED, RECEIVED, "c", values={"laeq_db": math.inf, "x_db": -math.inf}
    )
    _, record = schemas.decode(
        schemas.encode("NoiseMeasurement", schemas.measurement_record(measurement))
    )
    assert schemas.measurement_from_record(record).values == {
        "laeq_db": math.inf,
        "x_db": -math.inf,
    }


def test_times_in_other_zones_come_back_as_the_same_instant_in_utc() -> None:
    paris = timezone(timedelta(hours=2))
    measurement = Measurement(
        "s", "air", OBSERVED.astimezone(paris), RECEIVED.astimezone(paris), "c"
    )
    _, record = schemas.decode(
        schemas.encode("AirMeasurement", schemas.measurement_record(measurement))
    )
    back = schemas.measurement_from_record(record)
    assert back.observed_at == OBSERVED
    assert back.observed_at.utcoffset() == timedelta(0)


def test_naive_times_are_rejected() -> None:
    naive = datetime(2024, 6, 21, 12, 0)  # noqa: DTZ001  (the point of the test)
    with pytest.raises(SchemaError, match="observed_at must be timezone-aware"):
        schemas.measurement_record(Measurement("s", "air", naive, RECEIVED, "c"))


def test_counts_or_regions_on_the_wrong_kind_are_rejected() -> None:
    with pytest.raises(SchemaError, match="noise measurement of s has traffic counts"):
        schemas.measurement_record(
            Measurement(
                "s",
                "noise",
                OBSERVED,
                RECEIVED,
                "c",
                counts=(TrafficCount(1, "in", "car", 1, None),),
            )
        )
    with pytest.raises(SchemaError, match="air measurement of s has regions"):
        schemas.measurement_record(
            Measurement("s", "air", OBSERVED, RECEIVED, "c", regions=(RegionCount(1, 1),))
        )


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(SchemaError, match="unknown kind 'water'"):
        schemas.measurement_record(
            Measurement("s", "water", OBSERVED, RECEIVED, "c")  # type: ignore[arg-type]
        )


def test_from_decoded_completes_a_decoder_output() -> None:
    decoded = Decoded(
        codec="milesight_vs133",
        kind="traffic",
        values={"battery_pct": 50.0},
        counts=[TrafficCount(2, "out", "bus", 1, None)],
        partial=True,
    )
    measurement = Measurement.from_decoded(
        decoded,
        sensor_id="cam",
        observed_at=OBSERVED,
        received_at=RECEIVED,
        source={"network": "chirpstack", "rssi": -100.5},
    )
    assert measurement.source == Source(network="chirpstack", rssi=-100.5)
    assert measurement.counts == (TrafficCount(2, "out", "bus", 1, None),)
    assert measurement.partial is True
    decoded.values["battery_pct"] = 0.0  # the measurement does not alias the decoder's dict
    assert measurement.values == {"battery_pct": 50.0}
    record = schemas.measurement_record(measurement)
    assert schemas.measurement_from_record(record) == measurement


def test_unknown_source_key_is_rejected() -> None:
    with pytest.raises(SchemaError, match=r"unknown source fields \['rsi'\]"):
        Source.from_mapping({"rsi": -90})


def test_unknown_direction_read_back_is_rejected() -> None:
    record = schemas.measurement_record(MEASUREMENTS["traffic"])
    record["counts"][0]["direction"] = "up"
    with pytest.raises(SchemaError, match="unknown traffic direction 'up'"):
        schemas.measurement_from_record(record)


def test_timestamps_keep_microseconds() -> None:
    observed = datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    measurement = Measurement("s", "occupancy", observed, observed, "c")
    _, record = schemas.decode(
        schemas.encode("OccupancyMeasurement", schemas.measurement_record(measurement))
    )
    assert record["observed_at"] == observed


@pytest.mark.parametrize("kind", KINDS)
def test_record_has_every_field_of_the_schema_in_order(kind: str) -> None:
    record = schemas.measurement_record(MEASUREMENTS[kind])
    fields = schemas.schema(schemas.measurement_schema_name(kind))["fields"]
    assert list(record) == [f["name"] for f in fields]
    assert list(record["source"]) == [f.name for f in dataclasses.fields(Source)]


@pytest.mark.parametrize("kind", KINDS)
def test_decoded_record_is_measurement_record_without_the_measurement(kind: str) -> None:
    measurement = MEASUREMENTS[kind]
    decoded = decoded_of(measurement)
    for source in (measurement.source, {k: v for k, v in SOURCE.items() if v is not None}, None):
        via_measurement = schemas.measurement_record(
            Measurement.from_decoded(
                decoded,
                sensor_id=measurement.sensor_id,
                observed_at=OBSERVED,
                received_at=RECEIVED,
                source=source,
            )
        )
        direct = schemas.decoded_record(
            decoded,
            sensor_id=measurement.sensor_id,
            observed_at=OBSERVED,
            received_at=RECEIVED,
            source=source,
        )
        assert direct == via_measurement


@pytest.mark.parametrize("kind", KINDS)
def test_times_as_epoch_microseconds_write_the_same_frame(kind: str) -> None:
    measurement = MEASUREMENTS[kind]
    name = schemas.measurement_schema_name(kind)
    with_datetimes = schemas.decoded_record(
        decoded_of(measurement),
        sensor_id=measurement.sensor_id,
        observed_at=OBSERVED,
        received_at=RECEIVED,
        source=measurement.source,
    )
    with_ints = schemas.decoded_record(
        decoded_of(measurement),
        sensor_id=measurement.sensor_id,
        observed_at=schemas.epoch_micros(OBSERVED),
        received_at=schemas.epoch_micros(RECEIVED),
        source=measurement.source,
    )
    assert with_ints["observed_at"] == 1_718_973_015_123_456
    frame = schemas.encode(name, with_ints)
    assert frame == schemas.encode(name, with_datetimes)
    _, read = schemas.decode(frame)
    assert schemas.measurement_from_record(read) == measurement


def test_times_of_another_type_are_rejected() -> None:
    decoded = decoded_of(MEASUREMENTS["noise"])
    with pytest.raises(
        SchemaError, match="received_at must be a timezone-aware datetime or an int"
    ):
        schemas.decoded_record(
            decoded,
            sensor_id="s",
            observed_at=OBSERVED,
            received_at=1.7e15,  # type: ignore[arg-type]
        )
    with pytest.raises(SchemaError, match="observed_at must be timezone-aware"):
        schemas.decoded_record(
            decoded,
            sensor_id="s",
            observed_at=datetime(2024, 1, 1),  # noqa: DTZ001  (the point of the test)
            received_at=0,
        )
    with pytest.raises(SchemaError, match=r"unknown source fields \['rsi'\]"):
        schemas.decoded_record(
            decoded, sensor_id="s", observed_at=0, received_at=0, source={"rsi": -90}
        )
