"""Watermarks: the cached answer of ``current`` is always the one computed afresh."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams._watermark import NO_WATERMARK, Watermarks

_PARTITIONS = st.integers(0, 3)
_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), _PARTITIONS, st.integers(0, 0)),
        st.tuples(st.just("revoke"), _PARTITIONS, st.integers(0, 0)),
        st.tuples(st.just("observe"), _PARTITIONS, st.integers(0, 10_000_000)),
        st.tuples(st.just("busy"), _PARTITIONS, st.integers(0, 0)),
        st.tuples(st.just("restore"), _PARTITIONS, st.integers(0, 10_000_000)),
        st.tuples(st.just("tick"), _PARTITIONS, st.integers(0, 3)),
    ),
    max_size=60,
)


def _fresh(watermarks: Watermarks, now_s: float) -> int:
    """``current`` as it was before the cache: min over the active partitions (max over all
    when none is active), never below the floor."""
    partitions = watermarks._partitions
    active = [
        watermarks.partition_watermark(p)
        for p, state in partitions.items()
        if now_s - state.last_active_s < 2.0
    ]
    if active:
        candidate = min(active)
    else:
        candidate = max(
            (watermarks.partition_watermark(p) for p in partitions), default=NO_WATERMARK
        )
    return max(candidate, watermarks._floor)


@settings(max_examples=300, deadline=None)
@given(_OPERATIONS)
def test_the_cached_watermark_is_the_fresh_one(operations: list[tuple[str, int, int]]) -> None:
    watermarks = Watermarks(out_of_orderness_s=1.0, idle_timeout_s=2.0)
    now = 0.0
    for operation, partition, value in operations:
        if operation == "assign":
            watermarks.assign(partition, now)
        elif operation == "revoke":
            watermarks.revoke(partition)
        elif operation == "observe":
            watermarks.observe(partition, value, now)
        elif operation == "busy":
            watermarks.busy(partition, now)
        elif operation == "restore":
            watermarks.restore(value)
        else:
            now += value  # 0 keeps the same clock reading: the cache is used
        expected = _fresh(watermarks, now)
        assert watermarks.current(now) == expected
        assert watermarks.current(now) == expected  # asked twice: from the cache
