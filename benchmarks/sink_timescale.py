"""TimescaleDB sink throughput: rows/s into TimescaleDB against ``psql \\copy`` as the ceiling.

Starts its own embedded stack in a temporary directory, migrates a fresh database and measures,
for raw noise measurements and for traffic counts, at batch sizes 1,000 and 10,000 Kafka records,
the median of 3 runs of:

- ``writer``: the sink's database write path on decoded records (row building, binary COPY
  straight into the table in a savepoint, falling back to a staging table and ``INSERT … SELECT
  … ON CONFLICT DO NOTHING`` on a duplicate, the offsets upsert, COMMIT);
- ``sink``: the same plus Avro single-object decoding of each record (for current noise records,
  transcoding to COPY tuples), i.e. everything the sink does per batch after Kafka has delivered
  it, one batch after the other;
- ``overlap``: ``sink`` as the service runs it: the next batch is decoded (in chunks, yielding
  to the event loop) while the database writes and commits the current one;
- ``psql \\copy``: the same rows from a CSV file straight into the hypertable (no staging, no
  conflict check, one transaction): the ceiling;
- ``end-to-end``: the real :class:`TimescaleSink` reading a Kafka topic (Tansu), from its first
  committed batch to its last, with the sink process's CPU time per row; for traffic one run; for
  noise, after one run left out (the process's first sink), ``_FAST_PATH_ORDER``: runs with the
  ``sink-copy`` fast path on and off (``CITYSENSE_LEAN``: the generic Avro decoder instead of the
  COPY transcoder) alternated, and the median of each mode: the figures that keep the fast path
  only while it makes the stage at least 15 % faster (docs/runtime.md#fast-paths). A run times
  nine batches, a second or two: one run per mode, on then off, gave -21 % on a quiet machine
  and +148 % on a loaded one, while the sink's CPU per row was about half with it on.

Noise rows are counted in ``noise_measurements``; traffic rows in ``traffic_counts`` (12 per
record; the 1 ``traffic_measurements`` row per record is written too but not counted).
"""

from __future__ import annotations

import asyncio
import csv
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from citysense.settings import DatabaseSettings, KafkaSettings, Settings
from citysense.stack import Stack, free_port
from sinks.timescale import SinkSettings, TimescaleSink, migrate
from sinks.timescale._metrics import ROWS_WRITTEN
from sinks.timescale._service import _DECODE_CHUNK
from sinks.timescale._writer import (
    PG_EPOCH_MICROS,
    TABLES,
    Rows,
    add_record,
    decode_record,
    row_values,
    store_offsets,
    write_rows,
)
from tests.sinks._helpers import framed, noise_record, produce, traffic_record

__all__ = ["main"]

_PG_EPOCH = datetime.fromtimestamp(PG_EPOCH_MICROS / 1e6, UTC)

NOISE_RECORDS = 100_000
TRAFFIC_RECORDS = 10_000  # x 12 count rows
BATCH_SIZES = (1_000, 10_000)
RUNS = 3
TARGET_ROWS_PER_S = 100_000
E2E_BATCH = {"noise": 10_000, "traffic": 1_000}
#: (label, decoding measured too, next batch decoded while the current one is written)
_PATHS = (("writer", False, False), ("sink", True, False), ("overlap", True, True))
#: The ``sink-copy`` comparison's end-to-end runs, alternated so that neither mode has the
#: machine's quieter moments or the later place in the run to itself.
_FAST_PATH_ORDER = ("on", "off", "off", "on", "on", "off")


def _dataset(kind: str) -> tuple[str, list[bytes]]:
    """(counted table, Kafka values) of one kind."""
    if kind == "noise":
        noise = (noise_record(f"noise-{i % 500}", i) for i in range(NOISE_RECORDS))
        return "noise_measurements", [v for _, v in framed("NoiseMeasurement", noise)]
    traffic = (traffic_record(f"traffic-{i % 50}", i) for i in range(TRAFFIC_RECORDS))
    return "traffic_counts", [v for _, v in framed("TrafficMeasurement", traffic)]


async def _truncate(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "TRUNCATE noise_measurements, traffic_measurements, traffic_counts, consumer_offsets"
        )
        await conn.execute("CHECKPOINT")


async def _write_batch(conn: psycopg.AsyncConnection[Any], rows: Rows, next_offset: int) -> None:
    await write_rows(conn, rows.tables())
    await store_offsets(conn, "bench", {("bench", 0): next_offset})
    await conn.commit()


async def _write_path(
    url: str, values: list[bytes], batch: int, decode_too: bool, overlap: bool = False
) -> float:
    """Seconds to write ``values`` in batches of ``batch`` records, one transaction each;
    ``overlap``: decoding the next batch while the current one is written, as the sink does."""
    decoded = None if decode_too else [decode_record(v) for v in values]
    async with await psycopg.AsyncConnection.connect(url) as conn:
        started = time.perf_counter()
        writing: asyncio.Task[None] | None = None
        for first in range(0, len(values), batch):
            rows = Rows()
            if decoded is None:
                for i, value in enumerate(values[first : first + batch], 1):
                    name, record = decode_record(value)
                    add_record(rows, name, record)
                    if overlap and not i % _DECODE_CHUNK:
                        await asyncio.sleep(0)  # as the sink yields between decoded chunks
            else:
                for name, record in decoded[first : first + batch]:
                    add_record(rows, name, record)
            if writing is not None:
                await writing
            writing = asyncio.create_task(_write_batch(conn, rows, first + batch))
            if not overlap:
                await writing
        if writing is not None:
            await writing
        return time.perf_counter() - started


