"""Scrapes of the stages' ``/metrics`` and the figures ``citysense status`` derives from them.

Pure functions on the Prometheus text exposition format (parsed with ``prometheus_client``'s own
parser, https://prometheus.io/docs/instrumenting/exposition_formats/): a scrape is the sum of each
sample name over its labels, and a rate is the increase of a counter between two scrapes divided
by the time between them, with a counter that went down (the process restarted) counted from 0,
as Prometheus' ``rate()`` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "STAGE_COUNTERS",
    "Scrape",
    "StageRate",
    "counter_rate",
    "merge_scrapes",
    "parse_metrics",
    "stage_rates",
    "sum_of",
]

#: What each stage's rate counts: (stage, counter of records in, counter of records out).
#: The names are the stages' own metrics (docs/metrics.md); a counter summed over its labels.
STAGE_COUNTERS: tuple[tuple[str, str, str | None], ...] = (
    (
        "ingest",
        "citysense_ingest_received_messages_total",
        "citysense_ingest_produced_records_total",
    ),
    (
        "aggregate",
        "citysense_aggregate_records_total",
        "citysense_aggregate_windows_emitted_total",
    ),
    ("sink", "citysense_sink_records_total", "citysense_sink_rows_written_total"),
    ("publish", "citysense_publish_requests_total", None),
)


@dataclass(frozen=True)
class Scrape:
    """One reading of one or more ``/metrics`` endpoints at ``at`` (monotonic seconds).

    ``totals`` maps each sample name to its sum over all label sets and endpoints; ``maxima``
    the largest value of each sample name (for gauges such as a watermark delay, where a sum
    over kinds means nothing); ``processes`` the endpoints that answered, each with its
    resident memory in bytes (None when the process does not report it); ``families`` the
    metric families declared, samples or not (a labelled counter has no sample until its first
    increment, yet its stage is running).
    """

    at: float
    totals: Mapping[str, float] = field(default_factory=dict)
    maxima: Mapping[str, float] = field(default_factory=dict)
    processes: Mapping[str, float | None] = field(default_factory=dict)
    families: frozenset[str] = frozenset()

    def total(self, name: str) -> float | None:
        """The summed sample; 0 for a declared family without samples yet; None when no
        endpoint declares it."""
        if name in self.totals:
            return self.totals[name]
        if name in self.families or name.removesuffix("_total") in self.families:
            return 0.0
        return None


@dataclass(frozen=True)
class StageRate:
    """A stage's throughput between two scrapes (per second), None when unknown."""

    stage: str
    running: bool
    rate_in: float | None
    rate_out: float | None
    total_in: float | None


def parse_metrics(text: str) -> tuple[dict[str, float], dict[str, float], set[str]]:
    """(sum, max) of every sample name of a Prometheus text exposition over its labels, and
    the names of the families it declares.

    NaN samples (a summary with no observation) are left out; a malformed exposition raises
    ``ValueError`` from the parser.
    """
    totals: dict[str, float] = {}
    maxima: dict[str, float] = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            value = float(sample.value)
            if math.isnan(value):
                continue
            totals[sample.name] = totals.get(sample.name, 0.0) + value
            maxima[sample.name] = max(maxima.get(sample.name, value), value)
    return totals, maxima, families


def merge_scrapes(at: float, expositions: Mapping[str, str]) -> Scrape:
    """One :class:`Scrape` from the text of several endpoints (name → exposition).

    Two endpoints served by one process (``citysense run`` exposes the publication API's
    metrics on its own port and on the API's) are counted once: an endpoint whose process
    started at the same instant (``process_start_time_seconds``) as one already counted is
    skipped, so a stage's rate is not doubled.
    """
    totals: dict[str, float] = {}
    maxima: dict[str, float] = {}
    processes: dict[str, float | None] = {}
    families: set[str] = set()
    seen_starts: set[float] = set()
    for name, text in expositions.items():
        endpoint_totals, endpoint_maxima, endpoint_families = parse_metrics(text)
        start = endpoint_totals.get("process_start_time_seconds")
        if start is not None:
            if start in seen_starts:
                continue
            seen_starts.add(start)
        processes[name] = endpoint_totals.get("process_resident_memory_bytes")
        families |= endpoint_families
        for key, value in endpoint_totals.items():
            totals[key] = totals.get(key, 0.0) + value
        for key, value in endpoint_maxima.items():
            maxima[key] = max(maxima.get(key, value), value)
    return Scrape(
        at=at, totals=totals, maxima=maxima, processes=processes, families=frozenset(families)
    )


def counter_rate(before: Scrape, after: Scrape, name: str) -> float | None:
    """Per-second increase of counter ``name`` from ``before`` to ``after``.

    None when ``after`` does not have it or no time passed. A counter absent before or lower
    than before (its process restarted) is counted from 0.
    """
    now = after.total(name)
    elapsed = after.at - before.at
    if now is None or elapsed <= 0:
        return None
    then = before.total(name)
    increase = now if then is None or now < then else now - then
    return increase / elapsed


def stage_rates(before: Scrape, after: Scrape) -> list[StageRate]:
    """Rates in and out of every stage of :data:`STAGE_COUNTERS`; a stage none of whose
    counters is exposed is not running (its process, or ``citysense run``, is not up)."""
    rates: list[StageRate] = []
    for stage, counter_in, counter_out in STAGE_COUNTERS:
        running = after.total(counter_in) is not None
        rates.append(
            StageRate(
                stage=stage,
                running=running,
                rate_in=counter_rate(before, after, counter_in) if running else None,
                rate_out=(
                    counter_rate(before, after, counter_out)
                    if running and counter_out is not None
                    else None
                ),
                total_in=after.total(counter_in),
            )
        )
    return rates


def sum_of(scrape: Scrape, names: Sequence[str]) -> float | None:
    """The sum of several summed samples; None when none is exposed."""
    values = [v for v in (scrape.total(n) for n in names) if v is not None]
    return math.fsum(values) if values else None
