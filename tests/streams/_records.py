"""Measurement records as the aggregator polls them: aiokafka-like records of framed Avro."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import encode, typed_quantities

__all__ = ["Polled", "air", "noise", "occupancy", "polled", "traffic"]

MINUTE = 60_000_000
T0 = 1_780_000_000_000_000 - 1_780_000_000_000_000 % (3600 * 1_000_000)


@dataclass(frozen=True)
class Polled:
    """The attributes of an aiokafka ``ConsumerRecord`` the aggregator reads."""

    key: bytes | None
    value: bytes | None
    offset: int


def _record(kind: str, sensor: str, time_us: int, values: dict[str, float]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "sensor_id": sensor,
        "kind": kind,
        "observed_at": time_us,
        "received_at": time_us,
        "codec": "test",
        "partial": False,
        "other_values": {},
        "source": {},
    }
    record.update(dict.fromkeys(sorted(typed_quantities(kind))))
    record.update(values)
    return record


def noise(sensor: str, time_us: int, laeq: float | None, **values: float) -> tuple[str, bytes]:
    fields = dict(values)
    if laeq is not None:
        fields["laeq_db"] = laeq
    return sensor, encode("NoiseMeasurement", _record("noise", sensor, time_us, fields))


def air(sensor: str, time_us: int, **values: float) -> tuple[str, bytes]:
    return sensor, encode("AirMeasurement", _record("air", sensor, time_us, values))


def traffic(
    sensor: str, time_us: int, counts: list[tuple[int, str, str, int | None, int | None]]
) -> tuple[str, bytes]:
    record = _record("traffic", sensor, time_us, {})
    record["counts"] = [
        {"line": line, "direction": d, "traffic_class": c, "count": n, "cumulative": cum}
        for line, d, c, n, cum in counts
    ]
    return sensor, encode("TrafficMeasurement", record)


def occupancy(sensor: str, time_us: int, regions: dict[int, int]) -> tuple[str, bytes]:
    record = _record("occupancy", sensor, time_us, {})
    record["regions"] = [{"region": r, "count": n} for r, n in sorted(regions.items())]
    return sensor, encode("OccupancyMeasurement", record)


def polled(items: list[tuple[str, bytes]], first_offset: int = 0) -> list[Polled]:
    return [
        Polled(sensor.encode(), value, first_offset + i) for i, (sensor, value) in enumerate(items)
    ]