def _write_csv(values: list[bytes], table: str, path: Path) -> int:
    rows = Rows()
    for value in values:
        name, record = decode_record(value)
        add_record(rows, name, record)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        lines = rows.tables()[table]
        times = [c.sql_type == "timestamptz" for c in TABLES[table].columns]
        for row in map(row_values, [table] * len(lines), lines):
            # jsonb values are in jsonb's binary format: a version byte, then the JSON text;
            # timestamps µs since 2000-01-01 UTC (see sinks.timescale._writer).
            writer.writerow(
                [
                    ""
                    if v is None
                    else _PG_EPOCH + timedelta(microseconds=v)
                    if is_time
                    else v[1:].decode()
                    if isinstance(v, bytes)
                    else v
                    for v, is_time in zip(row, times, strict=True)
                ]
            )
    return len(lines)


def _psql_copy(url: str, table: str, path: Path) -> float:
    columns = ", ".join(TABLES[table].column_names)
    started = time.perf_counter()
    subprocess.run(
        [
            "psql",
            url,
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            f"\\copy {table} ({columns}) FROM '{path}' CSV",
        ],
        check=True,
    )
    return time.perf_counter() - started


async def _count(url: str, table: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone()  # noqa: S608
        return int(row[0]) if row else 0


async def _end_to_end(
    settings: Settings, values: list[bytes], table: str, rows: int, batch: int
) -> tuple[float, float]:
    """Rows/s of the real sink consuming a Kafka topic, and this process's (the sink's) CPU µs
    per row meanwhile: less moved by what else runs on the machine than the rate."""
    start = _rows_written(table)
    topic = f"bench.{uuid.uuid4().hex[:8]}"
    await produce(settings, topic, [(b"k%d" % (i % 500), v) for i, v in enumerate(values)])
    sink = SinkSettings(
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        topics=(topic,),
        batch_max_records=batch,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        raw_retention_days=None,
    )
    async with TimescaleSink(settings, sink):
        # The sink's own counter, polled in-process: counting the table would compete with it.
        # Timed from the first committed batch to the last, so the group join is left out.
        while (first := _rows_written(table)) == start:  # noqa: ASYNC110  (polling on purpose)
            await asyncio.sleep(0.005)
        started, cpu = time.perf_counter(), time.process_time()
        while _rows_written(table) - start < rows:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        timed = rows - (first - start)
        return (
            timed / (time.perf_counter() - started),
            (time.process_time() - cpu) / timed * 1e6,
        )


def _rows_written(table: str) -> float:
    # The sink's own counter only: REGISTRY.get_sample_value() would run every collector,
    # the process collector's /proc reads included, on each poll, in the sink's event loop.
    for metric in ROWS_WRITTEN.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("table") == table:
                return sample.value
    return 0.0


async def _median_rate(
    url: str, table: str, rows: int, run: Callable[[], Awaitable[float]]
) -> float:
    """Median rows/s of ``RUNS`` runs of ``run`` (which returns seconds) on empty tables."""
    rates = []
    for _ in range(RUNS):
        await _truncate(url)
        seconds = await run()
        written = await _count(url, table)
        if written != rows:
            raise RuntimeError(f"{table}: {written} rows written, expected {rows}")
        rates.append(rows / seconds)
    return statistics.median(rates)


async def _measure(settings: Settings, url: str, workdir: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for kind in ("noise", "traffic"):
        table, values = _dataset(kind)
        csv_path = workdir / f"{kind}.csv"
        rows = _write_csv(values, table, csv_path)
        csv_path.chmod(0o644)

        def psql_copy(path: Path = csv_path, name: str = table) -> Awaitable[float]:
            return asyncio.to_thread(_psql_copy, url, name, path)

        ceiling = await _median_rate(url, table, rows, psql_copy)
        figures[f"{kind}.psql_copy_rows_per_s"] = ceiling
        for batch in BATCH_SIZES:
            for label, decode_too, overlap in _PATHS:

                def write(
                    data: list[bytes] = values,
                    size: int = batch,
                    full: bool = decode_too,
                    ahead: bool = overlap,
                ) -> Awaitable[float]:
                    return _write_path(url, data, size, full, ahead)

                rate = await _median_rate(url, table, rows, write)
                figures[f"{kind}.{label}.batch_{batch}.rows_per_s"] = rate
                figures[f"{kind}.{label}.batch_{batch}.of_ceiling"] = rate / ceiling
        # Ten batches either way, so the first one (left out of the timing) weighs the same.
        if kind == "noise":
            runs = await _fast_path_runs(settings, url, values, table, rows, E2E_BATCH[kind])
            for mode, measured in runs.items():
                rates = [rate for rate, _ in measured]
                figures[f"fast_paths.sink-copy.{mode}"] = statistics.median(rates)
                figures[f"fast_paths.sink-copy.{mode}_runs"] = rates
                figures[f"fast_paths.sink-copy.{mode}_cpu_us_per_row"] = statistics.median(
                    cpu for _, cpu in measured
                )
            rate = figures["fast_paths.sink-copy.on"]
            figures["fast_paths.sink-copy.gain"] = rate / figures["fast_paths.sink-copy.off"] - 1
        else:
            await _truncate(url)
            rate, _ = await _end_to_end(settings, values, table, rows, E2E_BATCH[kind])
        figures[f"{kind}.end_to_end.rows_per_s"] = rate
        figures[f"{kind}.end_to_end.of_ceiling"] = rate / ceiling
    return figures


async def _fast_path_runs(
    settings: Settings, url: str, values: list[bytes], table: str, rows: int, batch: int
) -> dict[str, list[tuple[float, float]]]:
    """End-to-end runs with ``sink-copy`` on and off, in ``_FAST_PATH_ORDER`` after one left
    out: (rows/s, CPU µs per row) of each, by mode."""
    lean = {"on": settings, "off": settings.model_copy(update={"lean": "0"})}
    runs: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    for index, mode in enumerate(("on", *_FAST_PATH_ORDER)):
        await _truncate(url)
        measured = await _end_to_end(lean[mode], values, table, rows, batch)
        if index:
            runs[mode].append(measured)
    return runs


def _report(figures: dict[str, Any]) -> None:
    print(
        f"TimescaleDB sink, median of {RUNS} runs (target >= {TARGET_ROWS_PER_S:,} rows/s and "
        ">= 50 % of psql \\copy)"
    )
    copy = "psql \\copy"
    print(f"{'data':<8} {'path':<11} {'batch':>7} {'rows/s':>10} {'of copy':>9}")
    for kind in ("noise", "traffic"):
        ceiling = figures[f"{kind}.psql_copy_rows_per_s"]
        print(f"{kind:<8} {copy:<11} {'-':>7} {ceiling:>10,.0f} {'100 %':>9}")
        for label, _, _ in _PATHS:
            for batch in BATCH_SIZES:
                rate = figures[f"{kind}.{label}.batch_{batch}.rows_per_s"]
                share = figures[f"{kind}.{label}.batch_{batch}.of_ceiling"]
                print(f"{kind:<8} {label:<11} {batch:>7,} {rate:>10,.0f} {share:>8.0%}")
        rate = figures[f"{kind}.end_to_end.rows_per_s"]
        batch = E2E_BATCH[kind]
        print(f"{kind:<8} {'end-to-end':<11} {batch:>7,} {rate:>10,.0f} {rate / ceiling:>8.0%}")
    on, off = figures["fast_paths.sink-copy.on"], figures["fast_paths.sink-copy.off"]
    runs = len(figures["fast_paths.sink-copy.on_runs"])
    print(
        f"fast path sink-copy (noise end-to-end, median of {runs} alternated runs each): "
        f"{on:,.0f} rows/s on, {off:,.0f} off "
        f"({figures['fast_paths.sink-copy.gain']:+.0%}; kept at >= +15 %); sink CPU "
        f"{figures['fast_paths.sink-copy.on_cpu_us_per_row']:.1f} µs per row on, "
        f"{figures['fast_paths.sink-copy.off_cpu_us_per_row']:.1f} off"
    )
    for mode in ("on", "off"):
        rates = ", ".join(f"{r:,.0f}" for r in figures[f"fast_paths.sink-copy.{mode}_runs"])
        print(f"  sink-copy {mode} runs, rows/s in run order: {rates}")


def main() -> dict[str, Any]:
    """Run the benchmark on a private stack; print a table and return the figures."""
    root = Path(tempfile.mkdtemp(prefix="citysense-bench-sink-"))
    root.chmod(0o755)  # PostgreSQL runs as the postgres user when we are root
    stack = Stack(
        root=root / "stack",
        mqtt_port=free_port(),
        kafka_port=free_port(),
        postgres_port=free_port(),
        prometheus_port=free_port(),
    )
    (root / "stack").mkdir()
    (root / "stack").chmod(0o755)
    try:
        stack.up()
        env = stack.env()
        admin = env["CITYSENSE_DATABASE_URL"]
        url = admin.rsplit("/", 1)[0] + "/bench"
        settings = Settings(
            kafka=KafkaSettings(bootstrap=env["CITYSENSE_KAFKA_BOOTSTRAP"], idempotence=False),
            database=DatabaseSettings(url=url),
        )

        async def run() -> dict[str, Any]:
            async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
                await conn.execute("CREATE DATABASE bench")
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await migrate(conn)
            return await _measure(settings, url, root)

        figures = asyncio.run(run())
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
    _report(figures)
    return figures


if __name__ == "__main__":
    main()
