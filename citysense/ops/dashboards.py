"""Grafana dashboards as code, built with Grafana's ``grafana-foundation-sdk`` (Grafana 11.6 types).

``python -m citysense.ops dashboards --write`` writes them to ``deploy/grafana/dashboards/``,
where Grafana's file provisioning (``deploy/grafana/provisioning/``) loads them. Three
dashboards: the pipeline (rate, errors, duration per stage; end-to-end latency; lag; dead letters
and late records by reason) and the sensor fleet from Prometheus, the city's indicators from
TimescaleDB through the PostgreSQL datasource. Datasources are referenced by the fixed uids the
provisioning file gives them.

The SDK has no builder for SQL datasource queries, so :class:`SqlQuery` is one, a
``Dataquery`` variant as the SDK's own plugins define them, with the fields of Grafana's
PostgreSQL query model (``rawSql``, ``format``, ``rawQuery``, ``editorMode``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery as PromQuery
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

__all__ = [
    "DASHBOARDS_DIR",
    "PROMETHEUS",
    "TIMESCALEDB",
    "SqlQuery",
    "build_dashboards",
    "expand_sql_macros",
    "load",
    "panels",
    "render_dashboards",
]

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="citysense-prometheus")
TIMESCALEDB = DataSourceRef(type_val="grafana-postgresql-datasource", uid="citysense-timescaledb")

_RATE = "$__rate_interval"


@dataclass
class SqlQuery(cogvariants.Dataquery):
    """A raw SQL query of Grafana's PostgreSQL datasource (Grafana's ``SQLQuery`` model)."""

    raw_sql: str
    format: Literal["time_series", "table"] = "time_series"
    ref_id: str = "A"

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": TIMESCALEDB.to_json(),
            "rawSql": self.raw_sql,
            "format": self.format,
            "rawQuery": True,
            "editorMode": "code",
        }


class _Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, raw_sql: str, fmt: Literal["time_series", "table"] = "time_series"):
        self._query = SqlQuery(" ".join(raw_sql.split()), fmt)

    def build(self) -> SqlQuery:
        return self._query


class _Ids:
    """Panel ids unique within a dashboard (Grafana keys panel state and links by them)."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self) -> int:
        self._next += 1
        return self._next


def _prom(expr: str, legend: str, ref: str = "A") -> PromQuery:
    return (
        PromQuery()
        .expr(" ".join(expr.split()))
        .legend_format(legend)
        .ref_id(ref)
        .datasource(PROMETHEUS)
    )


def _series(
    ids: _Ids, title: str, unit: str, *queries: tuple[str, str], description: str = ""
) -> timeseries.Panel:
    panel = timeseries.Panel().id(ids()).title(title).unit(unit).datasource(PROMETHEUS)
    if description:
        panel = panel.description(description)
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(_prom(expr, legend, ref))
    return panel


def _quantiles(metric: str, by: str = "") -> tuple[tuple[str, str], ...]:
    """p50 and p95 of a histogram, per ``by`` label if given."""
    group = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return tuple(
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{_RATE}])))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in (0.5, 0.95)
    )


