"""Run the benchmarks: ``python -m benchmarks [NAME ...]``, ``python -m benchmarks --list``.

Every module ``benchmarks/<name>.py`` not starting with ``_`` that defines ``main()`` is a
benchmark; they run in name order (or in the order given). Each prints its own table; a failing
one is reported with its traceback and the others still run. All results go to
``bench-results/<UTC timestamp>.json`` and a summary ends the output. A run of every benchmark
(no NAME given), or ``--markdown``, also rewrites ``BENCHMARKS.md`` and its plot
(:mod:`benchmarks.report`): a partial run never replaces the page of a full one by accident.
Exit status 1 if any benchmark failed, 2 for an unknown name.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import table

PACKAGE_DIR = Path(__file__).resolve().parent
RESULTS_DIR = PACKAGE_DIR.parent / "bench-results"


@dataclass(frozen=True)
class Benchmark:
    name: str
    path: Path
    description: str


def discover() -> list[Benchmark]:
    """Benchmark modules by name, found by reading (not importing) ``benchmarks/*.py``."""
    found: list[Benchmark] = []
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        try:
            tree = ast.parse(path.read_text(), str(path))
        except (OSError, SyntaxError, ValueError):
            # Listed anyway: running it reports the error as that benchmark's failure.
            found.append(Benchmark(path.stem, path, "(cannot be parsed)"))
            continue
        has_main = any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "main"
            for node in tree.body
        )
        if not has_main:
            continue
        doc = (ast.get_docstring(tree) or "").strip().splitlines()
        found.append(Benchmark(path.stem, path, doc[0] if doc else ""))
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _host() -> dict[str, Any]:
    import psutil

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": psutil.virtual_memory().total,
    }


def run_one(benchmark: Benchmark) -> dict[str, Any]:
    """Import and run one benchmark; never raises except on KeyboardInterrupt."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    entry: dict[str, Any] = {"status": "failed"}
    try:
        module = importlib.import_module(f"benchmarks.{benchmark.name}")
        result = module.main()
        if not isinstance(result, dict):
            raise TypeError(f"main() returned {type(result).__name__}, expected a dict")
        entry = {"status": "ok", "result": result}
    except Exception:
        entry["error"] = traceback.format_exc()
        print(f"\n{benchmark.name} FAILED:\n{entry['error']}", file=sys.stderr, flush=True)
    entry["seconds"] = round(time.perf_counter() - started, 2)
    # Other work on the machine skews every figure: keep the 1-minute load average with them.
    entry["load_before"] = round(load, 2)
    entry["load_after"] = round(os.getloadavg()[0], 2)
    return entry


def _summary_rows(results: dict[str, dict[str, Any]]) -> list[list[object]]:
    rows: list[list[object]] = []
    for name, entry in results.items():
        result = entry.get("result") or {}
        target = result.get("target_met")
        verdict = "-" if target is None else ("PASS" if target else "FAIL")
        if entry["status"] == "ok":
            line = str(result.get("summary", ""))
        else:
            lines = str(entry.get("error", "")).strip().splitlines()
            line = lines[-1] if lines else ""
        rows.append([name, entry["status"].upper(), float(entry["seconds"]), verdict, line])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Run citysense's benchmarks."
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="rewrite BENCHMARKS.md even when only some benchmarks run",
    )
    args = parser.parse_args(argv)

    available = discover()
    if args.list:
        width = max((len(b.name) for b in available), default=0)
        for benchmark in available:
            print(f"{benchmark.name.ljust(width)}  {benchmark.description}")
        return 0
    by_name = {b.name: b for b in available}
    unknown = [name for name in args.names if name not in by_name]
    if unknown:
        known = ", ".join(by_name) or "none"
        print(f"unknown benchmark(s): {', '.join(unknown)} (known: {known})", file=sys.stderr)
        return 2
    selected = [by_name[name] for name in args.names] if args.names else available
    if not selected:
        print("no benchmarks found", file=sys.stderr)
        return 1

    started_at = datetime.now(UTC)
    results: dict[str, dict[str, Any]] = {}
    interrupted = False
    for benchmark in selected:
        print(f"\n=== {benchmark.name}: {benchmark.description}", flush=True)
        try:
            results[benchmark.name] = run_one(benchmark)
        except KeyboardInterrupt:
            results[benchmark.name] = {"status": "failed", "error": "interrupted", "seconds": 0.0}
            interrupted = True
            break

    document = {
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "host": _host(),
        "benchmarks": results,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")

    print()
    print(
        table(
            ["benchmark", "status", "seconds", "target", "summary"],
            _summary_rows(results),
            title="=== summary",
        )
    )
    print(f"\nresults: {out}")
    if (not args.names or args.markdown) and not interrupted:
        from benchmarks.report import write_report

        page = write_report(document, f"bench-results/{out.name}")
        print(f"report: {page.name} (with its plot when the end-to-end run has samples)")
    failed = [name for name, entry in results.items() if entry["status"] != "ok"]
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
