"""A record the window stage sent to the late topic stays out of its window after a restart.

The fault suite's batch recomputation found 1-minute windows stored with one record more than
the raw rows less the late topic: the checkpoint stored the minimum watermark over the kinds (0
while a kind had no record yet), so the restarted stage replayed the records before the stored
position against that lower watermark, folded the late ones, and sent their windows again with a
higher revision, which the sink keeps. Each partition now stores its own kind's watermark.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import schemas
from citysense.clients import ensure_topics
from citysense.settings import Settings
from streams import AggregateService
from tests.streams._records import noise
from tests.streams.test_service_integration import (
    AGGREGATES,
    MINUTE,
    SECOND,
    _aggregates,
    _future_base,
    _produce,
    _read,
    _settings,
)

pytestmark = pytest.mark.integration


async def test_a_late_record_is_not_counted_by_the_replay_after_a_restart(
    settings: Settings,
) -> None:
    tag = uuid.uuid4().hex[:8]
    sensor = f"late-restart-{tag}"
    base = _future_base()
    plain = _settings(settings, f"aggregate-late-restart-{tag}")
    # Air is aggregated too but gets no record: its watermark stays below every event time.
    config = plain.model_copy(
        update={"aggregate": plain.aggregate.model_copy(update={"kinds": ("noise", "air")})}
    )
    await ensure_topics(
        settings.kafka,
        [schemas.measurement_topic("noise"), schemas.measurement_topic("air"), AGGREGATES],
    )

    def ours(record: Any) -> bool:
        return bool(record.key and record.key.decode() == sensor)

    # A record for [base + 1 min, + 2 min) first, so the checkpoint's offset stays before the
    # others while that window is kept and a restart replays them all; then three for [base,
    # base + 1 min), on time whatever the batching (the watermark is base + 51 s at most); then
    # one at base + 3:20. The watermark reaches base + 3:10: both minutes are sent, [base, base +
    # 1 min) expires (base + 3:05), the next one is kept (until base + 4:05).
    await _produce(
        config,
        [
            noise(sensor, base + 61 * SECOND, 40.0),
            *(noise(sensor, base + k * 10 * SECOND, 50.0 + k) for k in (1, 2, 3)),
            noise(sensor, base + 200 * SECOND, 40.0),
        ],
    )
    service = AggregateService(config)
    await service.start()
    try:
        first = _aggregates(await _read(config, AGGREGATES, ours, 2))
        sent = sorted((r["window_start"], r["sample_count"]) for r in first)
        # The noise topic is shared with the session's other tests: records of theirs with later
        # event times may push the watermark further, and close [base + 3 min, + 4 min) too.
        assert sent[:2] == [(base, 3), (base + MINUTE, 1)], sent
        assert set(sent[2:]) <= {(base + 3 * MINUTE, 1)}, sent
        await _produce(config, [noise(sensor, base + 40 * SECOND, 99.0)])
        late_topic = await _read(config, schemas.LATE_TOPIC, ours, 1)
        late = [schemas.decode(r.value)[1] for r in late_topic]
        assert [schemas.epoch_micros(r["observed_at"]) for r in late] == [base + 40 * SECOND]
    finally:
        await service.stop()

    # The restarted stage replays all six records; a new one closes [base + 3 min, + 4 min).
    await _produce(config, [noise(sensor, base + 6 * MINUTE, 40.0)])
    restarted = AggregateService(config)
    await restarted.start()
    try:
        everything = _aggregates(await _read(config, AGGREGATES, ours, 3))
    finally:
        await restarted.stop()
    assert (base + 3 * MINUTE, 1) in [(r["window_start"], r["sample_count"]) for r in everything]
    # Old code: the minute sent again with the late record, 4 samples (revision 4).
    assert [r["sample_count"] for r in everything if r["window_start"] == base] == [3]