def _pipeline() -> Dashboard:
    ids = _Ids()
    d = (
        Dashboard("citysense / pipeline")
        .uid("citysense-pipeline")
        .tags(["citysense"])
        .refresh("30s")
        .time("now-6h", "now")
        .description("Rate, errors and duration per stage; end-to-end latency; lag; losses.")
    )
    d = d.with_row(Row("Health").id(ids()))
    d = d.with_panel(
        stat.Panel()
        .id(ids())
        .title("Ready")
        .datasource(PROMETHEUS)
        .with_target(_prom("citysense_aggregate_ready", "aggregate {{instance}}", "A"))
        .with_target(_prom("citysense_sink_ready", "sink {{instance}}", "B"))
        .with_target(_prom("citysense_ingest_mqtt_connected", "ingest MQTT {{instance}}", "C"))
    )
    d = d.with_panel(
        _series(
            ids,
            "End-to-end latency (observed_at to committed row)",
            "s",
            *_quantiles("citysense_sink_end_to_end_latency_seconds", "kind"),
        )
    )
    d = d.with_row(Row("Ingest").id(ids()))
    d = d.with_panel(
        _series(
            ids,
            "Messages received and records produced",
            "ops",
            (
                f"sum by (family) (rate(citysense_ingest_received_messages_total[{_RATE}]))",
                "received {{family}}",
            ),
            (
                f"sum by (topic) (rate(citysense_ingest_produced_records_total[{_RATE}]))",
                "produced {{topic}}",
            ),
        )
    )
    d = d.with_panel(
        _series(
            ids,
            "Ingest latency (MQTT receive to Kafka ack) and decode time",
            "s",
            *_quantiles("citysense_ingest_latency_seconds"),
            *(
                (expr, f"decode {legend}")
                for expr, legend in _quantiles("citysense_ingest_decode_seconds")
            ),
        )
    )
    d = d.with_panel(
        _series(
            ids,
            "Ingest errors and backpressure",
            "short",
            (f"sum(rate(citysense_ingest_kafka_retries_total[{_RATE}]))", "Kafka retries/s"),
            (f"sum(rate(citysense_ingest_mqtt_reconnects_total[{_RATE}]))", "MQTT reconnects/s"),
            ("sum(citysense_ingest_inflight_messages)", "in flight"),
            ("max(citysense_ingest_broker_stored_messages)", "queued in Mosquitto"),
        )
    )
    d = d.with_row(Row("Aggregate").id(ids()))
    d = d.with_panel(
        _series(
            ids,
            "Records folded and windows emitted",
            "ops",
            (f"sum by (topic) (rate(citysense_aggregate_records_total[{_RATE}]))", "{{topic}}"),
            (
                f"sum by (kind, window) (rate(citysense_aggregate_windows_emitted_total[{_RATE}]))",
                "emitted {{kind}} {{window}}",
            ),
        )
    )
    d = d.with_panel(
        _series(
            ids,
            "Watermark delay and emit delay",
            "s",
            (
                "max by (stage, kind) (citysense_aggregate_watermark_delay_seconds)",
                "{{stage}} {{kind}}",
            ),
            *_quantiles("citysense_aggregate_emit_delay_seconds"),
        )
    )
    d = d.with_row(Row("Sink").id(ids()))
    d = d.with_panel(
        _series(
            ids,
            "Rows written",
            "rowsps",
            (f"sum by (table) (rate(citysense_sink_rows_written_total[{_RATE}]))", "{{table}}"),
        )
    )
    d = d.with_panel(
        _series(
            ids,
            "Batch and commit duration",
            "s",
            *_quantiles("citysense_sink_batch_duration_seconds"),
            *(
                (expr, f"commit {legend}")
                for expr, legend in _quantiles("citysense_sink_commit_duration_seconds")
            ),
        )
    )
    d = d.with_panel(
        _series(
            ids,
            "Consumer lag",
            "short",
            ("sum by (topic) (citysense_sink_consumer_lag_records)", "sink {{topic}}"),
            (
                "sum by (stage, topic) (citysense_aggregate_consumer_lag_records)",
                "aggregate {{stage}} {{topic}}",
            ),
        )
    )
    d = d.with_panel(
        _series(
            ids,
            "Database retries",
            "short",
            (f"sum by (reason) (rate(citysense_sink_retries_total[{_RATE}]))", "{{reason}}"),
        )
    )
    d = d.with_row(Row("Losses: dead letters and late records").id(ids()))
    d = d.with_panel(
        _series(
            ids,
            "Dead letters by stage and reason",
            "short",
            (
                f"sum by (reason) (rate(citysense_ingest_dead_letters_total[{_RATE}]))",
                "ingest {{reason}}",
            ),
            (
                f"sum by (reason) (rate(citysense_aggregate_dead_letters_total[{_RATE}]))",
                "aggregate {{reason}}",
            ),
            (
                f"sum by (reason) (rate(citysense_sink_dead_letters_total[{_RATE}]))",
                "sink {{reason}}",
            ),
        )
    )
    return d.with_panel(
        _series(
            ids,
            "Late records by kind and reason",
            "short",
            (
                f"sum by (kind, reason) (rate(citysense_aggregate_late_records_total[{_RATE}]))",
                "{{kind}} {{reason}}",
            ),
        )
    )


