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
