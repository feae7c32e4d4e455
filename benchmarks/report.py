"""BENCHMARKS.md from one results document (``bench-results/<time>.json``).

``python -m benchmarks`` calls :func:`write_report` at the end of a full run; ``python -m
benchmarks.report bench-results/<time>.json`` rewrites the page from a stored document. The page
says on which machine and when, then for every benchmark each figure beside its ceiling, peer
or target measured or stated in the same run, with the ratio, so a slow machine is told apart
from a slow pipeline. The end-to-end run's samples become the PNG beside the page
(:mod:`benchmarks._plot`).

A benchmark may return its own ``"comparisons"`` (a list of ``{"figure", "value", "unit",
"versus", "versus_value"}``, as :mod:`benchmarks.end_to_end` does); for the others an adapter
here picks the figures out of the dict its ``main()`` returns. A figure an adapter cannot find
(an older or newer benchmark) is left out, never guessed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PLOT_NAME",
    "Comparison",
    "comparisons_of",
    "render_markdown",
    "write_report",
]

ROOT = Path(__file__).resolve().parents[1]
PLOT_NAME = "BENCHMARKS-end-to-end.png"


@dataclass(frozen=True)
class Comparison:
    """One figure beside what it is measured against."""

    figure: str
    value: float | None
    unit: str
    versus: str
    versus_value: float | None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.versus_value:
            return None
        return self.value / self.versus_value


def _get(data: Any, *path: str | int) -> Any:
    """``data[path[0]][path[1]]...``, or None where a step is missing."""
    for step in path:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


class _Rows:
    """Collects comparisons, skipping those whose figure is missing."""

    def __init__(self) -> None:
        self.rows: list[Comparison] = []

    def add(
        self,
        figure: str,
        value: Any,
        unit: str,
        versus: str,
        versus_value: Any = None,
        *,
        needs_reference: bool = False,
    ) -> None:
        number = _num(value)
        if number is None or (needs_reference and _num(versus_value) is None):
            return
        self.rows.append(Comparison(figure, number, unit, versus, _num(versus_value)))


def _decode_encode(result: Mapping[str, Any]) -> list[Comparison]:
    rows = _Rows()
    target = result.get("target_us")
    by_codec = result.get("by_codec") or {}
    mix = by_codec.get("nation mix") or {}
    rows.add(
        "nation mix: decode + Avro, CPU", _get(mix, "total", "cpu_us"), "µs/msg", "target", target
    )
    rows.add(
        "nation mix: decode + Avro, CPU",
        _get(mix, "total", "cpu_us"),
        "µs/msg",
        "orjson peer (same record to JSON)",
        _get(mix, "orjson", "cpu_us"),
    )
    rows.add(
        "nation mix: Avro encode alone",
        _get(mix, "avro", "cpu_us"),
        "µs/msg",
        "json peer",
        _get(mix, "json", "cpu_us"),
    )
    for name, figures in sorted(by_codec.items()):
        if name != "nation mix":
            rows.add(
                f"{name}: decode + Avro, CPU",
                _get(figures, "total", "cpu_us"),
                "µs/msg",
                "target",
                target,
            )
    rows.add(
        "ingest router, nation mix",
        _get(result, "nation_mix_ingest_router", "cpu_us"),
        "µs/msg",
        "decode + Avro alone",
        _get(mix, "total", "cpu_us"),
    )
    return rows.rows


def _simulator(result: Mapping[str, Any]) -> list[Comparison]:
    rows = _Rows()
    runs = result.get("runs") or []
    ceiling = next((r for r in runs if r.get("processes") is None), None)
    for run in runs:
        if run is ceiling:
            continue
        rows.add(
            f"{run.get('label')}: acknowledged",
            run.get("acked_per_s"),
            "msg/s",
            "C client mosquitto_pub (ceiling)",
            _get(ceiling, "acked_per_s"),
        )
    one = next((r for r in runs if r.get("processes") == 1), None)
    rows.add(
        "1 process: acknowledged",
        _get(one, "acked_per_s"),
        "msg/s",
        "target",
        result.get("target_msgs_per_s"),
    )
    return rows.rows


def _ingest(result: Mapping[str, Any]) -> list[Comparison]:
    rows = _Rows()
    ceiling = _get(result, "ceiling", "received_per_s")
    for run in result.get("throughput") or []:
        label = f"ingest x{run.get('processes')}: Kafka-acknowledged"
        rows.add(label, run.get("ingest_per_s"), "msg/s", "mosquitto_sub -q 1 (ceiling)", ceiling)
        rows.add(label, run.get("ingest_per_s"), "msg/s", "target", 20_000)
    rows.add(
        "backlog drain",
        _get(result, "backlog", "drain_per_s"),
        "msg/s",
        "mosquitto_sub -q 1 (ceiling)",
        ceiling,
    )
    latency = result.get("latency") or {}
    rate = latency.get("rate_per_s")
    rows.add(
        f"latency p50 at {rate or 0:,.0f} msg/s", latency.get("p50_ms"), "ms", "target p99", 250
    )
    rows.add(
        f"latency p99 at {rate or 0:,.0f} msg/s", latency.get("p99_ms"), "ms", "target p99", 250
    )
    for name, modes in sorted((result.get("fast_paths") or {}).items()):
        rows.add(
            f"fast path {name} on: backlog drain",
            _get(modes, "on"),
            "msg/s",
            f"{name} off, same backlog",
            _get(modes, "off"),
        )
    soak = result.get("soak") or {}
    rows.add(
        "soak RSS, last minute",
        soak.get("rss_last_minute_mb"),
        "MB",
        "minute 2",
        soak.get("rss_minute_2_mb"),
    )
    return rows.rows


def _sink_timescale(result: Mapping[str, Any]) -> list[Comparison]:
    rows = _Rows()
    for kind in ("noise", "traffic"):
        ceiling = result.get(f"{kind}.psql_copy_rows_per_s")
        for key in sorted(result):
            prefix = f"{kind}."
            if key.startswith(prefix) and key.endswith(".rows_per_s") and "psql_copy" not in key:
                label = key.removeprefix(prefix).removesuffix(".rows_per_s").replace(".", ", ")
                rows.add(
                    f"{kind}: {label}", result[key], "rows/s", "psql \\copy (ceiling)", ceiling
                )
        rows.add(
            f"{kind}: end-to-end",
            result.get(f"{kind}.end_to_end.rows_per_s"),
            "rows/s",
            "target",
            100_000,
        )
    copy_runs = len(result.get("fast_paths.sink-copy.on_runs") or [])
    rows.add(
        f"fast path sink-copy on: noise end-to-end (median of {copy_runs})",
        result.get("fast_paths.sink-copy.on"),
        "rows/s",
        "sink-copy off, alternated runs",
        result.get("fast_paths.sink-copy.off"),
    )
    rows.add(
        "sink CPU, sink-copy on",
        result.get("fast_paths.sink-copy.on_cpu_us_per_row"),
        "µs/row",
        "sink-copy off",
        result.get("fast_paths.sink-copy.off_cpu_us_per_row"),
    )
    return rows.rows


def _grid(result: Mapping[str, Any]) -> list[Comparison]:
    """Positioned (mobile, gridded) air records beside fixed-sensor ones, same count and batch."""
    rows = _Rows()
    for key, label in (
        ("aggregator_records_s", "window + grid stages"),
        ("window_stage_records_s", "window stage"),
        ("grid_stage_records_s", "grid stage"),
    ):
        rows.add(
            f"positioned records, {label}",
            _get(result, "positioned", key),
            "records/s",
            "fixed-sensor records, same stages",
            _get(result, "fixed", key),
        )
    return rows.rows


def _aggregate(result: Mapping[str, Any]) -> list[Comparison]:
    rows = _Rows()
    quix = _get(result, "quix", "records_per_s")
    for key, label in (
        ("citysense_1m", "1-min windows"),
        ("citysense_1m_sensor", "1-min windows, per sensor only (the peer's work)"),
        ("citysense_1h", "1-h windows"),
    ):
        rate = _get(result, key, "records_per_s")
        rows.add(
            f"citysense aggregate, {label}",
            rate,
            "records/s",
            "Quix Streams peer, 1-min, per sensor",
            quix,
        )
        rows.add(
            f"citysense aggregate, {label}: peak RSS",
            _get(result, key, "peak_rss_mb"),
            "MB",
            "Quix Streams peer",
            _get(result, "quix", "peak_rss_mb"),
        )
    rows.add(
        "citysense aggregate, 1-min windows",
        _get(result, "citysense_1m", "records_per_s"),
        "records/s",
        "target",
        200_000,
    )
    # Each consumer beside what its Kafka client alone reads of the same topic.
    rows.add(
        "citysense aggregate, 1-min windows",
        _get(result, "citysense_1m", "records_per_s"),
        "records/s",
        "aiokafka alone, read only (its client's ceiling)",
        _get(result, "read_aiokafka", "records_per_s"),
        needs_reference=True,
    )
    # What a free Kafka client would leave: the window stage's own work, in memory.
    rows.add(
        "citysense window stage alone, in memory (no Kafka), 1-min, per sensor",
        _get(result, "stage_in_memory", "records_per_s"),
        "records/s",
        "Quix Streams peer, 1-min, per sensor",
        quix,
        needs_reference=True,
    )
    rows.add(
        "Quix Streams peer, 1-min",
        quix,
        "records/s",
        "confluent-kafka alone, read only (its client's ceiling)",
        _get(result, "read_confluent_kafka", "records_per_s"),
        needs_reference=True,
    )
    paced = result.get("paced") or {}
    rows.add(
        "emit delay p50 (sensor windows)",
        paced.get("sensor.kafka_ts.p50_s"),
        "s",
        "window length",
        60,
    )
    return rows.rows


def _publish(result: Mapping[str, Any]) -> list[Comparison]:
    rows = _Rows()
    records = result.get("records") or {}
    floor = result.get("direct_sql_median_ms")
    rows.add("records p50", records.get("p50_ms"), "ms", "the same SQL, direct (floor)", floor)
    rows.add("records p99", records.get("p99_ms"), "ms", "the same SQL, direct (floor)", floor)
    rows.add(
        "records throughput",
        records.get("requests_per_s"),
        "req/s",
        f"{result.get('clients')} clients",
    )
    exports = result.get("exports_rows_per_s") or {}
    for name in ("csv", "parquet"):
        rows.add(
            f"{name.upper()} export",
            exports.get(name),
            "rows/s",
            "COPY TO STDOUT (ceiling)",
            exports.get("copy_csv"),
        )
    return rows.rows


_ADAPTERS: dict[str, Callable[[Mapping[str, Any]], list[Comparison]]] = {
    "decode_encode": _decode_encode,
    "simulator": _simulator,
    "ingest": _ingest,
    "sink_timescale": _sink_timescale,
    "aggregate": _aggregate,
    "publish": _publish,
    "grid": _grid,
}


def comparisons_of(name: str, result: Mapping[str, Any]) -> list[Comparison]:
    """The benchmark's own ``comparisons``, else its adapter's, else none."""
    own = result.get("comparisons")
    if isinstance(own, list):
        rows = _Rows()
        for item in own:
            if isinstance(item, Mapping):
                rows.add(
                    str(item.get("figure", "")),
                    item.get("value"),
                    str(item.get("unit", "")),
                    str(item.get("versus", "")),
                    item.get("versus_value"),
                )
        return rows.rows
    adapter = _ADAPTERS.get(name)
    return adapter(result) if adapter is not None else []


# --- markdown ---------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    """3 significant figures below 1,000, thousands separated above; ``-`` for None."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude == 0:
        return "0"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return lines


