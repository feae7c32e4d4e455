"""Records written with a kept older schema version are read with the current one.

``NoiseMeasurement.v0`` has no ``lcpeak_db`` field: a v0 writer put that quantity in
``other_values``. Read with the current schema the field defaults to null, and the canonical
measurement gets the value back from ``other_values``.
"""

from __future__ import annotations

import random
from io import BytesIO
from typing import Any

import fastavro
import fastavro.utils
import pytest

import schemas
from decoders import Position
from schemas import Measurement
from tests.schemas._samples import OBSERVED, RECEIVED, SOURCE

V0 = schemas.all_versions()["NoiseMeasurement.v0"]


def _v0_record() -> dict[str, Any]:
    fields = [f["name"] for f in V0.parsed["fields"]]
    assert "lcpeak_db" not in fields
    assert "lcpeak_db" in {f["name"] for f in schemas.schema("NoiseMeasurement")["fields"]}
    record: dict[str, Any] = dict.fromkeys(fields)
    record.update(
        sensor_id="nation-noise-02",
        kind="noise",
        observed_at=OBSERVED,
        received_at=RECEIVED,
        codec="cesva_ta120",
        partial=False,
        laeq_db=64.0,
        other_values={"lcpeak_db": 99.5},
        source=dict(SOURCE),
    )
    return record


def _v0_body() -> bytes:
    body = BytesIO()
    fastavro.schemaless_writer(body, V0.parsed, _v0_record())
    return body.getvalue()


def test_kept_version_is_older_and_distinct() -> None:
    assert not V0.current
    assert V0.name == "NoiseMeasurement"
    assert V0.fingerprint != schemas.fingerprint("NoiseMeasurement")
    assert schemas.version_by_fingerprint(V0.fingerprint) is V0


def test_single_object_written_with_v0_is_read_with_current_schema() -> None:
    frame = V0.header + _v0_body()
    name, record = schemas.decode(frame)
    assert name == "NoiseMeasurement"
    expected = dict(_v0_record(), lcpeak_db=None)
    assert record == expected
    assert record.keys() == {f["name"] for f in schemas.schema("NoiseMeasurement")["fields"]}
    measurement = schemas.measurement_from_record(record)
    assert measurement.values == {"laeq_db": 64.0, "lcpeak_db": 99.5}


def test_v0_record_and_current_record_give_the_same_measurement() -> None:
    _, old = schemas.decode(V0.header + _v0_body())
    current = schemas.measurement_record(schemas.measurement_from_record(old))
    assert current["lcpeak_db"] == 99.5
    assert current["other_values"] == {}
    _, new = schemas.decode(schemas.encode("NoiseMeasurement", current))
    assert schemas.measurement_from_record(new) == schemas.measurement_from_record(old)


