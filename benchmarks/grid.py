"""Mobile air sensors: positioned records/s through the aggregator beside fixed-sensor records/s.

The aggregator reads ``city.air.measurements.v1`` twice: its window stage folds every record
into per-sensor windows, its grid stage pools the mobile sensors' ones per 100 m cell of the
European grid (projection with pyproj included). Here both stages run in this process on the
same Avro frames as ingest writes them, in polled batches of the service's size
(``aggregate.max_poll_records``), without Kafka's own cost (``benchmarks/aggregate.py``
measures the aggregator with its broker):

- fixed: ``RECORDS`` air records (``CITYSENSE_BENCH_GRID_RECORDS``, default 400,000) of 1,000
  fixed sensors (PM2.5, PM10, NO2, every 10 s of event time), no position;
- positioned: as many records of 1,000 mobile sensors (PM2.5 and a fix), each drifting across
  central Paris at 0-14 m/s, so that cells fill and close as in a city.

Per input: the window stage (default windows 1 min, 15 min, 1 h), the grid stage (15 min, 1 h),
and the aggregator as a whole (both); records/s is records over the time of extraction, folding
and emission, median of ``RUNS`` runs (``CITYSENSE_BENCH_GRID_RUNS``, default 3). No target: the
figure is the cost of a position next to the fixed-sensor path measured in the same run.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import schemas
from benchmarks import median, table
from citysense.settings import AggregateSettings
from streams._columns import extract
from streams._grid_stage import GridStage
from streams._stage import WindowStage

__all__ = ["main"]

RECORDS = int(os.environ.get("CITYSENSE_BENCH_GRID_RECORDS", "400000"))
RUNS = int(os.environ.get("CITYSENSE_BENCH_GRID_RUNS", "3"))
SENSORS = 1000
INTERVAL_S = 10
_MICROS = 1_000_000
#: Central Paris, where the vehicles start: Châtelet, ± ~2 km.
_CENTRE = (48.8584, 2.3488)
_METRE_LAT = 1 / 111_200
_METRE_LON = 1 / (111_200 * math.cos(math.radians(_CENTRE[0])))


@dataclass(frozen=True, slots=True)
class _Polled:
    """The attributes of an aiokafka ``ConsumerRecord`` the aggregator reads."""

    key: bytes
    value: bytes
    offset: int


def _record(sensor: str, time_us: int, values: dict[str, float | None]) -> bytes:
    record: dict[str, Any] = dict.fromkeys(
        f["name"] for f in schemas.schema("AirMeasurement")["fields"]
    )
    record.update(
        sensor_id=sensor,
        kind="air",
        observed_at=time_us,
        received_at=time_us,
        codec="bench",
        partial=False,
        other_values={},
        source={},
    )
    record.update(values)
    return schemas.encode("AirMeasurement", record)


def _inputs(count: int, start_us: int) -> tuple[list[_Polled], list[_Polled]]:
    """(fixed, positioned) records, in event-time order, offsets from 0."""
    rng = random.Random(11)
    fixed: list[_Polled] = []
    positioned: list[_Polled] = []
    where = [
        [
            _CENTRE[0] + rng.uniform(-2000, 2000) * _METRE_LAT,
            _CENTRE[1] + rng.uniform(-2000, 2000) * _METRE_LON,
            rng.uniform(0, 2 * math.pi),
        ]
        for _ in range(SENSORS)
    ]
    for k in range(count):
        sensor = k % SENSORS
        time_us = start_us + (k // SENSORS) * INTERVAL_S * _MICROS + sensor * 1000
        fixed_id = f"bench-air-{sensor:04d}"
        fixed.append(
            _Polled(
                fixed_id.encode(),
                _record(
                    fixed_id,
                    time_us,
                    {"pm2_5_ugm3": 8.0 + sensor % 20, "pm10_ugm3": 15.0, "no2_ugm3": 30.0},
                ),
                k,
            )
        )
        state = where[sensor]
        step = rng.uniform(0, 14) * INTERVAL_S
        state[2] += rng.gauss(0, 0.3)
        state[0] += math.sin(state[2]) * step * _METRE_LAT
        state[1] += math.cos(state[2]) * step * _METRE_LON
        car = f"bench-car-{sensor:04d}"
        positioned.append(
            _Polled(
                car.encode(),
                _record(
                    car,
                    time_us,
                    {"pm2_5_ugm3": 5.0 + rng.random() * 30, "lat": state[0], "lon": state[1]},
                ),
                k,
            )
        )
    return fixed, positioned


def _mobile(sensor_id: str) -> bool:
    return sensor_id.startswith("bench-car-")


def _window_run(records: Sequence[_Polled], batch: int) -> int:
    settings = AggregateSettings()
    stage = WindowStage("air", settings, lambda _sensor: (float(INTERVAL_S), None))
    stage.assign("p0", 0.0)
    emitted = 0
    for first in range(0, len(records), batch):
        columns = extract(records[first : first + batch], "air", stage.keys)
        stage.fold("p0", columns, 0.0)
        emitted += len(stage.advance(0.0))
    return emitted


def _grid_run(records: Sequence[_Polled], batch: int) -> int:
    settings = AggregateSettings()
    stage = GridStage(settings.grid, settings.out_of_orderness_s, settings.idle_timeout_s, _mobile)
    stage.assign("p0", 0.0)
    emitted = 0
    for first in range(0, len(records), batch):
        columns = extract(records[first : first + batch], "air", stage.keys)
        stage.fold("p0", columns, 0.0)
        emitted += len(stage.advance(0.0))
    return emitted


def _rate(run: Callable[[], int], count: int) -> tuple[float, int]:
    seconds: list[float] = []
    emitted = 0
    for _ in range(RUNS):
        started = time.perf_counter()
        emitted = run()
        seconds.append(time.perf_counter() - started)
    return count / median(seconds), emitted


def main() -> dict[str, Any]:
    batch = AggregateSettings().max_poll_records
    now_us = time.time_ns() // 1000
    start_us = now_us - now_us % (3600 * _MICROS) - 24 * 3600 * _MICROS
    began = time.perf_counter()
    fixed, positioned = _inputs(RECORDS, start_us)
    print(f"encoded 2 x {RECORDS:,} air records in {time.perf_counter() - began:.1f} s")
    figures: dict[str, Any] = {"records": RECORDS, "batch": batch}
    rows = []
    for label, records in (("fixed", fixed), ("positioned", positioned)):
        window_rate, windows = _rate(partial(_window_run, records, batch), len(records))
        grid_rate, cells = _rate(partial(_grid_run, records, batch), len(records))
        both = 1 / (1 / window_rate + 1 / grid_rate)
        figures[label] = {
            "window_stage_records_s": window_rate,
            "grid_stage_records_s": grid_rate,
            "aggregator_records_s": both,
            "windows_emitted": windows,
            "cells_emitted": cells,
        }
        rows.append([label, window_rate, grid_rate, both, windows, cells])
    print(
        table(
            [
                "air records",
                "window stage rec/s",
                "grid stage rec/s",
                "aggregator rec/s",
                "windows",
                "cells",
            ],
            rows,
            title=(
                f"{RECORDS:,} air records of {SENSORS:,} sensors, batches of {batch:,}, "
                f"median of {RUNS} (in process, no broker; aggregator = both stages)"
            ),
        )
    )
    ratio = figures["positioned"]["aggregator_records_s"] / figures["fixed"]["aggregator_records_s"]
    figures["positioned_to_fixed"] = ratio
    figures["summary"] = (
        f"positioned {figures['positioned']['aggregator_records_s']:,.0f} records/s through "
        f"the aggregator's stages, fixed {figures['fixed']['aggregator_records_s']:,.0f}/s "
        f"({ratio:.2f}x)"
    )
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, default=str))
