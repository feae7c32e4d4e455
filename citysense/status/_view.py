"""The status view: a :class:`~citysense.status._collect.Snapshot` as rich tables.

Pure: a snapshot in, renderables out, so ``--once`` and the live view print the same thing and
tests can render to plain text.
"""

from __future__ import annotations

from datetime import datetime

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from citysense.status._collect import Snapshot
from citysense.status._database import headline

__all__ = ["render", "window_label"]

_MIB = 1024 * 1024


def window_label(seconds: int) -> str:
    """``60`` → ``1 min``, ``900`` → ``15 min``, ``3600`` → ``1 h``, ``86400`` → ``1 day``."""
    if seconds % 86_400 == 0:
        days = seconds // 86_400
        return f"{days} day" if days == 1 else f"{days} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}/s" if value < 100 else f"{value:,.0f}/s"


def _value(name: str, value: float) -> str:
    if name.endswith(("_count", "_band")) or name == "affluence":
        return f"{value:.0f}"
    return f"{value:.1f}"


def _clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S")


def _stages(snapshot: Snapshot) -> Table:
    table = Table(title="Stages", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("stage", "state", "in", "out", "total in"):
        table.add_column(column, justify="left" if column in ("stage", "state") else "right")
    for stage in snapshot.stages:
        state = Text("running", style="green") if stage.running else Text("down", style="red")
        table.add_row(
            stage.stage,
            state,
            _rate(stage.rate_in),
            _rate(stage.rate_out),
            _number(stage.total_in),
        )
    return table


def _lags(snapshot: Snapshot) -> Table:
    table = Table(title="Kafka consumer lag", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("stage")
    table.add_column("group", overflow="fold")
    table.add_column("partitions", justify="right")
    table.add_column("lag (records)", justify="right")
    for lag in snapshot.lags:
        table.add_row(lag.stage, lag.group_id, str(lag.partitions), _number(lag.records))
    return table


def _health(snapshot: Snapshot) -> Table:
    table = Table(title="Losses and delays", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("now", justify="right")
    table.add_row("dead letters", _number(snapshot.dead_letters), _rate(snapshot.dead_letter_rate))
    table.add_row("late records", _number(snapshot.late_records), _rate(snapshot.late_rate))
    delay = snapshot.watermark_delay_s
    table.add_row("watermark delay", "-" if delay is None else f"{delay:,.1f} s", "")
    table.add_row("MQTT queued", _number(snapshot.mqtt_queued), "")
    for endpoint, rss in sorted(snapshot.processes.items()):
        table.add_row(f"RSS {endpoint}", "-" if rss is None else f"{rss / _MIB:,.0f} MiB", "")
    return table


def _sites(snapshot: Snapshot) -> Table:
    table = Table(title="Latest indicator per site", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("site", "kind", "window", "ends", "indicators"):
        table.add_column(column)
    for site in snapshot.sites:
        shown = "  ".join(
            f"{name}={_value(name, value)}" for name, value in headline(site.kind, site.indicators)
        )
        ends = _clock(site.bucket_end) + ("" if site.final else " (open)")
        table.add_row(site.site, site.kind, window_label(site.window_seconds), ends, shown)
    if not snapshot.sites:
        table.add_row("-", "", "", "", "no site window in the last day")
    return table


def render(snapshot: Snapshot) -> RenderableType:
    """The whole view: a header line, the tables, then any problem reaching a source."""
    header = Text(
        f"citysense status at {_clock(snapshot.taken_at)} "
        f"(rates over {snapshot.interval_s:.1f} s; Ctrl-C to quit)",
        style="bold",
    )
    parts: list[RenderableType] = [
        header,
        _stages(snapshot),
        _lags(snapshot),
        _health(snapshot),
        _sites(snapshot),
    ]
    parts.extend(Text(f"problem: {line}", style="red") for line in snapshot.problems)
    return Group(*parts)
