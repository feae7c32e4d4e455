"""What ``citysense status`` reads from TimescaleDB: the newest window result of every site and
the sink's stored Kafka offsets.

Site results are the aggregator's per-site rollups (keys ``site:<site id>``,
docs/architecture.md#windows-and-indicators) in the ``<kind>_aggregates`` tables (migration
0001). Per site and kind the shortest window is shown, its newest bucket of the last day: the
freshest figure the pipeline has for that place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from aiokafka import TopicPartition
from psycopg import sql

from decoders import KINDS

__all__ = ["SiteIndicator", "headline", "latest_site_indicators", "sink_positions"]

_SITE_PREFIX = "site:"

#: The indicators shown first for each kind (names from
#: docs/architecture.md#windows-and-indicators); any other indicator of the window follows in
#: name order, up to :data:`_SHOWN`.
_HEADLINES: dict[str, tuple[str, ...]] = {
    "noise": ("laeq_db", "lamax_db", "l90_db"),
    "air": ("eaqi_band", "pm2_5_ugm3_mean", "pm10_ugm3_mean", "no2_ugm3_mean"),
    "traffic": ("total_count", "pedestrian_count", "bicycle_count", "car_count"),
    "occupancy": ("people_mean", "occupancy_pct", "affluence"),
}
_SHOWN = 4


@dataclass(frozen=True)
class SiteIndicator:
    """The newest window result of one site for one kind."""

    site: str
    kind: str
    window_seconds: int
    bucket_end: datetime
    final: bool
    indicators: dict[str, float]


def headline(kind: str, indicators: dict[str, float]) -> list[tuple[str, float]]:
    """The few (name, value) pairs worth a glance: the kind's headline indicators present,
    then the others by name, at most four."""
    first = [name for name in _HEADLINES.get(kind, ()) if name in indicators]
    rest = sorted(name for name in indicators if name not in first)
    return [(name, indicators[name]) for name in (first + rest)[:_SHOWN]]


async def latest_site_indicators(conn: psycopg.AsyncConnection[Any]) -> list[SiteIndicator]:
    """Per site and kind, the newest bucket of the shortest window ending in the last day.

    The ``DISTINCT ON (key)`` order follows the tables' primary key (key, window_seconds,
    bucket), so each site costs an index descent, however long the history.
    """
    found: list[SiteIndicator] = []
    for kind in KINDS:
        query = sql.SQL(
            "SELECT DISTINCT ON (key) key, window_seconds, bucket_end, final, indicators "
            "FROM {table} WHERE key LIKE %s AND bucket_end > now() - INTERVAL '1 day' "
            "ORDER BY key, window_seconds, bucket DESC"
        ).format(table=sql.Identifier(f"{kind}_aggregates"))
        rows = await (await conn.execute(query, (_SITE_PREFIX + "%",))).fetchall()
        for key, window_seconds, bucket_end, final, indicators in rows:
            found.append(
                SiteIndicator(
                    site=str(key).removeprefix(_SITE_PREFIX),
                    kind=kind,
                    window_seconds=int(window_seconds),
                    bucket_end=bucket_end,
                    final=bool(final),
                    indicators={
                        str(k): float(v)
                        for k, v in (indicators or {}).items()
                        if isinstance(v, int | float)
                    },
                )
            )
    found.sort(key=lambda s: (s.site, s.kind))
    return found


async def sink_positions(
    conn: psycopg.AsyncConnection[Any], group_id: str
) -> dict[TopicPartition, int]:
    """The next offset the sink will read per partition, as stored with its rows."""
    rows = await (
        await conn.execute(
            'SELECT topic, "partition", next_offset FROM consumer_offsets WHERE group_id = %s',
            (group_id,),
        )
    ).fetchall()
    return {TopicPartition(str(t), int(p)): int(o) for t, p, o in rows}
