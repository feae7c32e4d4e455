"""The grid stage (pure): cells, windows, privacy thresholds, revisions, recovery."""

from __future__ import annotations

from typing import Any

import pytest

from citysense.settings import GridSettings, WindowSettings
from streams._columns import extract
from streams._grid import cell_of
from streams._grid_stage import GridStage
from tests.streams._records import MINUTE, T0, air, polled

#: Two points 30 m apart in one 100 m cell near Place de la Nation, and one 300 m east of them.
A = (48.84840, 2.39590)
B = (48.84850, 2.39620)
FAR = (48.84845, 2.40000)
MOBILE = {"car-1", "car-2", "car-3"}


def _settings(**overrides: Any) -> GridSettings:
    values: dict[str, Any] = {
        "windows": (WindowSettings(name="15m", size_s=900, grace_s=10, allowed_lateness_s=900),),
        "min_samples": 3,
        "min_vehicles": 2,
    }
    values.update(overrides)
    return GridSettings(**values)


class _Feeder:
    def __init__(self, stage: GridStage) -> None:
        self.stage = stage
        self.offset = 0

    def feed(
        self, items: list[tuple[str, bytes]], now_s: float = 0.0, partition: str = "p0"
    ) -> None:
        records = polled(items, self.offset)
        self.offset += len(items)
        self.stage.fold("p0", extract(records, "air", self.stage.keys), now_s)


def _stage(**overrides: Any) -> tuple[GridStage, _Feeder]:
    stage = GridStage(_settings(**overrides), 10.0, 30.0, lambda sensor: sensor in MOBILE)
    stage.assign("p0", 0.0)
    return stage, _Feeder(stage)


def _sample(car: str, minute: float, where: tuple[float, float], pm: float, **more: float) -> Any:
    return air(car, T0 + int(minute * MINUTE), pm2_5_ugm3=pm, lat=where[0], lon=where[1], **more)


def _tick(minute: float) -> Any:
    """A fixed sensor's record that moves the watermark to ``minute`` - 10 s."""
    return air("fixed-1", T0 + int(minute * MINUTE), pm2_5_ugm3=1.0)


def test_points_a_and_b_share_a_cell_and_far_does_not() -> None:
    assert cell_of(*A) == cell_of(*B)
    assert cell_of(*A) != cell_of(*FAR)


def test_a_cell_is_published_with_mean_max_counts_and_polygon_once_closed() -> None:
    stage, feeder = _stage()
    feeder.feed(
        [
            _sample("car-1", 1, A, 10.0),
            _sample("car-2", 2, B, 20.0),
            _sample("car-1", 3, A, 36.0),
            _sample("car-3", 4, FAR, 99.0),  # alone in its cell: suppressed
            _tick(15),  # watermark 14:50, before the window's end + grace (15:10)
        ]
    )
    assert stage.advance(0.0) == []
    feeder.feed([_tick(15.5)])  # watermark 15:20
    (result,) = stage.advance(0.0)
    cell = cell_of(*A)
    assert cell is not None
    assert result["cell_id"] == cell.id
    assert result["window_start"] == T0
    assert result["window_end"] == T0 + 15 * MINUTE
    assert result["sample_count"] == 3
    assert result["revision"] == 3
    assert result["vehicle_count"] == 2
    assert result["pm2_5_ugm3_mean"] == pytest.approx((10 + 20 + 36) / 3, abs=1e-4)
    assert result["pm2_5_ugm3_max"] == 36.0
    # EEA 2024 PM2.5 bands: 15 < 22 <= 50 is band 3 (moderate).
    assert result["eaqi_band"] == 3
    assert [(c["lon"], c["lat"]) for c in result["corners"]] == list(cell.corners())
    outcomes, cells = stage.take_counts()
    assert outcomes["gridded"] == 4
    assert cells == {("15m", "published"): 1, ("15m", "suppressed"): 1}


@pytest.mark.parametrize(
    ("samples", "published"),
    [
        # min_samples 3, min_vehicles 2
        ([("car-1", 10.0), ("car-1", 11.0), ("car-1", 12.0), ("car-1", 13.0)], False),
        ([("car-1", 10.0), ("car-2", 11.0)], False),
        ([("car-1", 10.0), ("car-1", 11.0), ("car-2", 12.0)], True),
    ],
    ids=["one-vehicle", "two-samples", "at-thresholds"],
)
def test_privacy_thresholds(samples: list[tuple[str, float]], published: bool) -> None:
    stage, feeder = _stage()
    feeder.feed([_sample(car, 1 + i, A, pm) for i, (car, pm) in enumerate(samples)])
    feeder.feed([_tick(16)])
    results = stage.advance(0.0)
    assert bool(results) == published


def test_a_suppressed_cell_is_published_once_late_samples_meet_the_thresholds() -> None:
    stage, feeder = _stage()
    feeder.feed([_sample("car-1", 1, A, 10.0), _sample("car-1", 2, A, 12.0), _tick(16)])
    assert stage.advance(0.0) == []  # one vehicle: suppressed
    feeder.feed([_sample("car-2", 3, B, 20.0), _tick(17)])
    (late,) = stage.advance(0.0)
    assert late["sample_count"] == 3
    assert late["vehicle_count"] == 2
    _outcomes, cells = stage.take_counts()
    assert cells == {("15m", "suppressed"): 1, ("15m", "published"): 1}