def _fleet() -> Dashboard:
    ids = _Ids()
    d = (
        Dashboard("citysense / sensor fleet")
        .uid("citysense-fleet")
        .tags(["citysense"])
        .refresh("1m")
        .time("now-24h", "now")
        .description("Silent and low-battery sensors per kind and site; radio quality.")
    )
    d = d.with_panel(
        bargauge.Panel()
        .id(ids())
        .title("Silent share per kind and site")
        .unit("percentunit")
        .min(0)
        .max(1)
        .datasource(PROMETHEUS)
        .with_target(
            _prom(
                "sum by (kind, site) (citysense_fleet_silent_sensors)"
                " / sum by (kind, site) (citysense_fleet_sensors)",
                "{{site}} {{kind}}",
            )
        )
    )
    d = d.with_panel(
        _series(
            ids,
            "Silent and low-battery sensors",
            "short",
            ("sum by (kind) (citysense_fleet_silent_sensors)", "silent {{kind}}"),
            ("sum by (kind) (citysense_fleet_low_battery_sensors)", "low battery {{kind}}"),
        )
    )
    d = d.with_panel(
        _series(
            ids, "RSSI at the best gateway", "dBm", *_quantiles("citysense_fleet_rssi_dbm", "kind")
        )
    )
    d = d.with_panel(
        _series(ids, "SNR at the best gateway", "dB", *_quantiles("citysense_fleet_snr_db", "kind"))
    )
    return d.with_panel(
        table.Panel()
        .id(ids())
        .title("Sensors by last message (TimescaleDB)")
        .datasource(TIMESCALEDB)
        .with_target(
            _Sql(
                """
                SELECT s.id AS sensor, s.kind, s.site, l.last_seen,
                       now() - l.last_seen AS silent_for
                FROM sensors s
                LEFT JOIN (
                    SELECT sensor_id, max(time) AS last_seen FROM noise_latest GROUP BY 1
                    UNION ALL SELECT sensor_id, max(time) FROM air_latest GROUP BY 1
                    UNION ALL SELECT sensor_id, max(time) FROM traffic_latest GROUP BY 1
                    UNION ALL SELECT sensor_id, max(time) FROM occupancy_latest GROUP BY 1
                ) l ON l.sensor_id = s.id
                ORDER BY l.last_seen ASC NULLS FIRST
                LIMIT 200
                """,
                "table",
            )
        )
    )


def _indicator(column: str, table_name: str, window_s: int, cast: str = "float") -> str:
    """Per-site series of one indicator from an aggregates table, for the time range shown."""
    # Built from this module's constants only; Grafana sends it as it is.
    return f"""
        SELECT bucket AS time, substr(key, 6) AS metric,
               (indicators->>'{column}')::{cast} AS value
        FROM {table_name}
        WHERE window_seconds = {window_s} AND key LIKE 'site:%'
          AND indicators ? '{column}' AND $__timeFilter(bucket)
        ORDER BY 1, 2
    """  # noqa: S608


