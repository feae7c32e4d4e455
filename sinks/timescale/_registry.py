"""The ``sensors`` and ``sites`` tables mirror the registry file, so analysts can join
measurements to places and the open-data views can name sites and read pool capacities."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

from citysense.registry import Registry

__all__ = ["RegistrySync", "sync_registry", "sync_sensors", "sync_sites"]

_UPSERT = """
INSERT INTO sensors (id, kind, codec, site, lat, lon, capacity, dev_eui,
                     line_classes, regions, calibration, mobile, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (id) DO UPDATE SET
    kind = EXCLUDED.kind, codec = EXCLUDED.codec, site = EXCLUDED.site, lat = EXCLUDED.lat,
    lon = EXCLUDED.lon, capacity = EXCLUDED.capacity, dev_eui = EXCLUDED.dev_eui,
    line_classes = EXCLUDED.line_classes, regions = EXCLUDED.regions,
    calibration = EXCLUDED.calibration, mobile = EXCLUDED.mobile, updated_at = now()
WHERE (sensors.kind, sensors.codec, sensors.site, sensors.lat, sensors.lon, sensors.capacity,
       sensors.dev_eui, sensors.line_classes, sensors.regions, sensors.calibration,
       sensors.mobile)
      IS DISTINCT FROM
      (EXCLUDED.kind, EXCLUDED.codec, EXCLUDED.site, EXCLUDED.lat, EXCLUDED.lon,
       EXCLUDED.capacity, EXCLUDED.dev_eui, EXCLUDED.line_classes, EXCLUDED.regions,
       EXCLUDED.calibration, EXCLUDED.mobile)
"""


_UPSERT_SITE = """
INSERT INTO sites (id, name, lat, lon, capacity, opening_hours, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, now())
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, lat = EXCLUDED.lat, lon = EXCLUDED.lon, capacity = EXCLUDED.capacity,
    opening_hours = EXCLUDED.opening_hours, updated_at = now()
WHERE (sites.name, sites.lat, sites.lon, sites.capacity, sites.opening_hours)
      IS DISTINCT FROM
      (EXCLUDED.name, EXCLUDED.lat, EXCLUDED.lon, EXCLUDED.capacity, EXCLUDED.opening_hours)
"""


@dataclass(frozen=True, slots=True)
class RegistrySync:
    """Rows changed by :func:`sync_registry`."""

    sites: int
    sensors: int


async def sync_registry(conn: psycopg.AsyncConnection[Any], registry: Registry) -> RegistrySync:
    """Upsert every registry site, then every sensor; how many rows of each changed."""
    sites = await sync_sites(conn, registry)
    return RegistrySync(sites=sites, sensors=await sync_sensors(conn, registry))


async def sync_sites(conn: psycopg.AsyncConnection[Any], registry: Registry) -> int:
    """Upsert every registry site; returns how many rows changed. Sites are never deleted: old
    window results keep pointing at them (``site:<id>`` keys)."""
    rows = [
        (site.id, site.name, site.lat, site.lon, site.capacity, list(site.opening_hours))
        for site in registry.sites.values()
    ]
    async with conn.cursor() as cursor:
        changed = 0
        for row in rows:
            await cursor.execute(_UPSERT_SITE, row)
            changed += cursor.rowcount
    return changed


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
            s.mobile,
        )
        for s in registry.sensors.values()
    ]
    async with conn.cursor() as cursor:
        changed = 0
        for row in rows:
            await cursor.execute(_UPSERT, row)
            changed += cursor.rowcount
    return changed
