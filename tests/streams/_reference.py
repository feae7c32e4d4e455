"""A plain batch computation of per-sensor window results, written without numpy.

It states what the window stage must produce for records that all arrived in time: the property
tests compare the two on shuffled, batched input. Kept deliberately naive: group the records by
(sensor, window), then compute each indicator from the group's list.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from streams import _indicators as ind
from streams._columns import AIR_QUANTITIES

__all__ = ["reference_windows"]

_HIGH = ("lamax_db", "lafmax_db", "lasmax_db", "laeq_db", "la_db")
_LOW = ("lamin_db", "lafmin_db", "lasmin_db", "laeq_db", "la_db")


def _first(values: Mapping[str, float], names: tuple[str, ...]) -> float | None:
    for name in names:
        if name in values:
            return values[name]
    return None


def _noise(
    records: list[tuple[int, dict[str, float]]], interval_s: float, size_s: int
) -> dict[str, float]:
    energy = 0.0
    duration = 0.0
    histogram: dict[int, float] = {}
    highs = [h for _, v in records if (h := _first(v, _HIGH)) is not None]
    lows = [lo for _, v in records if (lo := _first(v, _LOW)) is not None]
    for _, values in records:
        level = _first(values, ("laeq_db", "la_db"))
        if level is None:
            continue
        energy += interval_s * 10 ** (level / 10)
        duration += interval_s
        level_bin = math.floor(level * 10 + 0.5)
        histogram[level_bin] = histogram.get(level_bin, 0.0) + interval_s
    out: dict[str, float] = {}
    if duration > 0:
        out["laeq_db"] = round(10 * math.log10(energy / duration), 2)
    if highs:
        out["lamax_db"] = round(max(highs), 2)
    if lows:
        out["lamin_db"] = round(min(lows), 2)
    for name, percent in (("l10_db", 10.0), ("l50_db", 50.0), ("l90_db", 90.0)):
        exceeded = ind.exceeded_level_db(histogram, percent)
        if exceeded is not None:
            out[name] = round(exceeded, 2)
    out["coverage"] = round(min(1.0, duration / size_s), 4)
    return out


def _air(records: list[tuple[int, dict[str, float]]], size_s: int) -> dict[str, float]:
    out: dict[str, float] = {}
    means: dict[str, float] = {}
    for quantity in AIR_QUANTITIES:
        present = [v[quantity] for _, v in records if quantity in v]
        if not present:
            continue
        mean = sum(present) / len(present)
        means[quantity] = mean
        out[f"{quantity}_mean"] = round(mean, 4)
        out[f"{quantity}_min"] = round(min(present), 4)
        out[f"{quantity}_max"] = round(max(present), 4)
        out[f"{quantity}_count"] = float(len(present))
    if size_s == 3600:
        band = ind.eaqi_band({q: round(m, 4) for q, m in means.items()})
        if band is not None:
            out["eaqi_band"] = float(band)
    return out


def reference_windows(
    kind: str,
    records: Iterable[tuple[str, int, dict[str, float]]],
    size_s: int,
    interval_s: Mapping[str, float],
) -> dict[tuple[str, int], tuple[int, dict[str, float]]]:
    """(sensor, window start µs) → (sample count, values) for noise or air records given as
    (sensor id, observed_at µs, {quantity: value})."""
    size_us = size_s * 1_000_000
    groups: dict[tuple[str, int], list[tuple[int, dict[str, float]]]] = defaultdict(list)
    for sensor, time_us, values in records:
        groups[(sensor, time_us - time_us % size_us)].append((time_us, values))
    result: dict[tuple[str, int], tuple[int, dict[str, float]]] = {}
    for (sensor, start), group in groups.items():
        indicators = (
            _noise(group, interval_s[sensor], size_s) if kind == "noise" else _air(group, size_s)
        )
        result[(sensor, start)] = (len(group), indicators)
    return result
