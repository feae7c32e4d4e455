"""The ``sensors`` table mirrors the registry file, so analysts can join measurements to places."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from citysense.registry import Registry

__all__ = ["sync_sensors"]

_UPSERT = """
INSERT INTO sensors (id, kind, codec, site, lat, lon, capacity, dev_eui,
                     line_classes, regions, calibration, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (id) DO UPDATE SET
    kind = EXCLUDED.kind, codec = EXCLUDED.codec, site = EXCLUDED.site, lat = EXCLUDED.lat,
    lon = EXCLUDED.lon, capacity = EXCLUDED.capacity, dev_eui = EXCLUDED.dev_eui,
    line_classes = EXCLUDED.line_classes, regions = EXCLUDED.regions,
    calibration = EXCLUDED.calibration, updated_at = now()
WHERE (sensors.kind, sensors.codec, sensors.site, sensors.lat, sensors.lon, sensors.capacity,
       sensors.dev_eui, sensors.line_classes, sensors.regions, sensors.calibration)
      IS DISTINCT FROM
      (EXCLUDED.kind, EXCLUDED.codec, EXCLUDED.site, EXCLUDED.lat, EXCLUDED.lon,
       EXCLUDED.capacity, EXCLUDED.dev_eui, EXCLUDED.line_classes, EXCLUDED.regions,
       EXCLUDED.calibration)
"""


async def sync_sensors(conn: psycopg.AsyncConnection[Any], registry: Registry) -> int:
    """Upsert every registry sensor; returns how many rows changed. Sensors are never deleted:
    old measurements keep pointing at them."""
    rows = [
        (
            s.id,
            s.kind,
            s.codec,
            s.site,
            s.lat,
            s.lon,
            s.capacity,
            s.dev_eui,
            json.dumps({str(k): v for k, v in s.line_classes.items()}),
            json.dumps({str(k): v for k, v in s.regions.items()}),
            json.dumps(s.calibration),
        )
        for s in registry.sensors.values()
    ]
    async with conn.cursor() as cursor:
        changed = 0
        for row in rows:
            await cursor.execute(_UPSERT, row)
            changed += cursor.rowcount
    return changed
