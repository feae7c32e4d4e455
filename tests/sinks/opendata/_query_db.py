"""A scratch database for the query builder's tests: one dataset view over a base table, a
secret table next to it, and a login role that may read the view only (as the API role does).

The rows are generated here in Python and returned, so tests compute their expectations from
the same rows without the database.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from citysense.settings import Settings
from sinks.opendata._catalog import Dataset, DatasetField, LocalizedText
from tests.sinks._helpers import with_database

_TEXT = LocalizedText(fr="test", en="test")

#: The test dataset: every portal field type once (text twice, for full-text search).
DATASET = Dataset(
    id="essai",
    view="essai",
    title=_TEXT,
    description=_TEXT,
    fields=tuple(
        DatasetField(name=name, type=kind, label=_TEXT)
        for name, kind in (
            ("sensor_id", "text"),
            ("site_name", "text"),
            ("start_time", "datetime"),
            ("day", "date"),
            ("laeq_db", "double"),
            ("sample_count", "int"),
            ("ok", "boolean"),
            ("geo_point_2d", "geo_point_2d"),
        )
    ),
    timestamp_field="start_time",
    geo_field="geo_point_2d",
    key_fields=("sensor_id",),
)

#: Centre of the distance tests (Place de la Nation) and metres per degree of latitude on the
#: compiler's sphere: sensors sit due north of it at known distances.
CENTRE = (2.3958, 48.8483)
METRES_PER_DEGREE = 6_371_008.8 * math.pi / 180
#: sensor → (site, metres north of CENTRE or None for no position)
SENSORS: dict[str, tuple[str, float | None]] = {
    "s1": ("Nation Nord", 300.0),
    "s2": ("Nation Sud", 450.0),
    "s3": ("Bastille_50%", 800.0),
    "s4": ("Vincennes", None),
}
#: Hourly rows from this instant, across Europe/Paris's switch to summer time (29 March 2026,
#: 01:00 UTC), so local days and hours differ from UTC ones.
T0 = datetime(2026, 3, 28, 18, 0, tzinfo=UTC)
HOURS = 14


@dataclass(frozen=True)
class Row:
    sensor_id: str
    site_name: str
    start_time: datetime
    day: date
    laeq_db: float | None
    sample_count: int | None
    ok: bool
    lon: float | None
    lat: float | None


def make_rows() -> list[Row]:
    rows = []
    for n, (sensor, (site, north)) in enumerate(SENSORS.items()):
        for hour in range(HOURS):
            start = T0 + timedelta(hours=hour)
            level = (
                None if (hour + n) % 7 == 3 else round(40 + ((hour * 7 + n * 13) % 31) + 0.25, 2)
            )
            rows.append(
                Row(
                    sensor_id=sensor,
                    site_name=site,
                    start_time=start,
                    day=(start + timedelta(days=n)).date(),
                    laeq_db=level,
                    sample_count=None if hour == 5 else 60 - (hour + n) % 4,
                    ok=(hour + n) % 3 != 0,
                    lon=None if north is None else CENTRE[0],
                    lat=None if north is None else CENTRE[1] + north / METRES_PER_DEGREE,
                )
            )
    return rows


ROWS = make_rows()


@dataclass(frozen=True)
class ScratchDatabase:
    admin_url: str
    #: Login of the role that can only read opendata.essai.
    api_url: str
    role: str


def _with_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def scratch_database(settings: Settings) -> Iterator[ScratchDatabase]:
    """Create the database, the view and the role; drop them all afterwards."""
    name = f"odsql_{uuid.uuid4().hex[:12]}"
    role = f"odsql_api_{uuid.uuid4().hex[:12]}"
    password = uuid.uuid4().hex
    admin_url = settings.database.url.get_secret_value()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    url = with_database(admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            _fill(conn, role)
        yield ScratchDatabase(url, _with_login(url, role, password), role)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _fill(conn: psycopg.Connection[Any], role: str) -> None:
    conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    conn.execute(
        """
        CREATE TABLE readings (
            sensor_id text, site_name text, start_time timestamptz, day date,
            laeq_db double precision, sample_count integer, ok boolean,
            lon double precision, lat double precision, owner_email text
        )
        """
    )
    conn.execute("CREATE TABLE sensors (id text, api_key text)")
    conn.execute("INSERT INTO sensors VALUES ('s1', 'secret-key')")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'a@example.org')",
            [
                (
                    r.sensor_id,
                    r.site_name,
                    r.start_time,
                    r.day,
                    r.laeq_db,
                    r.sample_count,
                    r.ok,
                    r.lon,
                    r.lat,
                )
                for r in ROWS
            ],
        )
    conn.execute("CREATE SCHEMA opendata")
    conn.execute(
        """
        CREATE VIEW opendata.essai AS
        SELECT sensor_id, site_name, start_time, day, laeq_db, sample_count, ok,
               CASE WHEN lon IS NULL THEN NULL
                    ELSE jsonb_build_object('lon', lon, 'lat', lat) END AS geo_point_2d,
               owner_email AS _owner_email
        FROM readings
        """
    )
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA opendata TO {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("GRANT SELECT ON opendata.essai TO {}").format(sql.Identifier(role)))
