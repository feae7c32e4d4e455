"""The Avro schemas of docs/architecture.md#kafka-contract, loaded and parsed once at import.

Every ``avsc/<Name>.avsc`` file is the current version of the record ``city.citysense.<Name>``;
``avsc/history/<Name>.v<N>.avsc`` files are earlier versions, kept so that records written with
them can still be read (their fingerprints resolve in :func:`schemas.decode`). Each file is
self-contained: named types it uses (``MeasurementSource``, ``TrafficCount``, ...) are defined
inline, so any Avro implementation can parse one file alone.

Identity is the CRC-64-AVRO ("Rabin") fingerprint of the schema's Parsing Canonical Form, as the
Avro specification defines it ("Schema Fingerprints", Avro 1.11 specification); single-object
encoding carries it as 8 bytes, little-endian.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from types import MappingProxyType
from typing import Any

from fastavro import parse_schema
from fastavro.schema import SchemaParseException, to_parsing_canonical_form
from fastavro.schema import fingerprint as _fastavro_fingerprint

from schemas._avro import single_object_header

__all__ = [
    "NAMESPACE",
    "SCHEMA_NAMES",
    "SchemaError",
    "SchemaVersion",
    "all_versions",
    "canonical_form",
    "fingerprint",
    "schema",
    "schema_text",
    "version",
    "version_by_fingerprint",
]

NAMESPACE = "city.citysense"
_AVSC = "avsc"
_HISTORY = "history"
_SUFFIX = ".avsc"


class SchemaError(ValueError):
    """A frame or record that the citysense schemas cannot handle.

    Raised for an unknown schema name or fingerprint, a bad marker, a truncated frame or
    trailing bytes, and a record that does not match its schema. The library error, when there
    is one, is kept as ``__cause__``.
    """


@dataclass(frozen=True, slots=True, eq=False)
class SchemaVersion:
    """One version of one record schema.

    ``label`` is ``name`` for the current version and ``<name>.v<N>`` for a kept earlier one.
    ``parsed`` is the fastavro parsed schema: pass it to fastavro as is, never mutate it.
    ``header`` is the single-object encoding prefix ``C3 01`` + fingerprint.
    """

    name: str
    label: str
    current: bool
    text: str
    parsed: dict[str, Any]
    canonical_form: str
    fingerprint: bytes
    header: bytes


def _load(resource: Traversable, label: str, current: bool) -> SchemaVersion:
    text = resource.read_text(encoding="utf-8")
    try:
        raw = json.loads(text)
        parsed = parse_schema(raw)
    except (ValueError, SchemaParseException) as exc:
        raise SchemaError(f"{resource.name}: not a valid Avro schema: {exc}") from exc
    name = label.split(".", 1)[0]
    if (
        not isinstance(parsed, dict)
        or raw.get("type") != "record"
        or raw.get("namespace") != NAMESPACE
        or raw["name"] != name
    ):
        raise SchemaError(
            f"{resource.name}: expected a record named {NAMESPACE}.{name}, got "
            f"{raw.get('namespace')}.{raw.get('name')} ({raw.get('type')})"
        )
    canonical = to_parsing_canonical_form(parsed)
    # fastavro returns the 8 fingerprint bytes in little-endian order as hex, the order the
    # single-object encoding writes them in (tests check this against the spec's algorithm).
    digest = bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))
    return SchemaVersion(
        name=name,
        label=label,
        current=current,
        text=text,
        parsed=parsed,
        canonical_form=canonical,
        fingerprint=digest,
        header=single_object_header(digest),
    )


def _load_all() -> tuple[dict[str, SchemaVersion], dict[str, SchemaVersion]]:
    root = files("schemas").joinpath(_AVSC)
    current: dict[str, SchemaVersion] = {}
    versions: dict[str, SchemaVersion] = {}
    for resource in sorted(root.iterdir(), key=lambda r: r.name):
        if resource.is_file() and resource.name.endswith(_SUFFIX):
            loaded = _load(resource, resource.name.removesuffix(_SUFFIX), current=True)
            current[loaded.name] = loaded
            versions[loaded.label] = loaded
    history = root.joinpath(_HISTORY)
    if history.is_dir():
        for resource in sorted(history.iterdir(), key=lambda r: r.name):
            if not (resource.is_file() and resource.name.endswith(_SUFFIX)):
                continue
            label = resource.name.removesuffix(_SUFFIX)
            name, _, suffix = label.partition(".")
            if not (suffix.startswith("v") and suffix[1:].isdigit()) or name not in current:
                raise SchemaError(
                    f"history/{resource.name}: expected <Name>.v<N>.avsc of a current schema"
                )
            versions[label] = _load(resource, label, current=False)
    return current, versions


def _index_fingerprints(versions: Mapping[str, SchemaVersion]) -> dict[bytes, SchemaVersion]:
    by_fingerprint: dict[bytes, SchemaVersion] = {}
    for loaded in versions.values():
        clash = by_fingerprint.setdefault(loaded.fingerprint, loaded)
        if clash is not loaded:
            raise SchemaError(
                f"{loaded.label} and {clash.label} have the same fingerprint "
                f"{loaded.fingerprint.hex()}: an identical schema is kept twice"
            )
    return by_fingerprint


_CURRENT, _VERSIONS = _load_all()
_BY_FINGERPRINT = _index_fingerprints(_VERSIONS)

#: Names of the current record schemas, sorted.
SCHEMA_NAMES: tuple[str, ...] = tuple(sorted(_CURRENT))
_VERSIONS_VIEW: Mapping[str, SchemaVersion] = MappingProxyType(_VERSIONS)


def version(name: str) -> SchemaVersion:
    """The current version of the schema ``name`` (e.g. ``"NoiseMeasurement"``)."""
    try:
        return _CURRENT[name]
    except KeyError:
        raise SchemaError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}") from None


def version_by_fingerprint(digest: bytes) -> SchemaVersion:
    """The schema version, current or kept, whose 8-byte little-endian fingerprint is ``digest``."""
    try:
        return _BY_FINGERPRINT[digest]
    except KeyError:
        raise SchemaError(f"unknown schema fingerprint {digest.hex()}") from None


def all_versions() -> Mapping[str, SchemaVersion]:
    """Every loaded version by label: current ones (``Name``) and kept ones (``Name.vN``)."""
    return _VERSIONS_VIEW


def schema(name: str) -> dict[str, Any]:
    """The parsed current schema ``name``, ready for fastavro. Shared: do not mutate it."""
    return version(name).parsed


def fingerprint(name: str) -> bytes:
    """CRC-64-AVRO fingerprint of the current schema ``name``: 8 bytes, little-endian."""
    return version(name).fingerprint


def canonical_form(name: str) -> str:
    """Parsing Canonical Form of the current schema ``name`` (what the fingerprint covers)."""
    return version(name).canonical_form


def schema_text(name: str) -> str:
    """The ``.avsc`` text of the current schema ``name``, with docs and defaults.

    This is what to register in a schema registry: the canonical form drops the defaults that
    compatibility checks rely on.
    """
    return version(name).text
