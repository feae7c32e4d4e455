"""``citysense status``: a live terminal view of the running pipeline.

Rates per stage from the stages' ``/metrics``, consumer lag from Kafka and the database, dead
letters and late records, and each site's newest indicators from TimescaleDB
(:mod:`citysense.status._collect`), drawn with rich (:mod:`citysense.status._view`).
"""

from __future__ import annotations

import asyncio
import json

from rich.console import Console
from rich.live import Live

from citysense.settings import Settings
from citysense.status._collect import (
    Snapshot,
    collect,
    metrics_endpoints,
    scrape,
    snapshot_as_json,
)
from citysense.status._database import SiteIndicator, headline
from citysense.status._lag import GroupLag
from citysense.status._metrics import Scrape, StageRate, merge_scrapes, parse_metrics
from citysense.status._view import render, window_label

__all__ = [
    "GroupLag",
    "Scrape",
    "SiteIndicator",
    "Snapshot",
    "StageRate",
    "collect",
    "headline",
    "merge_scrapes",
    "metrics_endpoints",
    "parse_metrics",
    "render",
    "run_status",
    "scrape",
    "snapshot_as_json",
    "window_label",
]


async def run_status(
    settings: Settings,
    *,
    once: bool,
    interval_s: float,
    as_json: bool = False,
    console: Console | None = None,
) -> Snapshot:
    """Print one snapshot (``once``; as one JSON line with ``as_json``) or refresh the view
    every ``interval_s`` until cancelled (Ctrl-C); returns the last snapshot."""
    console = console or Console()
    snapshot, last = await collect(settings, None, interval_s)
    if as_json:
        print(json.dumps(snapshot_as_json(snapshot)), flush=True)
        return snapshot
    if once:
        console.print(render(snapshot))
        return snapshot
    with Live(render(snapshot), console=console, auto_refresh=False, screen=False) as live:
        while True:
            await asyncio.sleep(interval_s)
            snapshot, last = await collect(settings, last, interval_s)
            live.update(render(snapshot), refresh=True)