def _comparison_table(rows: Sequence[Comparison]) -> list[str]:
    return _table(
        ["figure", "value", "versus", "its value", "ratio"],
        [
            [
                c.figure,
                f"{fmt(c.value)} {c.unit}".strip(),
                c.versus,
                f"{fmt(c.versus_value)} {c.unit}".strip() if c.versus_value is not None else "-",
                "-" if c.ratio is None else f"{c.ratio:.2f}",
            ]
            for c in rows
        ],
    )


def _verdict(entry: Mapping[str, Any]) -> str:
    if entry.get("status") != "ok":
        return "failed"
    target = _get(entry, "result", "target_met")
    return "-" if target is None else ("met" if target else "not met")


def _gib(value: Any) -> str:
    number = _num(value)
    return "-" if number is None else f"{number / 1024**3:.1f} GiB"


def render_markdown(document: Mapping[str, Any], source: str, plot: str | None = PLOT_NAME) -> str:
    """The page for ``document``, read from ``source`` (named on the page); ``plot`` is the PNG
    shown in the end-to-end section when that benchmark has samples."""
    host = document.get("host") or {}
    results: Mapping[str, Any] = document.get("benchmarks") or {}
    out = [
        "# Benchmarks",
        "",
        f"<!-- Generated by `make bench` from {source}; rewrite with "
        f"`python -m benchmarks.report {source}`. Do not edit by hand. -->",
        "",
        "Every figure stands beside its ceiling, peer or target, measured (or stated) in the same "
        "run on the same machine; the ratio is figure / reference. Each benchmark's module "
        "docstring in `benchmarks/` says how it measures.",
        "",
        "## Machine and run",
        "",
        *_table(
            ["", ""],
            [
                ["started", str(document.get("started_at", "-"))],
                ["finished", str(document.get("finished_at", "-"))],
                ["CPU", f"{host.get('cpu_model', '-')}, {host.get('cpus', '-')} logical CPUs"],
                ["memory", _gib(host.get("memory_bytes"))],
                ["Python", str(host.get("python", "-"))],
                ["platform", str(host.get("platform", "-"))],
            ],
        ),
        "",
        "## Summary",
        "",
        *_table(
            ["benchmark", "target", "seconds", "load avg before → after", "headline"],
            [
                [
                    name,
                    _verdict(entry),
                    fmt(_num(entry.get("seconds"))),
                    f"{fmt(_num(entry.get('load_before')))} → {fmt(_num(entry.get('load_after')))}",
                    str(_get(entry, "result", "summary") or _last_line(entry.get("error"))),
                ]
                for name, entry in results.items()
            ],
        ),
    ]
    ordered = sorted(results, key=lambda name: (name != "end_to_end", name))
    for name in ordered:
        entry = results[name]
        out += ["", f"## {name}", ""]
        if entry.get("status") != "ok":
            out.append(f"Failed: `{_last_line(entry.get('error'))}`")
            continue
        result = entry.get("result") or {}
        rows = comparisons_of(name, result)
        if name == "end_to_end":
            out += _end_to_end_head(result, plot)
            rows += _beside_the_stages(result, results)
        out += _comparison_table(rows) if rows else ["(no comparable figures)"]
    return "\n".join(out) + "\n"


