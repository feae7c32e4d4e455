"""The window stage's state is bounded by its open windows, not by the records they took in.

Regression (issue 16's end-to-end run: the aggregator's RSS grew 415 → 611 MiB in 10 minutes at
~9,000 records/s): traffic and occupancy windows kept one log entry per count or region of
every record until the window expired (75 min for 1-hour windows); only noise reduced its log.
Counts, not memory: the number of log entries a table retains.
"""

from __future__ import annotations

import pytest

from citysense.settings import AggregateSettings, WindowSettings
from streams._columns import extract
from streams._stage import WindowStage
from streams._tables import _LOG_ENTRIES_PER_ROW
from tests.streams._records import T0, noise, occupancy, polled, traffic

SECOND = 1_000_000
HOUR_WINDOW = WindowSettings(name="1h", size_s=3600, grace_s=30, allowed_lateness_s=900)
SENSORS = 4
#: One record per sensor per second, ten minutes: far more records than the log may hold.
SECONDS = 600


def _record(kind: str, sensor: str, t: int, i: int) -> tuple[str, bytes]:
    if kind == "traffic":
        counts: list[tuple[int, str, str, int | None, int | None]] = [
            (line, d, c, (i % 3) + 1, None)
            for line in (1, 2)
            for d in ("in", "out")
            for c in ("car", "bicycle")
        ]
        return traffic(sensor, t, counts)
    if kind == "occupancy":
        return occupancy(sensor, t, {1: i % 7, 2: (i * 3) % 11})
    return noise(sensor, t, 40.0 + (i % 30) / 10)  # 30 histogram bins


@pytest.mark.parametrize("kind", ["noise", "traffic", "occupancy"])
def test_log_entries_stay_bounded_by_the_open_windows_and_results_do_not_change(
    kind: str,
) -> None:
    settings = AggregateSettings(
        windows=(HOUR_WINDOW,), daily={"enabled": False}, out_of_orderness_s=10, idle_timeout_s=30
    )
    stage = WindowStage(kind, settings, lambda _sensor: (1.0, 100))
    expected_sum: dict[tuple[str, int], int] = {}
    expected_max: dict[tuple[str, int], int] = {}
    offset = 0
    for second in range(SECONDS):
        items = []
        for s in range(SENSORS):
            sensor = f"{kind}-{s}"
            items.append(_record(kind, sensor, T0 + second * SECOND + s, second))
            if kind == "occupancy":
                for region, count in ((1, second % 7), (2, (second * 3) % 11)):
                    expected_sum[(sensor, region)] = expected_sum.get((sensor, region), 0) + count
                    expected_max[(sensor, region)] = max(
                        expected_max.get((sensor, region), 0), count
                    )
        columns = extract(polled(items, offset), kind, stage.keys)
        offset += len(items)
        stage.fold("p", columns, 0.0)
    [table] = stage.tables
    assert len(table.rows) == SENSORS  # one open 1-hour window per sensor
    assert table.log.size <= _LOG_ENTRIES_PER_ROW * 16
    # Close the window and check the results kept every record.
    stage.fold("p", extract(polled([_record(kind, "other", T0 + 7200 * SECOND, 0)], offset),
                            kind, stage.keys), 0.0)  # fmt: skip
    results = {r["key"]: r for r in stage.advance(0.0) if r["key"] != "other"}
    assert len(results) == SENSORS
    for sensor, result in results.items():
        assert result["sample_count"] == SECONDS
        if kind == "traffic":
            per_entry = sum((i % 3) + 1 for i in range(SECONDS))
            assert result["values"]["total_count"] == 8 * per_entry
        elif kind == "occupancy":
            regions = {r["region"]: r for r in result["regions"]}
            for region in (1, 2):
                assert regions[region]["max_count"] == expected_max[(sensor, region)]
                mean = expected_sum[(sensor, region)] / SECONDS
                assert regions[region]["mean_count"] == pytest.approx(mean, abs=1e-4)
        else:
            assert result["values"]["l50_db"] == pytest.approx(41.45, abs=0.06)
