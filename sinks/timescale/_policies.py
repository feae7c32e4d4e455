"""Retention and compression of the hypertables, from the ``[sink]`` settings.

TimescaleDB's policy jobs (``add_retention_policy``, ``add_compression_policy``) and compression
itself are Timescale-licence ("community") features; ``drop_chunks`` is in the Apache-2.0 part
(TimescaleDB documentation, "TimescaleDB editions"). So:

- licence ``timescale``: the extension's own background jobs retain and compress;
- licence ``apache``: no compression (logged once), and the sink runs ``drop_chunks`` itself on a
  schedule (:func:`drop_old_chunks`).

Compression applies to the raw tables only: aggregates are small and receive late revisions,
which would have to rewrite compressed chunks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from sinks.timescale._settings import SinkSettings
from sinks.timescale._writer import (
    AGGREGATE_TABLES,
    MEASUREMENT_TABLES,
    OCCUPANCY_REGIONS,
    TRAFFIC_COUNTS,
)

__all__ = ["RAW_TABLES", "PolicyReport", "apply_policies", "drop_old_chunks", "licence"]

log = logging.getLogger("citysense.sink.timescale")

RAW_TABLES: tuple[str, ...] = (
    *(t.name for t in MEASUREMENT_TABLES.values()),
    TRAFFIC_COUNTS.name,
    OCCUPANCY_REGIONS.name,
)
AGGREGATE_TABLE_NAMES: tuple[str, ...] = tuple(t.name for t in AGGREGATE_TABLES.values())
#: Compression layout per raw table: segment by sensor (queries filter on it), newest first.
_SEGMENT_BY = {name: "sensor_id" for name in RAW_TABLES}


@dataclass(frozen=True, slots=True)
class PolicyReport:
    licence: str
    #: True when the extension's jobs handle retention; False: the sink calls drop_chunks.
    retention_by_jobs: bool
    compression: bool


async def licence(conn: psycopg.AsyncConnection[Any]) -> str:
    """``timescaledb.license``: ``apache`` or ``timescale``."""
    row = await (await conn.execute("SELECT current_setting('timescaledb.license')")).fetchone()
    return str(row[0]) if row else "apache"


def _days(days: int) -> sql.Composable:
    return sql.SQL("make_interval(days => {})").format(sql.Literal(days))


async def apply_policies(
    conn: psycopg.AsyncConnection[Any], settings: SinkSettings
) -> PolicyReport:
    """Make the policy jobs match ``settings`` (idempotent); ``conn`` must be autocommit."""
    edition = await licence(conn)
    if edition != "timescale":
        if settings.compress_after_days is not None:
            log.info(
                "compression needs the timescale licence; this TimescaleDB is %s-only", edition
            )
        return PolicyReport(edition, retention_by_jobs=False, compression=False)
    for table, days in [
        *((t, settings.raw_retention_days) for t in RAW_TABLES),
        *((t, settings.aggregate_retention_days) for t in AGGREGATE_TABLE_NAMES),
    ]:
        await conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (table,))
        if days is not None:
            await conn.execute(
                sql.SQL("SELECT add_retention_policy({}, {})").format(
                    sql.Literal(table), _days(days)
                )
            )
    for table in RAW_TABLES:
        await conn.execute("SELECT remove_compression_policy(%s, if_exists => true)", (table,))
        if settings.compress_after_days is None:
            continue
        await conn.execute(
            sql.SQL(
                "ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby = {}, "
                "timescaledb.compress_orderby = 'time DESC')"
            ).format(sql.Identifier(table), sql.Literal(_SEGMENT_BY[table]))
        )
        await conn.execute(
            sql.SQL("SELECT add_compression_policy({}, {})").format(
                sql.Literal(table), _days(settings.compress_after_days)
            )
        )
    return PolicyReport(
        edition, retention_by_jobs=True, compression=settings.compress_after_days is not None
    )


async def drop_old_chunks(conn: psycopg.AsyncConnection[Any], settings: SinkSettings) -> int:
    """Apache-licence retention: drop chunks older than the configured ages; returns how many."""
    dropped = 0
    for tables, days in (
        (RAW_TABLES, settings.raw_retention_days),
        (AGGREGATE_TABLE_NAMES, settings.aggregate_retention_days),
    ):
        if days is None:
            continue
        for table in tables:
            cursor = await conn.execute(
                sql.SQL("SELECT drop_chunks({}, older_than => {})").format(
                    sql.Literal(table), _days(days)
                )
            )
            dropped += len(await cursor.fetchall())
    return dropped