@pytest.mark.parametrize("label", [k for k, v in schemas.all_versions().items() if not v.current])
def test_every_kept_version_resolves_to_the_current_one(
    label: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generic check for each kept version: records it writes, the current one reads."""
    # fastavro's generator draws from the module-level random; give it a seeded one.
    monkeypatch.setattr(fastavro.utils, "random", random.Random(20240621))
    old = schemas.all_versions()[label]
    current = schemas.schema(old.name)
    defaults = {f["name"]: f.get("default") for f in current["fields"]}
    for record in fastavro.utils.generate_many(old.parsed, 20):
        body = BytesIO()
        fastavro.schemaless_writer(body, old.parsed, record)
        as_written = fastavro.schemaless_reader(BytesIO(body.getvalue()), old.parsed, None)
        assert isinstance(as_written, dict)
        name, read = schemas.decode(old.header + body.getvalue())
        assert name == old.name
        assert read == {key: as_written.get(key, default) for key, default in defaults.items()}


def test_current_measurement_still_decodes_after_round_trip() -> None:
    measurement = Measurement("s", "noise", OBSERVED, RECEIVED, "c", values={"lcpeak_db": 100.0})
    record = schemas.measurement_record(measurement)
    assert record["lcpeak_db"] == 100.0
    assert (
        schemas.measurement_from_record(
            schemas.decode(schemas.encode("NoiseMeasurement", record))[1]
        )
        == measurement
    )


def test_late_record_v0_reads_with_the_default_reason_and_current_reads_with_v0() -> None:
    """``LateRecord`` gained ``reason`` (default ``beyond_allowed_lateness``): both ways."""
    v0 = schemas.all_versions()["LateRecord.v0"]
    old = {
        "topic": "city.noise.measurements.v1",
        "partition": 1,
        "offset": 7,
        "key": b"noise-001",
        "value": b"\xc3\x01" + bytes(8),
        "observed_at": OBSERVED,
        "watermark": RECEIVED,
        "received_at": RECEIVED,
    }
    body = BytesIO()
    fastavro.schemaless_writer(body, v0.parsed, old)
    name, record = schemas.decode(v0.header + body.getvalue())
    assert name == "LateRecord"
    assert record == {**old, "reason": "beyond_allowed_lateness"}
    # A reader still on v0 reads a current record and ignores the new field.
    current = schemas.encode("LateRecord", {**old, "reason": "cumulative_counter_out_of_order"})
    read = fastavro.schemaless_reader(
        BytesIO(current[10:]), schemas.version("LateRecord").parsed, v0.parsed
    )
    assert read == old


# --- AirMeasurement v0 → v1: a mobile sensor's position --------------------------------------

AIR_V0 = schemas.all_versions()["AirMeasurement.v0"]


def _air_v0_record() -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(f["name"] for f in AIR_V0.parsed["fields"])
    record.update(
        sensor_id="nation-air-01",
        kind="air",
        observed_at=OBSERVED,
        received_at=RECEIVED,
        codec="milesight-am307",
        partial=False,
        pm2_5_ugm3=12.0,
        other_values={},
        source=dict(SOURCE),
    )
    return record


def test_air_v0_has_no_position_and_v1_adds_it_with_null_defaults() -> None:
    old = {f["name"] for f in AIR_V0.parsed["fields"]}
    new = {f["name"]: f for f in schemas.schema("AirMeasurement")["fields"]}
    assert set(new) - old == set(schemas.POSITION_FIELDS)
    for name in schemas.POSITION_FIELDS:
        assert new[name]["type"] == ["null", "double"]
        assert new[name]["default"] is None


def test_air_written_with_v0_is_read_with_v1_without_a_position() -> None:
    body = BytesIO()
    fastavro.schemaless_writer(body, AIR_V0.parsed, _air_v0_record())
    name, record = schemas.decode(AIR_V0.header + body.getvalue())
    assert name == "AirMeasurement"
    assert (record["lat"], record["lon"], record["position_accuracy_m"]) == (None, None, None)
    assert record["pm2_5_ugm3"] == 12.0
    measurement = schemas.measurement_from_record(record)
    assert measurement.position is None
    assert measurement.values == {"pm2_5_ugm3": 12.0}


def test_air_written_with_v1_is_read_by_a_v0_consumer() -> None:
    """Forward: a consumer still on v0 (its reader schema) reads v1 records, position ignored."""
    measurement = Measurement(
        sensor_id="pollutrack-07",
        kind="air",
        observed_at=OBSERVED,
        received_at=RECEIVED,
        codec="cayenne-lpp",
        values={"pm2_5_ugm3": 18.5, "gps_1_altitude": 35.0},
        position=Position(48.8584, 2.3488, 6.0),
    )
    frame = schemas.encode_measurement(measurement)
    assert frame[2:10] == schemas.fingerprint("AirMeasurement")
    old: Any = fastavro.schemaless_reader(
        BytesIO(frame[10:]), schemas.schema("AirMeasurement"), AIR_V0.parsed
    )
    assert set(old) == {f["name"] for f in AIR_V0.parsed["fields"]}
    assert old["pm2_5_ugm3"] == 18.5
    assert old["other_values"] == {"gps_1_altitude": 35.0}
    # And the current reader gets the position back.
    _, record = schemas.decode(frame)
    assert schemas.measurement_from_record(record).position == Position(48.8584, 2.3488, 6.0)


def test_the_sink_writes_null_positions_for_v0_and_the_fix_for_v1() -> None:
    from sinks.timescale._writer import MEASUREMENT_TABLES, decode_record, row_values

    columns = MEASUREMENT_TABLES["air"].column_names
    assert columns[-3:] == schemas.POSITION_FIELDS
    body = BytesIO()
    fastavro.schemaless_writer(body, AIR_V0.parsed, _air_v0_record())
    _, old_row = decode_record(AIR_V0.header + body.getvalue())
    assert not isinstance(old_row, dict)  # a flat measurement: its row
    old = dict(zip(columns, row_values("air_measurements", old_row), strict=True))
    assert (old["lat"], old["lon"], old["position_accuracy_m"]) == (None, None, None)
    assert old["pm2_5_ugm3"] == 12.0
    fixed = Measurement(
        sensor_id="pollutrack-07",
        kind="air",
        observed_at=OBSERVED,
        received_at=RECEIVED,
        codec="cayenne-lpp",
        values={"pm2_5_ugm3": 18.5},
        position=Position(48.8584, 2.3488, None),
    )
    _, new_row = decode_record(schemas.encode_measurement(fixed))
    assert not isinstance(new_row, dict)
    new = dict(zip(columns, row_values("air_measurements", new_row), strict=True))
    assert (new["lat"], new["lon"], new["position_accuracy_m"]) == (48.8584, 2.3488, None)


def test_a_position_on_another_kind_than_air_is_refused() -> None:
    noise = Measurement(
        sensor_id="noise-001",
        kind="noise",
        observed_at=OBSERVED,
        received_at=RECEIVED,
        codec="cayenne-lpp",
        values={"laeq_db": 60.0},
        position=Position(48.85, 2.39),
    )
    with pytest.raises(schemas.SchemaError, match="has a position"):
        schemas.encode_measurement(noise)