def _city() -> Dashboard:
    ids = _Ids()
    d = (
        Dashboard("citysense / city indicators")
        .uid("citysense-city")
        .tags(["citysense"])
        .refresh("5m")
        .time("now-7d", "now")
        .description("Indicators per site from TimescaleDB (the aggregates the sink writes).")
    )

    def sql_series(title: str, unit: str, sql: str) -> timeseries.Panel:
        return (
            timeseries.Panel()
            .id(ids())
            .title(title)
            .unit(unit)
            .datasource(TIMESCALEDB)
            .with_target(_Sql(sql))
        )

    d = d.with_row(Row("Noise").id(ids()))
    d = d.with_panel(
        sql_series("LAeq per site, hourly", "dB", _indicator("laeq_db", "noise_aggregates", 3600))
    )
    d = d.with_panel(
        sql_series("Lden per site, daily", "dB", _indicator("lden_db", "noise_aggregates", 86400))
    )
    d = d.with_row(Row("Air").id(ids()))
    d = d.with_panel(
        sql_series(
            "European Air Quality Index band per site, hourly (1 good .. 6 extremely poor)",
            "short",
            _indicator("eaqi_band", "air_aggregates", 3600),
        )
    )
    d = d.with_panel(
        sql_series(
            "PM2.5 per site, hourly mean",
            "conμgm3",
            _indicator("pm2_5_ugm3_mean", "air_aggregates", 3600),
        )
    )
    d = d.with_row(Row("Mobility").id(ids()))
    d = d.with_panel(
        sql_series(
            "Counts per mode, hourly, all sites",
            "short",
            """
            SELECT a.bucket AS time, c->>'traffic_class' AS metric,
                   sum((c->>'count')::bigint) AS value
            FROM traffic_aggregates a
            CROSS JOIN LATERAL jsonb_array_elements(coalesce(a.counts, '[]'::jsonb)) AS c
            WHERE a.window_seconds = 3600 AND a.key LIKE 'site:%' AND $__timeFilter(a.bucket)
            GROUP BY 1, 2
            ORDER BY 1, 2
            """,
        )
    )
    d = d.with_row(Row("Pools").id(ids()))
    d = d.with_panel(
        sql_series(
            "Pool occupancy, percent of capacity",
            "percent",
            _indicator("occupancy_pct", "occupancy_aggregates", 900),
        )
    )
    return d.with_panel(
        sql_series(
            "Pool affluence level (1 low)",
            "short",
            _indicator("affluence", "occupancy_aggregates", 900),
        )
    )


def build_dashboards() -> dict[str, Dashboard]:
    """Builders by file name."""
    return {
        "citysense-pipeline.json": _pipeline(),
        "citysense-fleet.json": _fleet(),
        "citysense-city.json": _city(),
    }


def render_dashboards() -> dict[str, str]:
    """The JSON files' text by file name (sorted keys, stable across runs)."""
    encoder = JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False)
    return {
        name: encoder.encode(builder.build()) + "\n" for name, builder in build_dashboards().items()
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard's JSON, rows' nested panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def load(name: str) -> dict[str, Any]:
    """A generated dashboard's JSON as written to ``deploy/grafana/dashboards/``."""
    loaded: dict[str, Any] = json.loads((DASHBOARDS_DIR / name).read_text())
    return loaded


def expand_sql_macros(sql: str, start: datetime, end: datetime) -> str:
    """``sql`` with the Grafana PostgreSQL macros these dashboards use expanded as Grafana does.

    ``$__timeFilter(col)`` becomes ``col BETWEEN '<start>' AND '<end>'`` (RFC 3339, UTC), as in
    Grafana's PostgreSQL datasource documentation ("Macros"); any other macro is an error, so a
    panel cannot use one that the tests do not expand.
    """

    def time_filter(match: re.Match[str]) -> str:
        column = match.group(1).strip()
        return f"{column} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"

    expanded = re.sub(r"\$__timeFilter\(([^)]+)\)", time_filter, sql)
    if "$__" in expanded or "${" in expanded:
        raise ValueError(f"unexpanded Grafana macro or variable in: {sql}")
    return expanded


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
