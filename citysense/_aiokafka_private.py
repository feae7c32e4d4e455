"""Every use of aiokafka's private names, in one place, checked against aiokafka's version.

The ``kafka-batch`` fast path (docs/runtime.md#fast-paths) fills ingest's record batches through
the C record-batch builder aiokafka keeps in ``BatchBuilder._builder``: its public
``BatchBuilder.append`` wraps that builder with keyword arguments, a serializer check and a
relative offset it keeps in ``_relative_offset``, per record. With no serializers configured,
appending to the C builder directly and setting the count writes the same bytes. These names are
not aiokafka's contract, so they are used only here, and only when the installed aiokafka is in
:data:`SUPPORTED_VERSIONS`; outside it :func:`supported` logs one warning and answers False, and
ingest keeps the public ``append``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import aiokafka
from aiokafka.producer.message_accumulator import BatchBuilder

__all__ = [
    "SUPPORTED_VERSIONS",
    "KafkaRecordLike",
    "append_all",
    "supported",
    "version_supported",
]

log = logging.getLogger("citysense.aiokafka")

#: aiokafka releases whose private names are used here: from the first, up to (not including)
#: the second. Widen only after reading the new release's ``BatchBuilder``.
SUPPORTED_VERSIONS: tuple[tuple[int, int, int], tuple[int, int, int]] = ((0, 14, 0), (0, 15, 0))


class KafkaRecordLike(Protocol):
    """What a record needs for :func:`append_all` (ingest's ``KafkaRecord``)."""

    @property
    def key(self) -> bytes: ...
    @property
    def value(self) -> bytes: ...
    @property
    def headers(self) -> list[tuple[str, bytes]]: ...


_checked: bool | None = None


def version_supported(version: str) -> bool:
    """Whether aiokafka ``version`` is in :data:`SUPPORTED_VERSIONS`."""
    parts = version.split(".")[:3]
    if len(parts) < 3 or not all(part.isdigit() for part in parts):
        return False
    low, high = SUPPORTED_VERSIONS
    return low <= (int(parts[0]), int(parts[1]), int(parts[2])) < high


def supported() -> bool:
    """Whether the installed aiokafka is one the fast path knows; the first answer is kept, and
    a False one is logged once as a warning."""
    global _checked
    if _checked is None:
        installed = str(getattr(aiokafka, "__version__", "unknown"))
        _checked = version_supported(installed)
        if not _checked:
            low, high = (".".join(map(str, v)) for v in SUPPORTED_VERSIONS)
            log.warning(
                "aiokafka %s is outside the range the kafka-batch fast path supports "
                "(>=%s, <%s): it is off, aiokafka's public BatchBuilder.append is used",
                installed,
                low,
                high,
            )
    return _checked


def append_all(
    builder: BatchBuilder, records: Sequence[KafkaRecordLike], start: int, stop: int, timestamp: int
) -> int | None:
    """Append ``records[start:stop]`` to a fresh ``builder`` until it is full, all with
    ``timestamp``; how many went in. None when ``builder`` is not one the C builder can be used on
    directly (a subclass, serializers, records already in it): use the public ``append``."""
    inner = getattr(builder, "_builder", None)
    if (
        inner is None
        or type(builder) is not BatchBuilder
        or getattr(builder, "_relative_offset", None) != 0
        or builder.closed()
        or builder._key_serializer is not None
        or builder._value_serializer is not None
    ):
        return None
    append = inner.append
    count = 0
    for index in range(start, stop):
        record = records[index]
        if append(count, timestamp, record.key, record.value, record.headers) is None:
            builder.close()
            break
        count += 1
    builder._relative_offset = count
    return count
