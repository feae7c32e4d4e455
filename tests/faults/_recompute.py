"""Final aggregates against a batch recomputation from the raw rows.

The records behind the raw rows (the measurement records the tap saw, one per natural key, as the
sink's primary key keeps one), less the ones the aggregator declared late, go through the
aggregator's own window logic in one batch, in event-time order: nothing is late there, nothing
is replayed, nothing is killed. Every 1-minute window per sensor that batch closes must be in
TimescaleDB with the same sample count and indicators, whatever happened to the stages on the way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from citysense.registry import Registry
from citysense.settings import AggregateSettings
from streams import WindowStage
from streams._columns import extract
from streams._stage import registry_facts
from tests.faults._tap import KafkaTap
from tests.streams._records import Polled

__all__ = ["Query", "compare_minute_windows"]

#: Runs one SQL query on TimescaleDB and returns its rows.
Query = Callable[[str], list[tuple[Any, ...]]]

KINDS = ("noise", "air")


def _batch(
    kind: str, frames: list[tuple[tuple[str, int], bytes]], registry: Registry
) -> dict[tuple[str, int], dict[str, Any]]:
    defaults = AggregateSettings()
    settings = defaults.model_copy(
        update={"windows": [w for w in defaults.windows if w.size_s == 60]}
    )
    stage = WindowStage(kind, settings, registry_facts(registry))
    frames = sorted(frames, key=lambda item: item[0][1])
    polled = [Polled(natural[0].encode(), frame, i) for i, (natural, frame) in enumerate(frames)]
    late = stage.fold("batch", extract(polled, kind, stage.keys), 0.0)
    assert not late, f"the batch, in event-time order, found {len(late)} late records"
    return {
        (r["key"], r["window_start"]): r
        for r in stage.advance(0.0)
        if r["window_size_seconds"] == 60
    }


def _stored(query: Query, kind: str) -> dict[tuple[str, int], tuple[int, dict[str, Any]]]:
    rows = query(
        "SELECT key, (extract(epoch FROM bucket) * 1000000)::bigint, sample_count, indicators "
        f"FROM {kind}_aggregates WHERE window_seconds = 60 AND key NOT LIKE 'site:%'"
    )
    return {(k, int(b)): (int(n), dict(i)) for k, b, n, i in rows}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    for name, value in a.items():
        other = b[name]
        if isinstance(value, float) and isinstance(other, int | float):
            # Indicators are rounded (0.01 dB, 4 decimals for means): a mean summed in another
            # order may round one unit apart. A record counted twice or missed changes the
            # sample count, compared exactly.
            if not math.isclose(value, other, rel_tol=1e-9, abs_tol=0.0101):
                return False
        elif value != other:
            return False
    return True


def compare_minute_windows(
    tap: KafkaTap, rows: set[tuple[str, int]], query: Query, registry: Registry
) -> dict[str, int]:
    """Asserts every window of the batch is stored alike; returns counts per kind. Waits up to
    two minutes for the last windows (they close once idle partitions stop holding the
    watermark back)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return _compare(tap, rows, query, registry)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(5)


def _compare(
    tap: KafkaTap, rows: set[tuple[str, int]], query: Query, registry: Registry
) -> dict[str, int]:
    with tap.lock:
        frames = list(tap.index.frames.values())
        declared = set(tap.index.late)
        late_at = {natural: list(at) for natural, at in tap.index.late_at.items()}
    compared: dict[str, int] = {}
    for kind in KINDS:
        kept: dict[tuple[str, int], bytes] = {}
        for frame_kind, natural, frame in frames:
            if frame_kind == kind and natural in rows and natural not in declared:
                kept.setdefault(natural, frame)
        expected = _batch(kind, list(kept.items()), registry)
        stored = _stored(query, kind)
        assert expected, f"the batch closed no {kind} window"
        wrong = []
        for identity, result in expected.items():
            got = stored.get(identity)
            if (
                got is None
                or got[0] != result["sample_count"]
                or not _same(result["values"], got[1])
            ):
                wrong.append((identity, result["sample_count"], result["values"], got))
        assert not wrong, (
            f"{len(wrong)} of {len(expected)} {kind} windows differ: {wrong[:3]}; late records "
            f"in them: {_late_in(late_at, [identity for identity, *_ in wrong[:3]])}"
        )
        compared[kind] = len(expected)
    return compared


def _late_in(
    late_at: dict[tuple[str, int], list[tuple[int, int, int]]],
    windows: list[tuple[str, int]],
) -> dict[tuple[str, int], list[tuple[int, int, int]]]:
    """The late records (partition, offset, watermark) naming a 1-minute window of ``windows``:
    a window with one record more than the batch is first explained by them (a late record
    folded by a replay after a restart was the cause once, see docs/faults.md)."""
    size = 60_000_000
    return {
        natural: at
        for natural, at in late_at.items()
        if (natural[0], natural[1] - natural[1] % size) in windows
    }
