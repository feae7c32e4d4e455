"""Publication API: records latency under 200 concurrent clients, export rows/s against COPY.

Starts its own embedded stack in a temporary directory, migrates a fresh database, syncs the
``nation`` registry and writes a year of hourly noise windows for its sound meters the way the
sink does (Avro ``Aggregate`` records through the sink's writer). Then ``citysense publish`` runs
as its own process (as in production; the rate limit raised out of the way) and this process
measures, with aiohttp clients:

- ``records``: 200 clients, each sending ``/records`` requests back to back for a fixed time
  (a mix of the newest page, a ``where`` on a sensor and an hour range, and a ``group_by``
  with ``avg``), latency p50/p99 and requests/s; the same three SQL statements run directly
  with psycopg, one client, give the database's own time (the floor): their median, and per
  query the SQL the API itself compiles for it (the mean per sensor scans every row, where
  the two others read an index, so the median alone hides it); and the CPU seconds per
  request of the API process, of PostgreSQL (every server process) and of this load
  generator during the load;
- ``exports``: the whole dataset as CSV and as Parquet, rows/s from the first request byte to
  the last response byte, beside ``COPY (SELECT … FROM opendata.noise_hourly) TO STDOUT (FORMAT
  csv)`` of the same rows read by psycopg: the ceiling. Median of 3 runs each.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg

from benchmarks import table
from citysense.registry import load_registry, scenario_path
from citysense.settings import PublishSettings
from citysense.stack import Stack, free_port
from schemas import encode
from sinks.opendata import default_catalog
from sinks.opendata._query import RecordsRequest, build_records
from sinks.timescale import migrate
from sinks.timescale._registry import sync_registry
from sinks.timescale._writer import Rows, add_record, decode_record, write_rows

__all__ = ["main"]

CLIENTS = 200
DURATION_S = 15.0
HOURS = 24 * 365
RUNS = 3
RECORDS = "/api/explore/v2.1/catalog/datasets/bruit-horaire/records"
START = datetime(2025, 1, 1, tzinfo=UTC)


def _queries(sensors: list[str]) -> list[dict[str, str]]:
    mid = START + timedelta(hours=HOURS // 2)
    return [
        {"limit": "100"},
        {
            "where": f"sensor_id = \"{sensors[0]}\" and start_time >= date'{mid:%Y-%m-%d}' "
            f"and start_time < date'{mid + timedelta(days=7):%Y-%m-%d}'",
            "limit": "100",
        },
        {"select": "sensor_id, avg(laeq_db) as mean", "group_by": "sensor_id", "limit": "100"},
    ]


async def _fill(url: str) -> list[str]:
    registry = load_registry(scenario_path("nation"))
    sensors = sorted(s.id for s in registry.sensors.values() if s.kind == "noise")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
        await sync_registry(conn, registry)
        for sensor in sensors:
            rows = Rows()
            for h in range(HOURS):
                level = 45.0 + (h * 7 + len(sensor)) % 300 / 10
                record = {
                    "key": sensor,
                    "kind": "noise",
                    "window_start": START + timedelta(hours=h),
                    "window_end": START + timedelta(hours=h + 1),
                    "window_size_seconds": 3600,
                    "revision": 60,
                    "final": True,
                    "values": {"laeq_db": level, "lamax_db": level + 12.0, "l50_db": level - 2},
                    "sample_count": 60,
                    "counts": [],
                    "regions": [],
                }
                name, decoded = decode_record(encode("Aggregate", record))
                add_record(rows, name, decoded)
            async with conn.transaction():
                await write_rows(conn, rows.tables())
        # Planner statistics, as autovacuum gathers them on a live database.
        await conn.execute("ANALYZE")
    return sensors


def _start_api(url: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CITYSENSE_DATABASE_URL": url,
        "CITYSENSE_PUBLISH_PORT": str(port),
        "CITYSENSE_PUBLISH_RATE_LIMIT": "1000000/second",
        "CITYSENSE_PUBLISH_POOL_MAX": "16",
        "CITYSENSE_HTTP_PORT": str(free_port()),
        "CITYSENSE_STACK_DIR": str(workdir / "none"),
        "CITYSENSE_LOG_LEVEL": "WARNING",
    }
    citysense = Path(sys.executable).with_name("citysense")
    log = (workdir / "publish.log").open("wb")
    return subprocess.Popen([str(citysense), "publish"], env=env, stdout=log, stderr=log)


async def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"citysense publish exited with {process.returncode}")
            try:
                async with session.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("the API did not become ready")


async def _load(base: str, queries: list[dict[str, str]]) -> dict[str, Any]:
    latencies: list[float] = []
    by_kind: dict[int, list[float]] = {k: [] for k in range(len(queries))}
    errors = 0
    stop_at = time.monotonic() + DURATION_S
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(index: int) -> None:
            nonlocal errors
            i = index
            while time.monotonic() < stop_at:
                kind = i % len(queries)
                params = queries[kind]
                i += 1
                started = time.perf_counter()
                async with session.get(f"{base}{RECORDS}", params=params) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)
                by_kind[kind].append(time.perf_counter() - started)

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        # Per query: the newest page, a sensor's week, a year's mean per sensor (group_by).
        "p50_ms_by_query": [1000 * statistics.median(v) if v else None for v in by_kind.values()],
    }


async def _direct_sql(url: str, sensors: list[str]) -> float:
    """Median ms of the three record queries' SQL run directly (one connection)."""
    mid = START + timedelta(hours=HOURS // 2)
    statements: list[tuple[str, tuple[Any, ...]]] = [
        ("SELECT * FROM opendata.noise_hourly ORDER BY start_time DESC LIMIT 100", ()),
        (
            "SELECT * FROM opendata.noise_hourly WHERE sensor_id = %s AND start_time >= %s "
            "AND start_time < %s ORDER BY start_time DESC LIMIT 100",
            (sensors[0], mid, mid + timedelta(days=7)),
        ),
        ("SELECT sensor_id, avg(laeq_db) FROM opendata.noise_hourly GROUP BY sensor_id", ()),
    ]
    times: list[float] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(20):
            for query, params in statements:
                started = time.perf_counter()
                await (await conn.execute(query, params)).fetchall()
                times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


async def _compiled_sql_ms(url: str, queries: list[dict[str, str]]) -> list[float]:
    """Per records query, the median ms of the SQL the API compiles for it (the page, then the
    count when the API would run it), run directly on one connection."""
    dataset = default_catalog(PublishSettings()).get("bruit-horaire")
    medians: list[float] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for params in queries:
            request = RecordsRequest(
                select=params.get("select"),
                where=params.get("where"),
                group_by=params.get("group_by"),
                limit=int(params["limit"]),
            )
            compiled = build_records(dataset, request)
            times: list[float] = []
            for _ in range(10):
                started = time.perf_counter()
                rows = await (await conn.execute(compiled.query, compiled.params)).fetchall()
                # The API counts only a full page of a filtered query (it keeps an
                # unfiltered dataset's total a few seconds).
                if len(rows) >= compiled.limit and (request.where or request.group_by):
                    await conn.execute(compiled.count_query, compiled.count_params)
                times.append(time.perf_counter() - started)
            medians.append(1000 * statistics.median(times))
    return medians


def _cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


async def _postmaster(url: str) -> psutil.Process:
    """PostgreSQL's first process (every backend is its child), found from a live backend."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        return psutil.Process(psutil.Process(int(row[0])).ppid())


async def _export_rate(base: str, fmt: str, rows: int) -> float:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.perf_counter()
        async with session.get(
            f"{base}/api/explore/v2.1/catalog/datasets/bruit-horaire/exports/{fmt}"
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"{fmt} export answered {response.status}")
            async for _chunk in response.content.iter_chunked(1 << 16):
                pass
        return rows / (time.perf_counter() - started)


async def _copy_rate(url: str, rows: int) -> float:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        async with conn.cursor().copy(
            "COPY (SELECT * FROM opendata.noise_hourly) TO STDOUT (FORMAT csv, HEADER)"
        ) as copy:
            async for _data in copy:
                pass
        return rows / (time.perf_counter() - started)


async def _measure(url: str, workdir: Path) -> dict[str, Any]:
    sensors = await _fill(url)
    rows = len(sensors) * HOURS
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = _start_api(url, port, workdir)
    try:
        await _wait_ready(base, process)
        api = psutil.Process(process.pid)
        postmaster = await _postmaster(url)
        me = psutil.Process()

        def cpu() -> tuple[float, float, float]:
            server = [postmaster, *postmaster.children(recursive=True)]
            return _cpu_s([api]), _cpu_s(server), _cpu_s([me])

        before = cpu()
        records = await _load(base, _queries(sensors))
        after = cpu()
        records["cpu_ms_per_request"] = {
            name: 1000 * (b - a) / max(records["requests"], 1)
            for name, a, b in zip(("api", "postgres", "load_generator"), before, after, strict=True)
        }
        floor_ms = await _direct_sql(url, sensors)
        records["compiled_sql_ms_by_query"] = await _compiled_sql_ms(url, _queries(sensors))
        exports: dict[str, float] = {}
        for name in ("csv", "parquet", "copy_csv"):
            rates = []
            for _ in range(RUNS):
                if name == "copy_csv":
                    rates.append(await _copy_rate(url, rows))
                else:
                    rates.append(await _export_rate(base, name, rows))
            exports[name] = statistics.median(rates)
    finally:
        process.terminate()
        process.wait(30)
    return {
        "rows": rows,
        "clients": CLIENTS,
        "records": records,
        "direct_sql_median_ms": floor_ms,
        "exports_rows_per_s": exports,
    }


def _report(figures: dict[str, Any]) -> None:
    records = figures["records"]
    exports = figures["exports_rows_per_s"]
    print(
        table(
            ["measure", "value", "peer / ceiling", "ratio"],
            [
                [
                    "records p50",
                    f"{records['p50_ms']:.1f} ms",
                    f"direct SQL {figures['direct_sql_median_ms']:.1f} ms",
                    f"{records['p50_ms'] / figures['direct_sql_median_ms']:.1f}x",
                ],
                ["records p99", f"{records['p99_ms']:.1f} ms", "", ""],
                *[
                    [
                        f"  p50 {name}",
                        f"{ms:.1f} ms" if ms is not None else "-",
                        f"its SQL direct {floor:.1f} ms",
                        "",
                    ]
                    for name, ms, floor in zip(
                        ("newest page", "a sensor's week", "year mean per sensor"),
                        records["p50_ms_by_query"],
                        records["compiled_sql_ms_by_query"],
                        strict=True,
                    )
                ],
                [
                    "records CPU per request",
                    f"API {records['cpu_ms_per_request']['api']:.1f} ms",
                    f"PostgreSQL {records['cpu_ms_per_request']['postgres']:.1f} ms",
                    f"load gen. {records['cpu_ms_per_request']['load_generator']:.1f} ms",
                ],
                [
                    "records throughput",
                    f"{records['requests_per_s']:,.0f} req/s",
                    f"{records['errors']} errors / {records['requests']:,}",
                    "",
                ],
                [
                    "CSV export",
                    f"{exports['csv']:,.0f} rows/s",
                    f"COPY TO STDOUT {exports['copy_csv']:,.0f} rows/s",
                    f"{exports['csv'] / exports['copy_csv']:.2f}",
                ],
                [
                    "Parquet export",
                    f"{exports['parquet']:,.0f} rows/s",
                    f"COPY TO STDOUT {exports['copy_csv']:,.0f} rows/s",
                    f"{exports['parquet'] / exports['copy_csv']:.2f}",
                ],
            ],
            f"publication API, {figures['rows']:,} hourly noise rows, {figures['clients']} clients",
        )
    )


def main() -> dict[str, Any]:
    """Run the benchmark on a private stack; print a table and return the figures."""
    root = Path(tempfile.mkdtemp(prefix="citysense-bench-publish-"))
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
        admin = stack.env()["CITYSENSE_DATABASE_URL"]
        url = admin.rsplit("/", 1)[0] + "/bench"

        async def run() -> dict[str, Any]:
            async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
                await conn.execute("CREATE DATABASE bench")
            return await _measure(url, root)

        figures = asyncio.run(run())
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
    _report(figures)
    return figures


if __name__ == "__main__":
    main()
