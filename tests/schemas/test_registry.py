"""Schema loading, fingerprints and the public surface of ``schemas``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import schemas
from schemas import SchemaError

# CRC-64-AVRO as given in the Avro specification, section "Schema Fingerprints" (the Java
# reference code there, transcribed): the table is built from the 64-bit polynomial constant
# EMPTY, and the fingerprint of empty input is EMPTY itself.
EMPTY = 0xC15D213AA4D7A795


def _fp_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp)
    return table


FP_TABLE = _fp_table()


def rabin_fingerprint64(buf: bytes) -> int:
    fp = EMPTY
    for byte in buf:
        fp = (fp >> 8) ^ FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


# Signed 64-bit values published in Apache Avro's share/test/data/schema-tests.txt.
PUBLISHED = [
    ('"null"', 7195948357588979594),
    ('"boolean"', -6970731678124411036),
    ('"int"', 8247732601305521295),
    ('"long"', -3434872931120570953),
    ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
]


@pytest.mark.parametrize(("canonical", "signed"), PUBLISHED)
def test_reference_algorithm_matches_avro_published_vectors(canonical: str, signed: int) -> None:
    assert rabin_fingerprint64(canonical.encode()) == signed & 0xFFFF_FFFF_FFFF_FFFF


@pytest.mark.parametrize("label", sorted(schemas.all_versions()))
def test_fingerprint_is_crc64_avro_of_canonical_form_little_endian(label: str) -> None:
    loaded = schemas.all_versions()[label]
    expected = rabin_fingerprint64(loaded.canonical_form.encode("utf-8")).to_bytes(8, "little")
    assert loaded.fingerprint == expected
    assert loaded.header == b"\xc3\x01" + expected
    if loaded.current:
        assert schemas.fingerprint(loaded.name) == expected


def test_expected_schemas_are_loaded() -> None:
    assert set(schemas.SCHEMA_NAMES) == {
        "NoiseMeasurement",
        "AirMeasurement",
        "TrafficMeasurement",
        "OccupancyMeasurement",
        "Aggregate",
        "CellAggregate",
        "DeadLetter",
        "LateRecord",
    }
    assert "NoiseMeasurement.v0" in schemas.all_versions()
    assert "AirMeasurement.v0" in schemas.all_versions()


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_schema_is_parsed_record_in_namespace(name: str) -> None:
    parsed = schemas.schema(name)
    assert parsed["name"] == f"city.citysense.{name}"
    assert "__fastavro_parsed" in parsed
    assert schemas.schema(name) is parsed  # parsed once, shared
    raw = json.loads(schemas.schema_text(name))
    assert raw["namespace"] == "city.citysense"
    assert raw["name"] == name


def test_canonical_form_strips_docs_defaults_and_whitespace() -> None:
    form = schemas.canonical_form("NoiseMeasurement")
    assert form.startswith('{"name":"city.citysense.NoiseMeasurement","type":"record","fields":[')
    assert " " not in form
    assert '"doc"' not in form
    assert '"default"' not in form


def test_unknown_name_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="unknown schema 'Nope'"):
        schemas.fingerprint("Nope")
    with pytest.raises(SchemaError, match="unknown schema fingerprint 0000000000000000"):
        schemas.version_by_fingerprint(bytes(8))


def _named_types(schema: Any) -> Iterator[tuple[str, str]]:
    """(name, JSON) of every named type defined in a raw schema."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _named_types(branch)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed") and "name" in schema:
            yield schema["name"], json.dumps(schema, sort_keys=True)
        for field in schema.get("fields", ()):
            yield from _named_types(field["type"])
        for key in ("items", "values"):
            if key in schema:
                yield from _named_types(schema[key])
        if isinstance(schema.get("type"), dict | list):
            yield from _named_types(schema["type"])


def test_shared_named_types_are_identical_in_every_current_file() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for name in schemas.SCHEMA_NAMES:
        raw = json.loads(schemas.schema_text(name))
        for type_name, text in _named_types(raw):
            first = seen.setdefault(type_name, (name, text))
            assert first[1] == text, f"{type_name} differs between {first[0]} and {name}"
    assert {"MeasurementSource", "TrafficCount", "Direction", "RegionCount"} <= seen.keys()


@pytest.mark.parametrize("label", [k for k, v in schemas.all_versions().items() if not v.current])
def test_fields_added_since_a_kept_version_have_defaults(label: str) -> None:
    old = schemas.all_versions()[label]
    new = schemas.version(old.name)
    old_fields = {f["name"] for f in json.loads(old.text)["fields"]}
    for field in json.loads(new.text)["fields"]:
        if field["name"] not in old_fields:
            assert "default" in field, f"{old.name}.{field['name']} was added without a default"


def _fields(schema: Any) -> Iterator[dict[str, Any]]:
    """Every field of a raw schema, nested records included."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _fields(branch)
    elif isinstance(schema, dict):
        for field in schema.get("fields", ()):
            yield field
            yield from _fields(field["type"])
        for key in ("items", "values"):
            if key in schema:
                yield from _fields(schema[key])


@pytest.mark.parametrize("label", sorted(schemas.all_versions()))
def test_optional_fields_are_null_first_unions_defaulting_to_null(label: str) -> None:
    raw = json.loads(schemas.all_versions()[label].text)
    for field in _fields(raw):
        if isinstance(field["type"], list) and "null" in field["type"]:
            assert field["type"][0] == "null", field["name"]
            assert field.get("default", "missing") is None, field["name"]


def test_public_api_is_what_all_says() -> None:
    for public in schemas.__all__:
        assert hasattr(schemas, public), public
    exported = {n for n in dir(schemas) if not n.startswith("_")}
    modules = {"_framing", "_measurement", "_registry", "_topics"}
    assert exported - set(schemas.__all__) <= modules
