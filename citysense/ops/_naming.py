"""Naming rules for the catalogue, after Prometheus's "Metric and label naming" page
(https://prometheus.io/docs/practices/naming/) and docs/architecture.md#observability.

Labels come from an allow-list: each entry's value set is bounded by the code or the registry
(kinds, reasons, topics, tables, routes, sites). A new label must be added here on purpose, which
is where a reviewer stops a ``sensor_id`` label that would make a series per sensor forever.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from citysense.ops._catalogue import MetricSpec

__all__ = ["BOUNDED_LABELS", "SUBSYSTEMS", "naming_violations"]

#: Label → why its values are bounded.
BOUNDED_LABELS = {
    "family": "MQTT topic family: chirpstack, tts, gateway, direct, other",
    "kind": "noise, air, traffic, occupancy",
    "reason": "dead-letter, late and retry reasons, constants in the code",
    "topic": "the city.* Kafka topics: 4 kinds x 2 + late + dead letters",
    "table": "the TimescaleDB tables",
    "stage": "aggregator stage: window, rollup",
    "window": "configured window sizes",
    "site": "registry sites (tens to hundreds per city)",
    "route": "the publication API's path templates, never the requested URL",
    "status": "HTTP status codes",
    "format": "export formats",
    "dataset": "published dataset ids: the catalogue (about ten)",
    "outcome": "push request outcomes (sinks/opendata/_push.py) and the grid stage's record and "
    "cell outcomes (streams/_grid_stage.py), constants in the code",
}

#: The second word of every name: the stage or area that exports it.
SUBSYSTEMS = ("ingest", "aggregate", "sink", "publish", "fleet")

#: Non-base units (Prometheus: "use base units"): time in seconds, sizes in bytes.
_NON_BASE_UNIT = re.compile(
    r"_(ms|milliseconds|us|microseconds|minutes|hours|days|kb|kilobytes|mb|megabytes|percent)(_|$)"
)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def naming_violations(specs: Iterable[MetricSpec]) -> list[str]:
    """Every broken rule, as ``"<name>: <why>"``; empty when the catalogue is clean."""
    problems: list[str] = []
    for s in specs:
        parts = s.name.split("_")
        if not _NAME.match(s.name) or parts[0] != "citysense" or len(parts) < 3:
            problems.append(f"{s.name}: must be citysense_<subsystem>_<what>, lower snake case")
        elif parts[1] not in SUBSYSTEMS:
            problems.append(f"{s.name}: subsystem {parts[1]!r} is not one of {SUBSYSTEMS}")
        if s.type == "counter" and not s.name.endswith("_total"):
            problems.append(f"{s.name}: a counter's name ends in _total")
        if s.type != "counter" and s.name.endswith("_total"):
            problems.append(f"{s.name}: only counters end in _total")
        if re.search(r"_(count|sum|bucket|created)$", s.name):
            problems.append(f"{s.name}: suffix collides with a histogram's series")
        if _NON_BASE_UNIT.search(s.name):
            problems.append(f"{s.name}: not a base unit (use _seconds or _bytes)")
        if re.search(r"_(latency|duration|delay)(_|$)", s.name) and not s.name.endswith("_seconds"):
            problems.append(f"{s.name}: a time is measured in _seconds")
        problems.extend(
            f"{s.name}: label {label!r} is not in the bounded-label list"
            for label in s.labels
            if label not in BOUNDED_LABELS
        )
        if not s.help.strip():
            problems.append(f"{s.name}: no help text")
    return problems
