"""The rollup stage (streams/_rollup.py): site and daily windows against hand-computed values.

Every expected value is worked out by hand in a comment from the formula in the docstring of
``streams._rollup``. Inputs are per-sensor ``Aggregate`` records as stage 1 emits them, with
``window_start``/``window_end`` as int µs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import schemas
from citysense.registry import Registry, Sensor, Site
from citysense.settings import AggregateSettings, DailySettings, WindowSettings
from streams._rollup import LateInput, RollupStage
from streams._watermark import NO_WATERMARK

PARIS = ZoneInfo("Europe/Paris")
HOUR = 3_600_000_000
QUARTER = 900_000_000
#: 2026-06-10 10:00 UTC (12:00 in Paris), a plain summer day.
T0 = int(datetime(2026, 6, 10, 10, tzinfo=UTC).timestamp()) * 1_000_000
CODECS = {
    "noise": "milesight-ws302",
    "air": "milesight-am307",
    "traffic": "milesight-vs133",
    "occupancy": "milesight-vs121",
}


def paris_midnight(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=PARIS).timestamp()) * 1_000_000


def sensor(sensor_id: str, kind: str, site: str | None, capacity: int | None = None) -> Sensor:
    return Sensor(
        id=sensor_id,
        kind=kind,
        codec=CODECS[kind],
        site=site,
        lat=48.85,
        lon=2.39,
        capacity=capacity,
    )


def registry() -> Registry:
    sites = [
        Site(id="square", name="Square", lat=48.85, lon=2.39),
        Site(id="street", name="Street", lat=48.85, lon=2.39),
        Site(id="crossing", name="Crossing", lat=48.85, lon=2.39),
        Site(id="pool", name="Pool", lat=48.85, lon=2.39, capacity=250),
        Site(id="park", name="Park", lat=48.85, lon=2.39),
    ]
    sensors = [
        sensor("n1", "noise", "square"),
        sensor("n2", "noise", "square"),
        sensor("n3", "noise", "square"),
        sensor("a1", "air", "street"),
        sensor("a2", "air", "street"),
        sensor("t1", "traffic", "crossing"),
        sensor("t2", "traffic", "crossing"),
        sensor("o1", "occupancy", "pool", capacity=100),
        sensor("o2", "occupancy", "pool"),
        sensor("o3", "occupancy", "park"),
        sensor("lonely", "noise", None),
    ]
    return Registry(sensors, sites)


def settings(**changes: Any) -> AggregateSettings:
    base: dict[str, Any] = {
        "site_grace_s": 0.0,
        "idle_timeout_s": 30.0,
        "windows": (
            WindowSettings(name="15m", size_s=900, grace_s=0, allowed_lateness_s=600),
            WindowSettings(name="1h", size_s=3600, grace_s=0, allowed_lateness_s=900),
        ),
        "daily": DailySettings(grace_s=0.0, allowed_lateness_s=3600.0),
    }
    base.update(changes)
    return AggregateSettings(**base)


def stage(**changes: Any) -> RollupStage:
    rollup = RollupStage(
        settings(**changes), registry(), kinds=("noise", "air", "traffic", "occupancy")
    )
    rollup.assign("p0", 0.0)
    return rollup


def rec(
    key: str,
    kind: str,
    start: int,
    size_s: int,
    values: dict[str, float],
    *,
    revision: int = 0,
    sample_count: int = 1,
    counts: Sequence[dict[str, Any]] = (),
    regions: Sequence[dict[str, Any]] = (),
    final: bool = True,
) -> dict[str, Any]:
    return {
        "key": key,
        "kind": kind,
        "window_start": start,
        "window_end": start + size_s * 1_000_000,
        "window_size_seconds": size_s,
        "revision": revision,
        "final": final,
        "values": values,
        "sample_count": sample_count,
        "counts": list(counts),
        "regions": list(regions),
    }


def feed(rollup: RollupStage, records: Sequence[dict[str, Any]], now_s: float = 1.0) -> None:
    for offset, record in enumerate(records):
        rollup.fold("p0", offset, record, now_s)


def only(records: list[dict[str, Any]], key: str, size_s: int) -> dict[str, Any]:
    found = [r for r in records if r["key"] == key and r["window_size_seconds"] == size_s]
    assert len(found) == 1, found
    return found[0]


def hour_count(count: int, line: int, direction: str, traffic_class: str) -> dict[str, Any]:
    return {
        "line": line,
        "direction": direction,
        "traffic_class": traffic_class,
        "count": count,
        "cumulative": None,
    }


# --- site windows ------------------------------------------------------------------------------


def test_noise_site_energetic_mean_weighted_by_coverage_and_silent_sensor() -> None:
    rollup = stage()
    feed(
        rollup,
        [
            rec("n1", "noise", T0, 900, {"laeq_db": 60.0, "lamax_db": 75.0, "lamin_db": 45.0,
                                         "l50_db": 58.0, "coverage": 1.0}, sample_count=15),
            rec("n2", "noise", T0, 900, {"laeq_db": 70.0, "lamax_db": 80.0, "lamin_db": 50.0,
                                         "l50_db": 69.0, "coverage": 0.5}, sample_count=8),
        ],
    )  # fmt: skip
    (site,) = rollup.advance(1.0)
    assert site["key"] == "site:square"
    assert (site["window_start"], site["window_end"]) == (T0, T0 + QUARTER)
    # Revision: Σ (revision + sample count) of the inputs = 15 + 8.
    assert (site["window_size_seconds"], site["revision"], site["final"]) == (900, 23, True)
    # Durations 1.0·900 = 900 s and 0.5·900 = 450 s:
    # 10·log10((900·10^6 + 450·10^7) / 1350) = 10·log10(4·10^6) = 66.0206 dB.
    # Coverage over the 3 registered noise sensors, n3 silent: (1 + 0.5 + 0) / 3 = 0.5.
    # No L10/L50/L90 at a site.
    assert site["values"] == {
        "coverage": 0.5,
        "laeq_db": 66.02,
        "lamax_db": 80.0,
        "lamin_db": 45.0,
    }
    assert site["sample_count"] == 23
    assert (site["counts"], site["regions"]) == ([], [])


def test_air_site_count_weighted_means_and_eaqi_band() -> None:
    rollup = stage()
    feed(
        rollup,
        [
            rec("a1", "air", T0, 3600, {
                "pm2_5_ugm3_mean": 10.0, "pm2_5_ugm3_min": 5.0, "pm2_5_ugm3_max": 20.0,
                "pm2_5_ugm3_count": 30.0,
                "no2_ugm3_mean": 30.0, "no2_ugm3_min": 25.0, "no2_ugm3_max": 35.0,
                "no2_ugm3_count": 30.0, "eaqi_band": 3.0,
            }, sample_count=30),
            rec("a2", "air", T0, 3600, {
                "pm2_5_ugm3_mean": 20.0, "pm2_5_ugm3_min": 8.0, "pm2_5_ugm3_max": 40.0,
                "pm2_5_ugm3_count": 10.0, "eaqi_band": 2.0,
            }, sample_count=10),
        ],
    )  # fmt: skip
    site = only(rollup.advance(1.0), "site:street", 3600)
    # PM2.5: (10·30 + 20·10) / 40 = 12.5 µg/m³ → band 2 (5 < 12.5 <= 15);
    # NO2 only from a1: 30 → band 3 (25 < 30 <= 60); EAQI = worst = 3.
    assert site["values"] == {
        "eaqi_band": 3.0,
        "no2_ugm3_count": 30.0,
        "no2_ugm3_max": 35.0,
        "no2_ugm3_mean": 30.0,
        "no2_ugm3_min": 25.0,
        "pm2_5_ugm3_count": 40.0,
        "pm2_5_ugm3_max": 40.0,
        "pm2_5_ugm3_mean": 12.5,
        "pm2_5_ugm3_min": 5.0,
    }
    assert site["sample_count"] == 40


def test_air_site_15_minute_window_has_no_eaqi_band() -> None:
    rollup = stage()
    feed(rollup, [rec("a1", "air", T0, 900, {"pm10_ugm3_mean": 50.0, "pm10_ugm3_count": 3.0})])
    (site,) = rollup.advance(1.0)
    assert site["values"] == {"pm10_ugm3_count": 3.0, "pm10_ugm3_mean": 50.0}


def test_traffic_site_sums_per_direction_and_class_on_line_0() -> None:
    rollup = stage()
    feed(
        rollup,
        [
            rec("t1", "traffic", T0, 900,
                {"car_count": 15.0, "bicycle_count": 3.0, "total_count": 18.0},
                counts=[hour_count(10, 1, "in", "car"), hour_count(5, 1, "out", "car"),
                        hour_count(3, 2, "in", "bicycle")], sample_count=3),
            rec("t2", "traffic", T0, 900,
                {"car_count": 7.0, "bicycle_count": 1.0, "total_count": 8.0,
                 "counter_resets": 1.0},
                counts=[hour_count(7, 1, "in", "car"), hour_count(1, 1, "in", "bicycle")],
                sample_count=2),
        ],
    )  # fmt: skip
    (site,) = rollup.advance(1.0)
    # Line 0 = all lines: in/bicycle 3 + 1 = 4, in/car 10 + 7 = 17, out/car 5.
    assert site["counts"] == [
        hour_count(4, 0, "in", "bicycle"),
        hour_count(17, 0, "in", "car"),
        hour_count(5, 0, "out", "car"),
    ]
    assert site["values"] == {
        "bicycle_count": 4.0,
        "car_count": 22.0,
        "counter_resets": 1.0,
        "total_count": 26.0,
    }
    assert site["sample_count"] == 5


def test_occupancy_site_sums_and_percent_of_site_capacity() -> None:
    rollup = stage()
    feed(
        rollup,
        [
            rec("o1", "occupancy", T0, 900,
                {"people_mean": 40.5, "people_max": 60.0, "occupancy_pct": 40.5,
                 "affluence": 2.0},
                regions=[{"region": 1, "mean_count": 40.5, "max_count": 60}]),
            rec("o2", "occupancy", T0, 900, {"people_mean": 59.5, "people_max": 80.0}),
            rec("o3", "occupancy", T0, 900, {"people_mean": 7.0, "people_max": 9.0}),
        ],
    )  # fmt: skip
    park, pool = rollup.advance(1.0)
    # Pool (capacity 250): mean 40.5 + 59.5 = 100 people → 40 % → level 2 (25 <= 40 < 50);
    # max 60 + 80 = 140, an upper bound. Regions are per sensor: none at a site.
    assert pool["key"] == "site:pool"
    assert pool["values"] == {
        "affluence": 2.0,
        "occupancy_pct": 40.0,
        "people_max": 140.0,
        "people_mean": 100.0,
    }
    assert pool["regions"] == []
    # The park has no capacity: no percent, no affluence.
    assert park["key"] == "site:park"
    assert park["values"] == {"people_max": 9.0, "people_mean": 7.0}


def test_sensors_without_site_or_of_another_kind_are_not_rolled_up() -> None:
    rollup = stage()
    feed(
        rollup,
        [
            rec("lonely", "noise", T0, 900, {"laeq_db": 60.0, "coverage": 1.0}),
            rec("unknown", "noise", T0, 900, {"laeq_db": 60.0, "coverage": 1.0}),
            rec("a1", "noise", T0, 900, {"laeq_db": 60.0, "coverage": 1.0}),
        ],
    )
    assert rollup.advance(1.0) == []


def test_ignored_inputs_leave_no_state_and_no_watermark() -> None:
    rollup = stage()
    feed(
        rollup,
        [
            rec("site:square", "noise", T0, 900, {"laeq_db": 60.0}),
            rec("n1", "noise", paris_midnight(2026, 6, 10), 86_400, {"laeq_db": 60.0}),
            rec("n1", "noise", T0, 900, {"laeq_db": 60.0}, final=False),
            rec("n1", "noise", T0, 60, {"laeq_db": 60.0}),  # 1 min is not configured here
        ],
    )
    assert rollup.advance(1.0) == []
    assert rollup.needed_offsets() == {}
    assert rollup.watermark(1.0) == NO_WATERMARK
    limited = RollupStage(settings(), registry(), kinds=("air",))
    limited.fold("p0", 0, rec("n1", "noise", T0, 900, {"laeq_db": 60.0}), 1.0)
    assert limited.open_windows() == 0


# --- revisions, lateness, idle partitions, offsets ------------------------------------------------


def test_revision_replaces_a_sensor_contribution_and_resends_change_nothing() -> None:
    rollup = stage()
    n1 = rec("n1", "noise", T0, 900, {"laeq_db": 60.0, "coverage": 1.0})
    n2 = rec("n2", "noise", T0, 900, {"laeq_db": 60.0, "coverage": 1.0})
    feed(rollup, [n1, n2])
    (first,) = rollup.advance(1.0)
    assert (first["revision"], first["values"]["laeq_db"]) == (2, 60.0)
    revised = rec("n1", "noise", T0, 900, {"laeq_db": 70.0, "coverage": 1.0}, revision=1)
    rollup.fold("p0", 2, revised, 2.0)
    (second,) = rollup.advance(2.0)
    # n1's revision 1 replaces its revision 0: 10·log10((10^7 + 10^6) / 2) = 67.4036 dB.
    assert (second["revision"], second["final"], second["values"]["laeq_db"]) == (3, True, 67.4)
    assert second["sample_count"] == 2
    rollup.fold("p0", 3, revised, 3.0)  # the same revision again
    rollup.fold("p0", 4, n1, 3.0)  # an older revision
    assert rollup.advance(3.0) == []
    assert rollup.late() == []
    # n1's revision 0 (offset 0) is no longer needed, n2's (offset 1) is.
    assert rollup.needed_offsets() == {"p0": 1}


def test_input_beyond_allowed_lateness_is_reported_late() -> None:
    rollup = stage()
    feed(rollup, [rec("n1", "noise", T0, 900, {"laeq_db": 60.0, "coverage": 1.0})])
    assert len(rollup.advance(1.0)) == 1
    # A later window moves the watermark to its end T0 + 1800 s >= close T0 + 900 s + the 15m
    # lateness 600 s (a sensor without a site: it moves time and holds nothing).
    rollup.fold("p0", 1, rec("lonely", "noise", T0 + QUARTER, 900, {}), 2.0)
    assert rollup.advance(2.0) == []
    assert rollup.needed_offsets() == {}  # the site window was dropped
    late = rec("n3", "noise", T0, 900, {"laeq_db": 50.0, "coverage": 1.0})
    rollup.fold("p0", 2, late, 3.0)
    assert rollup.advance(3.0) == []
    assert rollup.late() == [
        LateInput("p0", 2, "n3", "noise", T0, 900, "site", "site_window_expired")
    ]
    assert rollup.late() == []


def test_input_within_allowed_lateness_re_emits_with_next_revision() -> None:
    rollup = stage()
    feed(rollup, [rec("n1", "noise", T0, 900, {"laeq_db": 60.0, "coverage": 1.0})])
    assert len(rollup.advance(1.0)) == 1
    # The watermark is T0 + 900 s: past the close, below close + 600 s.
    rollup.fold("p0", 2, rec("n2", "noise", T0, 900, {"laeq_db": 60.0, "coverage": 1.0}), 2.0)
    (again,) = rollup.advance(2.0)
    # Coverage (1 + 1 + 0) / 3 = 0.6667; same level.
    assert (again["revision"], again["values"]["coverage"]) == (2, 0.6667)
    assert rollup.late() == []


def test_idle_partition_does_not_hold_the_watermark_back() -> None:
    rollup = stage()
    rollup.assign("p1", 0.0)  # never delivers anything
    rollup.fold("p0", 0, rec("n1", "noise", T0, 900, {"laeq_db": 60.0, "coverage": 1.0}), 1.0)
    assert rollup.advance(1.0) == []  # p1 may still deliver older results
    assert rollup.watermark(1.0) == NO_WATERMARK
    rollup.fold("p0", 1, rec("n2", "noise", T0, 900, {"laeq_db": 60.0, "coverage": 1.0}), 31.0)
    (site,) = rollup.advance(31.0)  # p1 idle for 31 s >= 30 s
    assert site["values"]["coverage"] == 0.6667
    assert rollup.watermark(31.0) == T0 + QUARTER


def test_needed_offsets_before_and_after_windows_drop() -> None:
    rollup = stage()
    rollup.assign("p1", 0.0)
    rollup.fold("p0", 5, rec("n1", "noise", T0, 3600, {"laeq_db": 60.0, "coverage": 1.0}), 1.0)
    rollup.fold("p1", 3, rec("n2", "noise", T0, 3600, {"laeq_db": 60.0, "coverage": 1.0}), 1.0)
    rollup.fold("p0", 6, rec("n1", "noise", T0 + HOUR, 3600, {"laeq_db": 60.0}), 1.0)
    assert rollup.needed_offsets() == {"p0": 5, "p1": 3}
    # Past the 1h site windows' lateness (close T0 + 2 h + 900 s): the site windows are dropped,
    # but the sensors' day (and the site's day, fed by the site's hourly rollups) hold them.
    after_sites = T0 + 3 * HOUR
    rollup.fold("p0", 50, rec("lonely", "noise", after_sites, 900, {}), 2.0)
    rollup.fold("p1", 40, rec("lonely", "noise", after_sites, 900, {}), 2.0)
    assert {r["key"] for r in rollup.advance(2.0)} == {"site:square"}
    assert rollup.needed_offsets() == {"p0": 5, "p1": 3}
    # Past the day's end (2026-06-11 00:00 Paris) + grace 0 + lateness 3600 s: all dropped.
    after_day = paris_midnight(2026, 6, 11) + HOUR
    rollup.fold("p0", 60, rec("lonely", "noise", after_day, 900, {}), 3.0)
    rollup.fold("p1", 70, rec("lonely", "noise", after_day, 900, {}), 3.0)
    days = rollup.advance(3.0)
    assert {(r["key"], r["window_size_seconds"]) for r in days} == {
        ("n1", 86_400),
        ("n2", 86_400),
        ("site:square", 86_400),
    }
    assert rollup.needed_offsets() == {}
    assert rollup.open_windows() == 0


def test_revoke_drops_windows_fed_by_the_partition() -> None:
    rollup = stage()
    rollup.assign("p1", 0.0)
    rollup.fold("p0", 5, rec("n1", "noise", T0, 900, {"laeq_db": 60.0, "coverage": 1.0}), 1.0)
    rollup.fold("p1", 3, rec("t1", "traffic", T0, 900, {"total_count": 1.0}), 1.0)
    rollup.revoke("p1")
    assert rollup.needed_offsets() == {"p0": 5}
    assert [r["key"] for r in rollup.advance(1.0)] == ["site:square"]


def test_same_inputs_in_any_order_give_identical_records() -> None:
    day = paris_midnight(2026, 6, 10)
    records = [
        rec(f"n{i % 3 + 1}", "noise", day + h * HOUR, 3600,
            {"laeq_db": 50.0 + (h * 7 + i) % 23 / 3, "coverage": 0.25 + (h + i) % 4 / 4,
             "lamax_db": 80.0 + h / 7, "lamin_db": 30.0 + i / 9}, sample_count=60)
        for h in range(24)
        for i in range(3)
    ]  # fmt: skip
    results = []
    for seed in range(3):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        rollup = stage()
        # p1 holds the watermark back until the end, so every input is within the watermark;
        # the hourly site windows, complete (all 3 sensors), go out without it.
        rollup.assign("p1", 0.0)
        feed(rollup, shuffled)
        early = rollup.advance(1.0)
        assert {(r["key"], r["window_size_seconds"]) for r in early} == {("site:square", 3600)}
        rollup.fold("p1", 0, rec("lonely", "noise", day + 23 * HOUR, 3600, {}), 1.0)
        results.append(early + [r for r in rollup.advance(1.0) if r["key"] != "lonely"])
        assert rollup.late() == []
    assert results[0] == results[1] == results[2]
    encoded = [[schemas.encode("Aggregate", r) for r in result] for result in results]
    assert encoded[0] == encoded[1] == encoded[2]
    _name, decoded = schemas.decode(encoded[0][-1])
    assert decoded["values"] == results[0][-1]["values"]
    sizes = [(r["window_size_seconds"], r["window_start"], r["key"]) for r in results[0]]
    assert sizes == sorted(sizes)  # hours, then days
    assert len(results[0]) == 24 + 4  # 24 hourly site windows; 3 sensor days and the site's


# --- daily windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("date", "hours", "lden", "night_hours"),
    [
        # 10·log10((12·10^6 + 4·10^6.5 + 8·10^7) / 24) = 10·log10(4 360 379.6) = 66.3952
        ((2026, 6, 10), 24, 66.40, 8),
        # Spring forward (23 h, night 7 h): (12·10^6 + 4·10^6.5 + 7·10^7) / 23 → 66.1439
        ((2026, 3, 29), 23, 66.14, 7),
        # Fall back (25 h, night 9 h): (12·10^6 + 4·10^6.5 + 9·10^7) / 25 → 66.6143
        ((2026, 10, 25), 25, 66.61, 9),
    ],
)
def test_lden_from_hourly_levels_on_normal_and_dst_days(
    date: tuple[int, int, int], hours: int, lden: float, night_hours: int
) -> None:
    start = paris_midnight(*date)
    end = paris_midnight(date[0], date[1], date[2] + 1)
    assert end - start == hours * HOUR
    rollup = stage()
    feed(
        rollup,
        [
            rec("n1", "noise", start + h * HOUR, 3600,
                {"laeq_db": 60.0, "lamax_db": 70.0 + h, "lamin_db": 40.0 + h, "coverage": 1.0},
                sample_count=60)
            for h in range(hours)
        ],
    )  # fmt: skip
    out = rollup.advance(1.0)
    day = only(out, "n1", 86_400)
    assert (day["window_start"], day["window_end"]) == (start, end)
    assert (day["revision"], day["final"], day["sample_count"]) == (60 * hours, True, 60 * hours)
    assert day["values"] == {
        "coverage": 1.0,
        "laeq_db": 60.0,
        "lamax_db": 70.0 + hours - 1,
        "lamin_db": 40.0,
        "ld_db": 60.0,
        "le_db": 60.0,
        "lden_db": lden,
        "ln_db": 60.0,
    }
    # The site's day, from its hourly rollups (each 60 dB, coverage 1/3 as n2 and n3 are
    # silent): the same levels, coverage (hours · 3600 · 1/3) / (hours · 3600) = 0.3333.
    site_day = only(out, "site:square", 86_400)
    assert site_day["values"]["lden_db"] == lden
    assert site_day["values"]["coverage"] == 0.3333
    assert site_day["sample_count"] == 60 * hours
    assert night_hours == hours - 16


def test_daily_noise_weights_hours_by_coverage_and_needs_all_periods_for_lden() -> None:
    start = paris_midnight(2026, 6, 10)
    rollup = stage()
    # Day hours only (07:00-19:00): 11 hours at 60 dB, coverage 1, and 12:00 at 70 dB,
    # coverage 0.5: Ld = 10·log10((11·3600·10^6 + 1800·10^7) / (11·3600 + 1800))
    # = 10·log10((39.6 + 18)·10^9 / 41 400) = 10·log10(1 391 304.3) = 61.4342 dB.
    records = [
        rec("n1", "noise", start + h * HOUR, 3600,
            {"laeq_db": 70.0 if h == 12 else 60.0, "coverage": 0.5 if h == 12 else 1.0})
        for h in range(7, 19)
    ]  # fmt: skip
    records.append(rec("lonely", "noise", start + 23 * HOUR, 3600, {}))
    feed(rollup, records)
    day = only(rollup.advance(1.0), "n1", 86_400)
    # No evening or night level: no Lden. Coverage 41 400 s / 86 400 s = 0.4792.
    assert day["values"] == {
        "coverage": 0.4792,
        "laeq_db": 61.43,
        "ld_db": 61.43,
    }


def test_air_daily_means_and_ozone_8_hour_maximum_across_midnight() -> None:
    start = paris_midnight(2026, 6, 10)
    rollup = stage()
    # The previous day's 17:00-23:00 hours at 100 µg/m³ of ozone.
    records = [
        rec("a1", "air", start + h * HOUR, 3600, {"o3_ugm3_mean": 100.0, "o3_ugm3_count": 60.0})
        for h in range(-7, 0)
    ]
    # The day: 00:00 at 100, then 20; PM2.5 10 µg/m³ over 60 samples an hour, except
    # 12:00 at 40 over 30 samples.
    for h in range(24):
        pm = (40.0, 30.0) if h == 12 else (10.0, 60.0)
        records.append(
            rec("a1", "air", start + h * HOUR, 3600, {
                "o3_ugm3_mean": 100.0 if h == 0 else 20.0, "o3_ugm3_count": 60.0,
                "pm2_5_ugm3_mean": pm[0], "pm2_5_ugm3_min": pm[0] - 1,
                "pm2_5_ugm3_max": pm[0] + 1, "pm2_5_ugm3_count": pm[1],
            }, sample_count=60)
        )  # fmt: skip
    feed(rollup, records)
    out = rollup.advance(1.0)
    day = only([r for r in out if r["window_start"] == start], "a1", 86_400)
    # PM2.5: (23·10·60 + 40·30) / (23·60 + 30) = 15 000 / 1410 = 10.6383.
    # Ozone: the first 8-hour period, 17:00 the day before to 01:00, holds 8 hours at 100:
    # max 100 (without the previous day's hours the best would be (100 + 5·20) / 6 = 33.33).
    # O3 mean: (100 + 23·20) / 24 = 23.3333.
    assert day["values"] == {
        "o3_max_8h_mean": 100.0,
        "o3_ugm3_count": 1440.0,
        "o3_ugm3_mean": 23.3333,
        "pm2_5_ugm3_count": 1410.0,
        "pm2_5_ugm3_max": 41.0,
        "pm2_5_ugm3_mean": 10.6383,
        "pm2_5_ugm3_mean_24h": 10.6383,
        "pm2_5_ugm3_min": 9.0,
    }
    assert "eaqi_band" not in day["values"]
    # The site's day, from the site's hourly rollups (a1 only): the same ozone maximum.
    site_day = only([r for r in out if r["window_start"] == start], "site:street", 86_400)
    assert site_day["values"]["o3_max_8h_mean"] == 100.0


def test_traffic_and_occupancy_daily() -> None:
    start = paris_midnight(2026, 6, 10)
    rollup = stage()
    feed(
        rollup,
        [
            # In time order: an input behind the watermark by more than the 1h lateness
            # (900 s) would be late for its site window.
            rec("t1", "traffic", start + 10 * HOUR, 3600, {"car_count": 12.0, "total_count": 12.0},
                counts=[hour_count(10, 1, "in", "car"), hour_count(2, 2, "in", "car")]),
            rec("o1", "occupancy", start + 10 * HOUR, 3600,
                {"people_mean": 10.0, "people_max": 20.0}, sample_count=60,
                regions=[{"region": 1, "mean_count": 10.0, "max_count": 20}]),
            rec("t1", "traffic", start + 11 * HOUR, 3600,
                {"car_count": 5.0, "total_count": 5.0, "counter_resets": 1.0},
                counts=[hour_count(5, 1, "in", "car")]),
            rec("o1", "occupancy", start + 11 * HOUR, 3600,
                {"people_mean": 40.0, "people_max": 90.0}, sample_count=30,
                regions=[{"region": 2, "mean_count": 40.0, "max_count": 90}]),
            rec("lonely", "noise", start + 23 * HOUR, 3600, {}),
        ],
    )  # fmt: skip
    out = rollup.advance(1.0)
    traffic = only(out, "t1", 86_400)
    # Per (line, direction, class): line 1 in car 10 + 5 = 15, line 2 in car 2.
    assert traffic["counts"] == [hour_count(15, 1, "in", "car"), hour_count(2, 2, "in", "car")]
    assert traffic["values"] == {"car_count": 17.0, "counter_resets": 1.0, "total_count": 17.0}
    site_traffic = only(out, "site:crossing", 86_400)
    assert site_traffic["counts"] == [hour_count(17, 0, "in", "car")]
    occupancy = only(out, "o1", 86_400)
    # people_mean = (10·60 + 40·30) / 90 = 20; 20 % of the sensor's 100 → level 1 (< 25).
    assert occupancy["values"] == {
        "affluence": 1.0,
        "occupancy_pct": 20.0,
        "people_max": 90.0,
        "people_mean": 20.0,
    }
    # Regions over all 90 samples of the day: region 1 600 / 90 = 6.6667, region 2 1200 / 90.
    assert occupancy["regions"] == [
        {"region": 1, "mean_count": 6.6667, "max_count": 20},
        {"region": 2, "mean_count": 13.3333, "max_count": 90},
    ]
    # The pool's day (capacity 250): the site's hourly means are o1's alone (o2 silent).
    pool = only(out, "site:pool", 86_400)
    assert pool["values"] == {
        "affluence": 1.0,
        "occupancy_pct": 8.0,
        "people_max": 90.0,
        "people_mean": 20.0,
    }


def test_late_hourly_revision_revises_the_day_and_beyond_lateness_is_late() -> None:
    start = paris_midnight(2026, 6, 10)
    rollup = stage()
    hours = [
        rec("n1", "noise", start + h * HOUR, 3600, {"laeq_db": 60.0, "coverage": 1.0})
        for h in range(24)
    ]
    feed(rollup, hours)
    first = only(rollup.advance(1.0), "n1", 86_400)
    assert (first["revision"], first["values"]["laeq_db"]) == (24, 60.0)
    revised = rec("n1", "noise", start, 3600, {"laeq_db": 60.0, "coverage": 0.5}, revision=1)
    rollup.fold("p0", 100, revised, 2.0)
    out = rollup.advance(2.0)
    day = only(out, "n1", 86_400)
    # Coverage (23·3600 + 1800) / 86 400 = 0.9792; the level stays 60 dB.
    assert (day["revision"], day["values"]["coverage"]) == (25, 0.9792)
    # The 00:00 site hour is beyond its lateness (wm = day end = 00:00 + 24 h).
    assert rollup.late() == [
        LateInput("p0", 100, "n1", "noise", start, 3600, "site", "site_window_expired")
    ]
    # Beyond the day's lateness (end + 0 + 3600 s): late for the day too.
    rollup.fold("p0", 101, rec("lonely", "noise", start + 25 * HOUR, 3600, {}), 3.0)
    rollup.advance(3.0)
    rollup.fold("p0", 102, rec("n1", "noise", start, 3600, {"laeq_db": 1.0}, revision=2), 4.0)
    assert rollup.advance(4.0) == []
    assert [(item.target, item.reason) for item in rollup.late()] == [
        ("site", "site_window_expired"),
        ("daily", "daily_window_expired"),
    ]


def test_site_window_waits_for_its_definitions_grace() -> None:
    # The 1-hour results come 30 s (the definition's grace) after the hour, after the 15-minute
    # results ending at the hour, which already move the watermark to the hour.
    rollup = stage(
        windows=(
            WindowSettings(name="15m", size_s=900, grace_s=0, allowed_lateness_s=600),
            WindowSettings(name="1h", size_s=3600, grace_s=30, allowed_lateness_s=900),
        )
    )
    feed(rollup, [rec("n1", "noise", T0, 3600, {"laeq_db": 60.0, "coverage": 1.0})])
    rollup.fold("p0", 1, rec("n1", "noise", T0 + 3 * QUARTER, 900, {"laeq_db": 60.0}), 1.0)
    hourly = [r for r in rollup.advance(1.0) if r["window_size_seconds"] == 3600]
    assert hourly == []  # watermark T0 + 1 h < close T0 + 1 h + 30 s
    rollup.fold("p0", 2, rec("n1", "noise", T0 + HOUR, 900, {"laeq_db": 60.0}), 2.0)
    hourly = [r for r in rollup.advance(2.0) if r["window_size_seconds"] == 3600]
    assert [r["key"] for r in hourly] == ["site:square"]


def test_site_window_goes_out_once_every_registered_sensor_reported() -> None:
    rollup = stage(
        windows=(WindowSettings(name="15m", size_s=900, grace_s=30, allowed_lateness_s=600),),
        daily=DailySettings(enabled=False),
    )
    values = {"laeq_db": 60.0, "coverage": 1.0}
    feed(rollup, [rec("n1", "noise", T0, 900, values), rec("n2", "noise", T0, 900, values)])
    assert rollup.advance(1.0) == []  # n3 has not reported; the watermark is at the end only
    rollup.fold("p0", 2, rec("n3", "noise", T0, 900, values), 2.0)
    (site,) = rollup.advance(2.0)
    assert (site["key"], site["values"]["coverage"]) == ("site:square", 1.0)
