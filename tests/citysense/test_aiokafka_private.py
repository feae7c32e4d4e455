"""aiokafka's private batch builder is used only with a release it was checked against, and
writes what the public ``append`` writes."""

from __future__ import annotations

import logging

import aiokafka
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder

from citysense import _aiokafka_private
from ingest._kafka import _append_all
from ingest._records import KafkaRecord


@pytest.mark.parametrize(
    ("version", "supported"),
    [("0.14.0", True), ("0.14.9", True), ("0.13.0", False), ("0.15.0", False), ("x", False)],
)
def test_the_version_range_is_exact(version: str, supported: bool) -> None:
    assert _aiokafka_private.version_supported(version) is supported


def test_the_installed_aiokafka_is_supported() -> None:
    assert _aiokafka_private.version_supported(aiokafka.__version__)


def _records(count: int) -> list[KafkaRecord]:
    return [
        KafkaRecord("t", b"sensor-%d" % (i % 7), b"v" * (i % 50), [("h", b"%d" % i)])
        for i in range(count)
    ]


@pytest.mark.parametrize(("count", "batch_size"), [(1, 16384), (300, 16384), (50, 512)])
def test_the_c_builder_writes_what_the_public_append_writes(count: int, batch_size: int) -> None:
    records = _records(count)
    fast, public = BatchBuilder(batch_size, 0), BatchBuilder(batch_size, 0)
    taken_fast = _append_all(fast, records, 0, count, 1_700_000_000_000, True)
    taken_public = _append_all(public, records, 0, count, 1_700_000_000_000, False)
    assert taken_fast == taken_public > 0
    assert fast.record_count() == public.record_count() == taken_fast
    # The bytes aiokafka sends (``_build`` is what its sender calls).
    assert bytes(fast._build()) == bytes(public._build())


def test_a_builder_with_records_already_takes_the_public_path() -> None:
    builder = BatchBuilder(16384, 0)
    builder.append(timestamp=None, key=b"k", value=b"v")
    assert _aiokafka_private.append_all(builder, _records(3), 0, 3, 1) is None


def test_an_unsupported_aiokafka_is_reported_once_and_the_public_path_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ingest._kafka import KafkaBatcher

    monkeypatch.setattr(aiokafka, "__version__", "0.13.0")
    monkeypatch.setattr(_aiokafka_private, "_checked", None)
    caplog.set_level(logging.WARNING, logger="citysense.aiokafka")
    batchers = [KafkaBatcher(object(), max_records=10, linger_s=0, backoff_max_s=1) for _ in "ab"]
    assert not any(batcher._fast for batcher in batchers)
    warnings = [r for r in caplog.records if r.name == "citysense.aiokafka"]
    assert len(warnings) == 1
    assert "0.13.0" in warnings[0].getMessage()
