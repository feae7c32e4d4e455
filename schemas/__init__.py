"""Avro schemas of the Kafka contract (docs/architecture.md#kafka-contract) and their framings.

The ``.avsc`` files under ``schemas/avsc/`` are parsed once at import. Public surface:

- schema lookup: :func:`schema`, :func:`fingerprint`, :func:`canonical_form`,
  :func:`schema_text`, :data:`SCHEMA_NAMES`;
- framing: :func:`encode` / :func:`decode` (Avro single-object encoding),
  :class:`SingleObjectFraming`, errors as :class:`SchemaError`;
- the canonical measurement: :class:`Measurement`, :class:`Source`, :func:`measurement_record`,
  :func:`measurement_from_record` (a mobile air sensor's fix in ``position``, its record
  fields :data:`POSITION_FIELDS`), and :func:`decoded_record` (a decoder's output straight to its
  record), :func:`encode_measurement` (a measurement straight to its framed value) and
  :func:`encode_decoded` (a decoder's output straight to it, for ingest's hot path);
  :func:`epoch_micros` for ``timestamp-micros`` fields;
- topic names: :func:`measurement_topic`, :func:`aggregate_topic`, :data:`DEADLETTER_TOPIC`,
  :data:`LATE_TOPIC`, :data:`AIR_CELLS_TOPIC`.
"""

from schemas._encoder import epoch_micros
from schemas._framing import (
    SINGLE_OBJECT_MARKER,
    Framing,
    SingleObjectFraming,
    decode,
    encode,
)
from schemas._measurement import (
    MEASUREMENT_SCHEMAS,
    POSITION_FIELDS,
    Measurement,
    Source,
    decoded_record,
    measurement_from_record,
    measurement_record,
    measurement_schema_name,
    typed_quantities,
)
from schemas._measurement_encoder import encode_decoded, encode_measurement
from schemas._registry import (
    NAMESPACE,
    SCHEMA_NAMES,
    SchemaError,
    SchemaVersion,
    all_versions,
    canonical_form,
    fingerprint,
    schema,
    schema_text,
    version,
    version_by_fingerprint,
)
from schemas._topics import (
    AIR_CELLS_TOPIC,
    DEADLETTER_TOPIC,
    LATE_TOPIC,
    aggregate_topic,
    measurement_topic,
)

__all__ = [
    "AIR_CELLS_TOPIC",
    "DEADLETTER_TOPIC",
    "LATE_TOPIC",
    "MEASUREMENT_SCHEMAS",
    "NAMESPACE",
    "POSITION_FIELDS",
    "SCHEMA_NAMES",
    "SINGLE_OBJECT_MARKER",
    "Framing",
    "Measurement",
    "SchemaError",
    "SchemaVersion",
    "SingleObjectFraming",
    "Source",
    "aggregate_topic",
    "all_versions",
    "canonical_form",
    "decode",
    "decoded_record",
    "encode",
    "encode_decoded",
    "encode_measurement",
    "epoch_micros",
    "fingerprint",
    "measurement_from_record",
    "measurement_record",
    "measurement_schema_name",
    "measurement_topic",
    "schema",
    "schema_text",
    "typed_quantities",
    "version",
    "version_by_fingerprint",
]
