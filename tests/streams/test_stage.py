"""The window stage: windows, watermark, late records, revisions, counters, against hand tables
and against the plain batch computation of ``_reference`` on shuffled, batched input."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from citysense.settings import AggregateSettings, WindowSettings
from streams._columns import extract
from streams._stage import WindowStage
from tests.streams._records import MINUTE, T0, air, noise, occupancy, polled, traffic
from tests.streams._reference import reference_windows

SECOND = 1_000_000


def _settings(
    *windows: WindowSettings, bound_s: float = 10.0, idle_s: float = 30.0
) -> AggregateSettings:
    return AggregateSettings(
        windows=windows
        or (WindowSettings(name="1m", size_s=60, grace_s=5, allowed_lateness_s=120),),
        daily={"enabled": False},
        out_of_orderness_s=bound_s,
        idle_timeout_s=idle_s,
    )


def _stage(
    kind: str = "noise",
    *windows: WindowSettings,
    interval_s: float = 10.0,
    capacity: int | None = None,
    **kw: Any,
) -> WindowStage:
    return WindowStage(kind, _settings(*windows, **kw), lambda _sensor: (interval_s, capacity))


class _Feeder:
    """Feeds polled batches per partition with consecutive offsets."""

    def __init__(self, stage: WindowStage) -> None:
        self.stage = stage
        self.offsets: dict[str, int] = {}

    def feed(self, partition: str, items: list[tuple[str, bytes]], now_s: float = 0.0) -> list[Any]:
        first = self.offsets.get(partition, 0)
        self.offsets[partition] = first + len(items)
        columns = extract(polled(items, first), self.stage.kind, self.stage.keys)
        assert not columns.rejected
        return self.stage.fold(partition, columns, now_s)


def test_window_closes_at_end_plus_grace_and_not_before() -> None:
    stage = _stage()
    feed = _Feeder(stage)
    feed.feed("p", [noise("a", T0 + 10 * SECOND * i, 60.0) for i in range(6)])
    # Watermark = 50 s - 10 s bound = 40 s: the window [0, 60) is open.
    assert stage.advance(0.0) == []
    feed.feed("p", [noise("a", T0 + 74 * SECOND, 60.0)])  # watermark 64 s < 65 s
    assert stage.advance(0.0) == []
    feed.feed("p", [noise("a", T0 + 75 * SECOND, 60.0)])  # watermark 65 s = end + grace
    (result,) = stage.advance(0.0)
    assert (result["key"], result["window_start"], result["window_end"]) == ("a", T0, T0 + MINUTE)
    assert result["final"]
    assert result["revision"] == 6  # the sample count
    assert result["sample_count"] == 6


def test_noise_indicators_hand_computed() -> None:
    # Two records of 30 s each at 60 and 70 dB: LAeq = 10·log10((10^6 + 10^7)/2) = 67.40 dB;
    # L10 = 70 (70 dB is exceeded... held 50 % of the time), L90 = 60, coverage 60 s / 60 s.
    stage = _stage(interval_s=30.0)
    feed = _Feeder(stage)
    feed.feed(
        "p",
        [noise("a", T0, 60.0, lafmax_db=72.5), noise("a", T0 + 30 * SECOND, 70.0, lamin_db=55.25)],
    )
    feed.feed("p", [noise("a", T0 + 10 * MINUTE, 50.0)])
    (result, *_rest) = stage.advance(0.0)
    assert result["values"] == {
        "laeq_db": 67.4,
        "lamax_db": 72.5,
        "lamin_db": 55.25,
        "l10_db": 70.0,
        "l50_db": 70.0,
        "l90_db": 60.0,
        "coverage": 1.0,
    }


def test_late_record_within_lateness_revises_and_beyond_goes_late() -> None:
    stage = _stage()
    feed = _Feeder(stage)
    feed.feed("p", [noise("a", T0, 60.0), noise("a", T0 + 80 * SECOND, 60.0)])
    (first,) = stage.advance(0.0)
    assert first["revision"] == 1
    assert first["sample_count"] == 1
    # Watermark 70 s; the window [0, 60) expires at 60 + 5 + 120 = 185 s.
    assert feed.feed("p", [noise("a", T0 + 30 * SECOND, 80.0)]) == []
    (revised,) = stage.advance(0.0)
    assert (revised["window_start"], revised["revision"], revised["sample_count"]) == (T0, 2, 2)
    assert revised["values"]["lamax_db"] == 80.0
    feed.feed("p", [noise("a", T0 + 200 * SECOND, 60.0)])  # watermark 190 s: expired
    stage.advance(0.0)
    late = feed.feed("p", [noise("a", T0 + 59 * SECOND, 99.0), noise("a", T0 + 185 * SECOND, 60.0)])
    assert [(item.index, item.reason) for item in late] == [(0, "beyond_allowed_lateness")]


def test_idle_partition_stops_holding_the_watermark_back() -> None:
    stage = _stage(idle_s=30.0)
    stage.assign("quiet", 0.0)
    feed = _Feeder(stage)
    feed.feed("busy", [noise("a", T0, 60.0), noise("a", T0 + 5 * MINUTE, 60.0)], now_s=1.0)
    assert stage.advance(1.0) == []  # the quiet partition, just assigned, holds it back
    (result,) = stage.advance(31.0)  # quiet for 31 s: left out
    assert result["window_start"] == T0


def test_air_statistics_and_eaqi_band_for_hourly_windows() -> None:
    hour = WindowSettings(name="1h", size_s=3600, grace_s=0, allowed_lateness_s=0)
    stage = _stage("air", hour)
    feed = _Feeder(stage)
    feed.feed(
        "p",
        [
            air("x", T0, pm2_5_ugm3=10.0, no2_ugm3=20.0),
            air("x", T0 + MINUTE, pm2_5_ugm3=20.0),
            air("x", T0 + 2 * 3600 * SECOND, pm2_5_ugm3=1.0),
        ],
    )
    (result,) = stage.advance(0.0)
    values = result["values"]
    assert (values["pm2_5_ugm3_mean"], values["pm2_5_ugm3_min"], values["pm2_5_ugm3_max"]) == (
        15.0,
        10.0,
        20.0,
    )
    assert values["pm2_5_ugm3_count"] == 2.0
    assert values["no2_ugm3_count"] == 1.0
    # PM2.5 15 µg/m³ is "fair" (band 2, bound inclusive), NO2 20 is "fair" too.
    assert values["eaqi_band"] == 2.0
    assert "pm10_ugm3_mean" not in values


def test_cumulative_counters_wrap_reset_and_order() -> None:
    stage = _stage("traffic")
    feed = _Feeder(stage)
    readings = [(0, 65_530), (20, 4), (40, 10), (50, 9_000_000)]  # wrap (+10), +6, reset
    items = [
        traffic("c", T0 + s * SECOND, [(1, "in", "bicycle", None, cum)]) for s, cum in readings
    ]
    random.Random(1).shuffle(items)  # within the 10 s bound? no: fed in one batch, same watermark
    feed.feed("p", items)
    feed.feed("p", [traffic("c", T0 + 5 * MINUTE, [(1, "in", "bicycle", 3, None)])])
    (result, *_rest) = stage.advance(0.0)
    assert result["counts"] == [
        {"line": 1, "direction": "in", "traffic_class": "bicycle", "count": 16, "cumulative": None}
    ]
    assert result["values"]["counter_resets"] == 1.0
    assert result["values"]["bicycle_count"] == 16.0


def test_zero_count_and_no_data_stay_different() -> None:
    stage = _stage("traffic")
    feed = _Feeder(stage)
    feed.feed("p", [traffic("c", T0, [(1, "out", "car", 0, None)]), traffic("d", T0, [])])
    feed.feed("p", [traffic("c", T0 + 5 * MINUTE, [])])
    results = {r["key"]: r for r in stage.advance(0.0) if r["window_start"] == T0}
    assert results["c"]["counts"][0]["count"] == 0
    assert results["c"]["values"]["total_count"] == 0.0
    assert results["d"]["counts"] == []
    assert "total_count" not in results["d"]["values"]


def test_occupancy_means_maxima_and_affluence() -> None:
    stage = _stage("occupancy", capacity=100)
    feed = _Feeder(stage)
    feed.feed(
        "p", [occupancy("pool", T0, {1: 10, 2: 20}), occupancy("pool", T0 + 30 * SECOND, {1: 30})]
    )
    feed.feed("p", [occupancy("pool", T0 + 5 * MINUTE, {1: 0})])
    (result, *_rest) = stage.advance(0.0)
    assert result["values"] == {
        "people_mean": 30.0,
        "people_max": 30.0,
        "occupancy_pct": 30.0,
        "affluence": 2.0,
    }
    assert result["regions"] == [
        {"region": 1, "mean_count": 20.0, "max_count": 30},
        {"region": 2, "mean_count": 10.0, "max_count": 20},
    ]


def test_needed_offsets_follow_kept_windows() -> None:
    stage = _stage()
    feed = _Feeder(stage)
    feed.feed("p", [noise("a", T0, 60.0), noise("b", T0 + 2 * MINUTE, 60.0)])
    assert stage.needed_offsets() == {"p": 0}
    feed.feed("p", [noise("b", T0 + 10 * MINUTE, 60.0)])
    stage.advance(0.0)  # both early windows emitted and beyond lateness: forgotten
    assert stage.needed_offsets() == {"p": 2}


# --- property: any shuffle within the bound gives the batch result ------------------------------

BOUND_S = 10


@st.composite
def _streams(draw: st.DrawFn) -> tuple[str, list[tuple[str, int, dict[str, float]]], int]:
    kind = draw(st.sampled_from(["noise", "air"]))
    sensors = [f"s{i}" for i in range(draw(st.integers(1, 3)))]
    records = []
    for sensor in sensors:
        time_us = T0 + draw(st.integers(0, 59)) * SECOND
        for _ in range(draw(st.integers(1, 25))):
            time_us += draw(st.integers(1, 40)) * SECOND
            if kind == "noise":
                level = draw(st.one_of(st.none(), st.floats(20, 120, allow_nan=False)))
                values = {} if level is None else {"laeq_db": level}
                if draw(st.booleans()):
                    values["lafmax_db"] = draw(st.floats(20, 130, allow_nan=False))
            else:
                values = {
                    q: draw(st.floats(0, 500, allow_nan=False))
                    for q in draw(
                        st.sets(
                            st.sampled_from(["pm2_5_ugm3", "pm10_ugm3", "no2_ugm3", "o3_ugm3"]),
                            max_size=4,
                        )
                    )
                }
            records.append((sensor, time_us, values))
    records.sort(key=lambda r: r[1])
    seed = draw(st.integers(0, 2**32))
    return kind, records, seed


def _shuffle_within_bound(records: list[Any], rng: random.Random) -> list[Any]:
    """A random arrival order in which no record arrives after one more than the bound newer."""
    pending = list(records)
    out: list[Any] = []
    while pending:
        oldest = pending[0][1]
        window = [r for r in pending if r[1] <= oldest + BOUND_S * SECOND // 2]
        pick = rng.choice(window)
        pending.remove(pick)
        out.append(pick)
    return out


# A mean of exactly 0.00025: the two sides may round it either way (seen in CI).
_HALF_WAY: tuple[str, list[tuple[str, int, dict[str, float]]], int] = (
    "air",
    [("s0", 1_779_998_400_000_000 + i * SECOND, {}) for i in range(1, 16)]
    + [
        ("s0", 1_779_998_416_000_000, {"pm2_5_ugm3": 0.0}),
        ("s0", 1_779_998_417_000_000, {"pm2_5_ugm3": 0.0005, "pm10_ugm3": 0.0}),
        ("s0", 1_779_998_430_000_000, {}),
        ("s0", 1_779_998_470_000_000, {}),
    ],
    1,
)


@settings(max_examples=60, deadline=None)
@given(_streams())
@example(_HALF_WAY)
def test_any_shuffle_within_the_bound_gives_the_batch_result(case: Any) -> None:
    kind, records, seed = case
    rng = random.Random(seed)
    size_s = rng.choice([60, 3600])
    window = WindowSettings(name="w", size_s=size_s, grace_s=0, allowed_lateness_s=0)
    stage = _stage(kind, window, bound_s=BOUND_S, interval_s=10.0)
    feed = _Feeder(stage)
    arrived = _shuffle_within_bound(records, rng)
    emitted: dict[tuple[str, int], tuple[int, dict[str, float]]] = {}
    position = 0
    while position < len(arrived):
        size = rng.randint(1, 7)
        chunk = arrived[position : position + size]
        position += size
        items = [
            noise(s, t, v.get("laeq_db"), **{k: x for k, x in v.items() if k != "laeq_db"})
            if kind == "noise"
            else air(s, t, **v)
            for s, t, v in chunk
        ]
        assert feed.feed(rng.choice(["p"]), items) == []
        for result in stage.advance(0.0):
            assert result["revision"] == result["sample_count"]
            emitted[(result["key"], result["window_start"])] = (
                result["sample_count"],
                result["values"],
            )
    watermark = stage.watermarks.current(0.0)
    expected = reference_windows(kind, records, size_s, {s: 10.0 for s, _, _ in records})
    closed = {k: v for k, v in expected.items() if k[1] + size_s * SECOND <= watermark}
    _assert_same_windows(emitted, closed)


def _assert_same_windows(
    emitted: dict[tuple[str, int], tuple[int, dict[str, float]]],
    expected: dict[tuple[str, int], tuple[int, dict[str, float]]],
) -> None:
    """Equal windows, allowing one unit in the last rounded place.

    Both sides round (dB to 0.01, concentrations to 0.0001), but they sum in different orders, so
    a true value sitting exactly half-way (a mean of 0.00025) may round either way.
    """
    assert emitted.keys() == expected.keys()
    for key, (count, values) in emitted.items():
        expected_count, expected_values = expected[key]
        assert count == expected_count, key
        assert values.keys() == expected_values.keys(), key
        for name, value in values.items():
            unit = 0.01 if name.endswith("_db") else 0.0001
            assert value == pytest.approx(expected_values[name], abs=unit * 1.001), (key, name)


def test_a_partition_behind_its_end_is_never_idle() -> None:
    stage = _stage(idle_s=30.0)
    stage.assign("behind", 0.0)
    feed = _Feeder(stage)
    feed.feed("busy", [noise("a", T0, 60.0), noise("a", T0 + 5 * MINUTE, 60.0)], now_s=1.0)
    stage.watermarks.busy("behind", 40.0)  # the consumer has not read it to its end yet
    assert stage.advance(41.0) == []
    assert len(stage.advance(71.0)) == 1  # caught up 31 s ago: idle, left out


def _poll_items(kind: str, rng: random.Random, sensors: list[str], base_us: int) -> list[Any]:
    """A partition's batch of ``kind`` records around ``base_us``, some of them late."""
    items = []
    for _ in range(rng.randint(0, 12)):
        sensor = rng.choice(sensors)
        # Mostly near the newest time, now and then far behind (late for the 1-minute window).
        back = rng.choice([0, 0, 0, 3, 20, 400]) * SECOND
        time_us = base_us - back + rng.randint(0, 9) * SECOND
        if kind == "noise":
            items.append(noise(sensor, time_us, rng.choice([None, 40.0 + rng.random() * 30])))
        elif kind == "air":
            items.append(air(sensor, time_us, pm2_5_ugm3=rng.random() * 40, no2_ugm3=12.5))
        elif kind == "traffic":
            cumulative = (time_us - T0) // SECOND + rng.choice([0, 0, -500])
            items.append(
                traffic(sensor, time_us, [(1, "in", "car", None, max(cumulative, 0))])
                if rng.random() < 0.5
                else traffic(sensor, time_us, [(2, "out", "bicycle", rng.randint(0, 5), None)])
            )
        else:
            regions = {r: rng.randint(0, 30) for r in range(rng.randint(1, 3))}
            items.append(occupancy(sensor, time_us, regions))
    return items