def test_records_left_out_of_the_map_are_counted_by_outcome() -> None:
    stage, feeder = _stage(max_accuracy_m=50.0)
    feeder.feed(
        [
            air("car-1", T0 + MINUTE, pm2_5_ugm3=12.0),  # mobile, no fix (a tunnel)
            _sample("car-1", 2, A, 12.0, position_accuracy_m=80.0),
            air("car-2", T0 + 3 * MINUTE, pm10_ugm3=20.0, lat=A[0], lon=A[1]),  # no PM2.5
            _sample("car-2", 4, (-60.0, -170.0), 12.0),  # no cell of the grid there
            _sample("car-3", 5, A, 12.0, position_accuracy_m=5.0),
            air("fixed-1", T0 + 6 * MINUTE, pm2_5_ugm3=9.0, lat=A[0], lon=A[1]),  # not mobile
        ]
    )
    outcomes, _cells = stage.take_counts()
    assert outcomes == {
        "gridded": 1,
        "no_position": 1,
        "inaccurate": 1,
        "no_pm2_5": 1,
        "outside_grid": 1,
        "late": 0,
    }


def test_late_samples_revise_a_cell_and_later_ones_are_counted_late() -> None:
    stage, feeder = _stage()
    feeder.feed([_sample(c, 1 + i, A, 10.0) for i, c in enumerate(["car-1", "car-2", "car-1"])])
    feeder.feed([_tick(16)])
    (first,) = stage.advance(0.0)
    assert first["revision"] == 3
    # Within the allowed lateness (15 min after end + grace): a revision with the new mean.
    feeder.feed([_sample("car-3", 14, A, 30.0), _tick(20)])
    (second,) = stage.advance(0.0)
    assert second["revision"] == 4
    assert second["vehicle_count"] == 3
    assert second["pm2_5_ugm3_mean"] == pytest.approx(15.0)
    # Beyond it (watermark past 15:10 + 15 min): counted late, nothing emitted, state forgotten.
    feeder.feed([_tick(31)])
    assert stage.advance(0.0) == []
    feeder.feed([_sample("car-3", 5, A, 50.0), _tick(32)])
    assert stage.advance(0.0) == []
    outcomes, cells = stage.take_counts()
    assert outcomes["late"] == 1
    assert cells == {("15m", "published"): 1, ("15m", "revised"): 1}
    assert stage.open_cells() == {"15m": 0}


def test_windows_of_both_sizes_and_their_order() -> None:
    windows = (
        WindowSettings(name="15m", size_s=900, grace_s=10, allowed_lateness_s=900),
        WindowSettings(name="1h", size_s=3600, grace_s=30, allowed_lateness_s=900),
    )
    stage, feeder = _stage(windows=windows)
    items = [_sample(c, m, A, 8.0) for c, m in [("car-1", 1), ("car-2", 2), ("car-1", 3)]]
    items += [_sample(c, m, B, 12.0) for c, m in [("car-1", 20), ("car-2", 21), ("car-3", 22)]]
    feeder.feed([*items, _tick(61)])
    results = stage.advance(0.0)
    assert [(r["window_size_seconds"], r["sample_count"]) for r in results] == [
        (900, 3),
        (900, 3),
        (3600, 6),
    ]
    assert results[2]["pm2_5_ugm3_mean"] == pytest.approx(10.0)
    assert results[2]["vehicle_count"] == 3


def test_replay_after_a_restart_rebuilds_without_sending_closed_windows_again() -> None:
    stage, feeder = _stage()
    batch = [_sample(c, 1 + i, A, 10.0) for i, c in enumerate(["car-1", "car-2", "car-1"])]
    feeder.feed([*batch, _tick(16)])
    (sent,) = stage.advance(0.0)
    needed = stage.needed_offsets()
    assert needed == {"p0": 0}
    watermark = stage.watermarks.current(0.0)
    # A new process replays from the needed offset with the stored watermark.
    restarted = GridStage(_settings(), 10.0, 30.0, lambda sensor: sensor in MOBILE)
    restarted.assign("p0", 0.0)
    restarted.watermarks.restore(watermark)
    records = polled([*batch, _tick(16)])
    restarted.fold("p0", extract(records, "air", restarted.keys), 0.0, replay_watermark=watermark)
    assert restarted.advance(0.0) == []
    assert restarted.take_counts()[0]["gridded"] == 0  # replays are not counted twice
    # A late sample after the restart revises it from the rebuilt state.
    restarted.fold(
        "p0", extract(polled([_sample("car-3", 6, B, 40.0)], 5), "air", restarted.keys), 0.0
    )
    (revised,) = restarted.advance(0.0)
    assert revised["revision"] == sent["revision"] + 1
    assert revised["pm2_5_ugm3_mean"] == pytest.approx(17.5)


def test_revoking_the_partition_forgets_its_cells() -> None:
    stage, feeder = _stage()
    feeder.feed([_sample("car-1", 1, A, 10.0)])
    assert stage.open_cells() == {"15m": 1}
    stage.revoke("p0")
    assert stage.open_cells() == {"15m": 0}
    assert stage.needed_offsets() == {}
