"""Every use of aiokafka's private names by the aggregator, in one place, checked against
aiokafka's version.

The ``kafka-records`` fast path (docs/runtime.md#fast-paths) hands the aggregator's runners
aiokafka's own record objects (``DefaultRecord``, read from the fetched batch by aiokafka's
compiled reader) instead of the ``ConsumerRecord`` that ``PartitionRecords._consumer_record``
builds from each of them: a dataclass of eleven fields, a tuple of the headers and two ``len``
calls per record, about a seventh of the aggregator's CPU at 150,000 records/s, and objects the
young-generation collector then walks. The runners read only ``offset``, ``key``, ``value`` and
``headers`` (an iterable of ``(name, value)`` pairs), which both objects have, with the same
values.

How: :func:`hand_out_raw_records` replaces the consumer's fetcher's table of fetched results
(``consumer._fetcher._records``, an ``OrderedDict`` by partition, which aiokafka never replaces
after it is made) with one that, as each result is stored, sets on its ``PartitionRecords`` an
instance attribute ``_consumer_record`` returning aiokafka's record as it is. Nothing else of
aiokafka changes: CRC checks, control batches, positions and offsets are aiokafka's.

These names are not aiokafka's contract, so they are used only when the installed aiokafka is in
:data:`SUPPORTED_VERSIONS`, the range this was written and tested against; outside it
:func:`supported` logs one warning and answers False, and the runners keep ``ConsumerRecord``.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import aiokafka

__all__ = ["SUPPORTED_VERSIONS", "hand_out_raw_records", "supported", "version_supported"]

log = logging.getLogger("citysense.aiokafka")

#: aiokafka releases whose private names are used here: from the first, up to (not including)
#: the second. Widen only after reading the new release's ``consumer/fetcher.py``
#: (``Fetcher._records``, ``FetchResult._partition_records``,
#: ``PartitionRecords._consumer_record``).
SUPPORTED_VERSIONS: tuple[tuple[int, int, int], tuple[int, int, int]] = ((0, 14, 0), (0, 15, 0))

_checked: bool | None = None


def version_supported(version: str) -> bool:
    """Whether aiokafka ``version`` is in :data:`SUPPORTED_VERSIONS`."""
    parts = version.split(".")[:3]
    if len(parts) < 3 or not all(part.isdigit() for part in parts):
        return False
    parsed = (int(parts[0]), int(parts[1]), int(parts[2]))
    low, high = SUPPORTED_VERSIONS
    return low <= parsed < high


def supported() -> bool:
    """Whether the installed aiokafka is one this module knows; a False answer is logged once
    as a warning."""
    global _checked
    if _checked is None:
        installed = str(getattr(aiokafka, "__version__", "unknown"))
        _checked = version_supported(installed)
        if not _checked:
            low, high = (".".join(map(str, v)) for v in SUPPORTED_VERSIONS)
            log.warning(
                "aiokafka %s is outside the range the kafka-records fast path supports "
                "(>=%s, <%s): the aggregator reads ConsumerRecords",
                installed,
                low,
                high,
            )
    return _checked


def _as_is(_tp: Any, record: Any) -> Any:
    """``PartitionRecords._consumer_record`` for a consumer without deserializers: aiokafka's
    record itself."""
    return record


def _serve_raw(result: Any) -> None:
    """Make ``result`` (a ``FetchResult``; a ``FetchError`` is left as it is) hand out
    aiokafka's records, unless it has a key or value deserializer (its records must go through
    them)."""
    records = getattr(result, "_partition_records", None)
    if records is None:
        return
    if records._key_deserializer is None and records._value_deserializer is None:
        records._consumer_record = _as_is


class _RawResults(collections.OrderedDict[Any, Any]):
    """The fetcher's fetched results, each made to hand out aiokafka's records when stored."""

    def __setitem__(self, key: Any, value: Any) -> None:
        _serve_raw(value)
        super().__setitem__(key, value)


def hand_out_raw_records(consumer: Any) -> bool:
    """Make the record batches ``consumer`` fetches from now on, and those it holds, yield
    aiokafka's own record objects (see the module docstring). Call it once the consumer is
    started; False when it is not (nothing changed)."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None:  # not started
        return False
    results = fetcher._records
    if type(results) is not _RawResults:
        for result in results.values():
            _serve_raw(result)
        fetcher._records = _RawResults(results)
    return True