@pytest.mark.parametrize("kind", ["noise", "air", "traffic", "occupancy"])
@pytest.mark.parametrize("seed", range(4))
def test_fold_parts_is_fold_partition_by_partition(kind: str, seed: int) -> None:
    """A poll's partitions folded together (``extract_parts`` + ``fold_parts``) give what
    folding them one after the other gives: the same late records with the same watermarks,
    and the same results and needed offsets at every poll."""
    from streams._columns import extract_parts

    rng = random.Random(seed)
    windows = (
        WindowSettings(name="1m", size_s=60, grace_s=5, allowed_lateness_s=120),
        WindowSettings(name="15m", size_s=900, grace_s=10, allowed_lateness_s=300, emit="update"),
    )
    one, together = _stage(kind, *windows), _stage(kind, *windows)
    partitions = ["p0", "p1", "p2"]
    sensors = {p: [f"{p}-s{i}" for i in range(4)] for p in partitions}
    offsets = dict.fromkeys(partitions, 0)
    seen = {"late": 0, "rejected": 0, "results": 0}
    for poll in range(40):
        now_s = poll * 0.5
        base_us = T0 + poll * 5 * SECOND
        batch = []
        for partition in rng.sample(partitions, rng.randint(1, 3)):
            records = polled(
                _poll_items(kind, rng, sensors[partition], base_us), offsets[partition]
            )
            offsets[partition] += len(records)
            if poll % 7 == 3 and records:  # a record that is not a measurement
                records[0] = type(records[0])(records[0].key, b"\x00junk", records[0].offset)
            batch.append((partition, records))
        expected = []
        for partition, records in batch:
            columns = extract(records, kind, one.keys)
            if len(columns):
                late = one.fold(partition, columns, now_s)
                expected.append(
                    (
                        partition,
                        [(i.index, i.reason) for i in late],
                        one.watermarks.current(now_s),
                        columns.rejected,
                    )
                )
            else:
                expected.append((partition, [], one.watermarks.current(now_s), columns.rejected))
        columns, stops = extract_parts([r for _, r in batch], kind, together.keys)
        outcome = together.fold_parts(
            [(p, stop) for (p, _), stop in zip(batch, stops, strict=True)], columns, now_s
        )
        start_row, start_record = 0, 0
        for (partition, records), stop, (late, watermark), want in zip(
            batch, stops, outcome, expected, strict=True
        ):
            rejected = tuple(
                (position - start_record, reason)
                for position, reason in columns.rejected
                if start_record <= position < start_record + len(records)
            )
            if stop > start_row:  # a part without rows is not observed, as in the per-part path
                assert watermark == want[2]
            assert (
                partition,
                [(i.index - start_row, i.reason) for i in late],
                rejected,
            ) == (want[0], want[1], want[3])
            start_row, start_record = stop, start_record + len(records)
            seen["late"] += len(late)
            seen["rejected"] += len(rejected)
        results = together.advance(now_s)
        seen["results"] += len(results)
        assert results == one.advance(now_s)
        assert together.needed_offsets() == one.needed_offsets()
    assert together.advance(1e9) == one.advance(1e9)
    assert all(seen.values()), seen  # the case exercised late records, rejections, results