def _beside_the_stages(result: Mapping[str, Any], results: Mapping[str, Any]) -> list[Comparison]:
    """The end-to-end rate beside each stage's own capacity measured by its benchmark in the
    same run: how far the whole is from its slowest part."""
    rows = _Rows()
    sustained = result.get("sustained_per_s")
    ingest = max(
        (
            _num(r.get("ingest_per_s")) or 0.0
            for r in _get(results, "ingest", "result", "throughput") or []
        ),
        default=None,
    )
    rows.add(
        "sustained end to end",
        sustained,
        "msg/s",
        "ingest alone (its benchmark, best)",
        ingest or None,
        needs_reference=True,
    )
    rows.add(
        "sustained end to end",
        sustained,
        "msg/s",
        "aggregate alone, 1-min windows (its benchmark)",
        _get(results, "aggregate", "result", "citysense_1m", "records_per_s"),
        needs_reference=True,
    )
    rows.add(
        "sustained end to end",
        sustained,
        "msg/s",
        "sink alone, noise records from Kafka (its benchmark)",
        _get(results, "sink_timescale", "result", "noise.end_to_end.rows_per_s"),
        needs_reference=True,
    )
    return rows.rows


def _end_to_end_head(result: Mapping[str, Any], plot: str | None) -> list[str]:
    targets: Mapping[str, Any] = result.get("targets") or {}
    seconds = _num(result.get("duration_s")) or 0.0
    target_s = _num(result.get("target_seconds")) or 600.0
    length, target = (f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" for s in (seconds, target_s))
    sim = result.get("simulator") or {}
    span = (
        f"It lasted the issue's {target}."
        if seconds >= target_s
        else f"The issue's run lasts {target}; this one {length} "
        f"(`CITYSENSE_BENCH_E2E_SECONDS={target_s:.0f} make bench` for the full one)."
    )
    lines = [
        f"{result.get('summary', '')}.",
        "",
        f"The `nation` fleet repeated {result.get('fleet_copies', 1)} times at "
        f"{fmt(_num(result.get('rate_asked_per_s')))} msg/s asked for "
        f"{length} ({result.get('layout')} layout) on a private stack; "
        f"{fmt(_num(sim.get('sent')))} messages acknowledged by Mosquitto. {span} "
        "Zero loss: every message the broker acknowledged is a Kafka record (or a "
        "dead letter, for a malformed one), and every distinct (sensor, observed_at) among those "
        "records is a row in TimescaleDB; the module docstring of `benchmarks/end_to_end.py` "
        "says why a few records share one.",
        "",
        *_table(
            ["target", "met"],
            [
                [
                    f"≥ {fmt(_num(result.get('target_rate_per_s')) or 10_000.0)} msg/s "
                    "through every stage",
                    _yes(targets.get("rate")),
                ],
                ["for 10 minutes", _yes(targets.get("duration"))],
                ["zero loss", _yes(targets.get("zero_loss"))],
                ["p99 observed_at → row under 2 s", _yes(targets.get("p99"))],
                [
                    "flat memory (RSS of the last quarter ≤ 110 % of the second)",
                    _yes(targets.get("flat_memory")),
                ],
            ],
        ),
        "",
    ]
    light: Mapping[str, Any] = result.get("light") or {}
    if light:
        rate = fmt(_num(light.get("rate_asked_per_s")))
        lines += [
            f"A lighter run on a fresh stack, {rate} msg/s asked for "
            f"{fmt(_num(light.get('duration_s')))} s (not a target of the issue: it shows the "
            "pipeline's own latency when the cores are not all busy): p99 observed_at → row "
            f"under 2 s {_yes(light.get('p99_met'))}, zero loss {_yes(light.get('zero_loss'))}; "
            "its figures are the rows starting with its rate below.",
            "",
        ]
    peaks: Mapping[str, Any] = result.get("peak_rss_mb") or {}
    if peaks:
        lines += _table(
            ["process", "peak RSS"],
            [[name, f"{fmt(_num(mb))} MiB"] for name, mb in sorted(peaks.items())],
        )
        lines.append("")
    if plot and result.get("samples"):
        lines += [f"![rate, lag and RSS over the run]({plot})", ""]
    return lines


def _yes(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "**no**")


def _last_line(text: Any) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[-1] if lines else ""


def write_report(document: Mapping[str, Any], source: str, directory: Path = ROOT) -> Path:
    """Write BENCHMARKS.md (and its PNG when the end-to-end run has samples) in ``directory``."""
    samples = _get(document, "benchmarks", "end_to_end", "result", "samples")
    plot: str | None = None
    if samples:
        from benchmarks._plot import plot_run

        title = f"end to end, {document.get('started_at', '')}"
        plot_run(samples, directory / PLOT_NAME, title)
        plot = PLOT_NAME
    path = directory / "BENCHMARKS.md"
    path.write_text(render_markdown(document, source, plot))
    return path


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report", description="Write BENCHMARKS.md from a results file."
    )
    parser.add_argument("results", type=Path, help="bench-results/<time>.json")
    args = parser.parse_args(argv)
    try:
        document = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.results}: {exc}", file=sys.stderr)
        return 2
    source = f"bench-results/{args.results.name}"
    print(write_report(document, source))
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
