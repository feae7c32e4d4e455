"""What ``citysense stack env`` gives the stages on the embedded broker, applied for real."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from citysense.clients import ensure_topics, kafka_consumer
from citysense.settings import load_settings
from citysense.stack import Stack
from tests.sinks._helpers import unique

pytestmark = pytest.mark.integration


async def test_stages_reading_the_stack_env_create_single_partition_topics(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack's env file (what ``make run`` and every stage on the embedded stack read) makes
    the topics a stage creates hold one partition each: Tansu's in-memory engine costs CPU per
    stored batch on every fetch, so fewer partitions store fewer, larger batches. Without it a
    stage creates the general default of 6."""
    directory = tmp_path / "stack"
    directory.mkdir()
    (directory / "env").write_text("".join(f"{k}={v}\n" for k, v in stack.env().items()))
    for name in list(os.environ):
        if name.startswith("CITYSENSE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CITYSENSE_STACK_DIR", str(directory))
    kafka = load_settings().kafka
    embedded, general = unique("test.embedded"), unique("test.general")
    await ensure_topics(kafka, [embedded])
    await ensure_topics(kafka.model_copy(update={"partitions": 6}), [general])
    consumer = kafka_consumer(kafka, embedded, general, group_id=None)
    await consumer.start()
    try:
        assert consumer.partitions_for_topic(embedded) == {0}
        assert consumer.partitions_for_topic(general) == set(range(6))
    finally:
        await consumer.stop()
