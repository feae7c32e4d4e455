"""The single-object framing: round trips, header bytes, errors, no re-parsing."""

from __future__ import annotations

import threading
from io import BytesIO

import fastavro
import pytest

import schemas
from schemas import SchemaError, SingleObjectFraming
from tests.schemas._samples import sample_records

SAMPLES = sample_records()


def test_every_schema_has_a_sample() -> None:
    assert set(SAMPLES) == set(schemas.SCHEMA_NAMES)


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_single_object_round_trip(name: str) -> None:
    frame = schemas.encode(name, SAMPLES[name])
    assert schemas.decode(frame) == (name, SAMPLES[name])


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_single_object_header_is_marker_then_little_endian_fingerprint(name: str) -> None:
    frame = schemas.encode(name, SAMPLES[name])
    assert frame[:2] == b"\xc3\x01"
    assert frame[2:10] == schemas.fingerprint(name)
    body = BytesIO()
    fastavro.schemaless_writer(body, schemas.schema(name), SAMPLES[name])
    assert frame[10:] == body.getvalue()


def test_consecutive_encodes_do_not_share_bytes() -> None:
    first = schemas.encode("DeadLetter", SAMPLES["DeadLetter"])
    longer = dict(SAMPLES["DeadLetter"], payload=bytes(500))
    schemas.encode("DeadLetter", longer)
    assert schemas.decode(first) == ("DeadLetter", SAMPLES["DeadLetter"])
    assert schemas.encode("DeadLetter", SAMPLES["DeadLetter"]) == first


def test_encode_is_safe_across_threads() -> None:
    framing = SingleObjectFraming()
    expected = {name: framing.encode(name, record) for name, record in SAMPLES.items()}
    mismatches: list[str] = []

    def work() -> None:
        for _ in range(200):
            for name, record in SAMPLES.items():
                if framing.encode(name, record) != expected[name]:
                    mismatches.append(name)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == []


def test_unknown_fingerprint_is_a_schema_error() -> None:
    frame = schemas.encode("LateRecord", SAMPLES["LateRecord"])
    forged = frame[:2] + bytes(8) + frame[10:]
    with pytest.raises(SchemaError, match="unknown schema fingerprint 0000000000000000"):
        schemas.decode(forged)


@pytest.mark.parametrize("data", [b"", b"\xc3", b"\xc3\x01\x00\x01"])
def test_truncated_header_is_a_schema_error(data: bytes) -> None:
    with pytest.raises(SchemaError, match="truncated"):
        schemas.decode(data)


def test_wrong_marker_is_a_schema_error() -> None:
    frame = schemas.encode("LateRecord", SAMPLES["LateRecord"])
    with pytest.raises(SchemaError, match="marker 0001"):
        schemas.decode(b"\x00\x01" + frame[2:])


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_truncated_body_is_a_schema_error(name: str) -> None:
    frame = schemas.encode(name, SAMPLES[name])
    for cut in range(10, len(frame)):
        with pytest.raises(SchemaError):
            schemas.decode(frame[:cut])


def test_trailing_bytes_are_a_schema_error() -> None:
    frame = schemas.encode("DeadLetter", SAMPLES["DeadLetter"])
    with pytest.raises(SchemaError, match="1 trailing bytes"):
        schemas.decode(frame + b"\x00")


def test_record_not_matching_schema_is_a_schema_error() -> None:
    bad = dict(SAMPLES["DeadLetter"], payload="not bytes", received_at="yesterday")
    with pytest.raises(
        SchemaError,
        match=r"DeadLetter: record does not match the schema: field payload: expected bytes, got",
    ) as info:
        schemas.encode("DeadLetter", bad)
    assert info.value.__cause__ is not None
    missing = {k: v for k, v in SAMPLES["DeadLetter"].items() if k != "reason"}
    with pytest.raises(SchemaError, match="field reason: missing, and the field has no default"):
        schemas.encode("DeadLetter", missing)
    framing = SingleObjectFraming()
    with pytest.raises(SchemaError, match="DeadLetter: record does not match the schema: field"):
        framing.encode("DeadLetter", bad)


def test_encode_unknown_schema_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match=r"unknown schema 'NoiseMeasurement\.v0'"):
        schemas.encode("NoiseMeasurement.v0", SAMPLES["NoiseMeasurement"])


def test_encode_and_decode_never_parse_a_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schemas are parsed, and encoders and decoders compiled, at import.

    Encoding runs the compiled encoders, never fastavro's writer; decoding runs the compiled
    decoders, never fastavro's reader.
    """

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("parse_schema, fastavro or a compiler called on the hot path")

    for module in (fastavro, fastavro.schema, schemas._registry):
        monkeypatch.setattr(module, "parse_schema", forbidden)
    monkeypatch.setattr("schemas._framing.schemaless_writer", forbidden)
    monkeypatch.setattr("schemas._framing.schemaless_reader", forbidden)
    monkeypatch.setattr("schemas._encoder.compile_encoder", forbidden)
    monkeypatch.setattr("schemas._framing.compile_encoder", forbidden)
    monkeypatch.setattr("schemas._decoder.compile_decoder", forbidden)
    monkeypatch.setattr("schemas._framing.compile_decoder", forbidden)

    framing = SingleObjectFraming()
    for name, record in SAMPLES.items():
        assert schemas.decode(schemas.encode(name, record)) == (name, record)
    assert framing.decode(framing.encode("DeadLetter", SAMPLES["DeadLetter"]))[0] == "DeadLetter"
    old = schemas.all_versions()["NoiseMeasurement.v0"]
    v0_body = schemas.encode("NoiseMeasurement", SAMPLES["NoiseMeasurement"])[10:]
    with pytest.raises(SchemaError, match=r"NoiseMeasurement\.v0"):  # not v0 bytes: an error
        schemas.decode(old.header + v0_body)
