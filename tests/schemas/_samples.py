"""One representative record per current schema, in the shape fastavro reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import typed_quantities

OBSERVED = datetime(2024, 6, 21, 12, 30, 15, 123456, tzinfo=UTC)
RECEIVED = OBSERVED + timedelta(seconds=2, microseconds=1)

SOURCE = {
    "network": "chirpstack",
    "gateway_id": "7276ff002e062c18",
    "rssi": -97.0,
    "snr": 7.5,
    "f_cnt": 4242,
    "dev_eui": "70b3d5e75e00a1b2",
    "dedup_id": "3c1b0a52-42a5-4d8e-9d0c-4f7f0e0d9a11",
    "idempotency_key": "70b3d5e75e00a1b2:4242",
}
EMPTY_SOURCE = dict.fromkeys(SOURCE)


def _measurement(kind: str, sensor_id: str, codec: str, values: dict[str, float]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "sensor_id": sensor_id,
        "kind": kind,
        "observed_at": OBSERVED,
        "received_at": RECEIVED,
        "codec": codec,
        "partial": False,
    }
    record.update(dict.fromkeys(sorted(typed_quantities(kind))))
    record.update({k: v for k, v in values.items() if k in typed_quantities(kind)})
    record["other_values"] = {k: v for k, v in values.items() if k not in typed_quantities(kind)}
    record["source"] = dict(SOURCE)
    return record


def sample_records() -> dict[str, dict[str, Any]]:
    noise = _measurement(
        "noise",
        "nation-noise-07",
        "cesva_ta120",
        {
            "laeq_db": 62.4,
            "lafmax_db": 78.9,
            "lcpeak_db": 101.2,
            "lz_31_5hz_db": 55.0,
            "battery_pct": 87.0,
            "la90_db": 51.3,
        },
    )
    air = _measurement(
        "air",
        "nation-air-03",
        "decentlab_dl_ac",
        {
            "pm2_5_ugm3": 11.2,
            "no2_ugm3": 38.3,
            "temperature_c": 21.5,
            "battery_v": 3.61,
            "noise_proxy_db": 40.0,
        },
    )
    air["partial"] = True
    air["source"] = dict(EMPTY_SOURCE)
    # A mobile sensor's fix (AirMeasurement v1): Place de la Nation.
    air.update(lat=48.8484, lon=2.3959, position_accuracy_m=4.5)
    traffic = _measurement("traffic", "nation-cam-01", "milesight_vs133", {"battery_pct": 99.0})
    traffic["counts"] = [
        {"line": 1, "direction": "in", "traffic_class": "bicycle", "count": 12, "cumulative": 4012},
        {"line": 1, "direction": "out", "traffic_class": "car", "count": None, "cumulative": 77},
        {"line": 2, "direction": "in", "traffic_class": "unknown", "count": 0, "cumulative": None},
    ]
    occupancy = _measurement("occupancy", "pool-cam-01", "pool_counter", {})
    occupancy["regions"] = [{"region": 1, "count": 14}, {"region": 2, "count": 0}]
    window_start = datetime(2024, 6, 21, 12, 0, tzinfo=UTC)
    return {
        "NoiseMeasurement": noise,
        "AirMeasurement": air,
        "TrafficMeasurement": traffic,
        "OccupancyMeasurement": occupancy,
        "Aggregate": {
            "key": "site:nation",
            "kind": "traffic",
            "window_start": window_start,
            "window_end": window_start + timedelta(minutes=15),
            "window_size_seconds": 900,
            "revision": 2,
            "final": False,
            "values": {"total": 143.0},
            "sample_count": 15,
            "counts": [
                {
                    "line": 1,
                    "direction": "in",
                    "traffic_class": "bicycle",
                    "count": 143,
                    "cumulative": None,
                },
            ],
            "regions": [{"region": 1, "mean_count": 12.5, "max_count": 19}],
        },
        "CellAggregate": {
            "cell_id": "CRS3035RES100mN2889400E3760700",
            "resolution_m": 100,
            "window_start": window_start,
            "window_end": window_start + timedelta(hours=1),
            "window_size_seconds": 3600,
            "revision": 42,
            "final": True,
            "sample_count": 42,
            "vehicle_count": 3,
            "pm2_5_ugm3_mean": 17.25,
            "pm2_5_ugm3_max": 31.0,
            "eaqi_band": 3,
            "corners": [
                {"lon": 2.3516, "lat": 48.8557},
                {"lon": 2.3530, "lat": 48.8558},
                {"lon": 2.3529, "lat": 48.8567},
                {"lon": 2.3515, "lat": 48.8566},
            ],
        },
        "DeadLetter": {
            "original_topic": "application/12/device/70b3d5e75e00a1b2/event/up",
            "payload": b"\x01\x67\xff",
            "error_class": "TruncatedError",
            "error_message": "cesva_ta120: expected 2 bytes at offset 2",
            "reason": "truncated",
            "codec": "cesva_ta120",
            "received_at": RECEIVED,
            "sensor_id": None,
        },
        "LateRecord": {
            "topic": "city.noise.measurements.v1",
            "partition": 3,
            "offset": 912_345_678_901,
            "key": b"nation-noise-07",
            "value": b"\xc3\x01" + bytes(8) + b"body",
            "observed_at": OBSERVED,
            "watermark": OBSERVED + timedelta(hours=1),
            "received_at": RECEIVED + timedelta(hours=1),
            "reason": "cumulative_counter_out_of_order",
        },
    }
