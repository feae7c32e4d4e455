"""Benchmarks: ``make bench`` (``python -m benchmarks [NAME ...]``), never part of ``make test``.

A benchmark is a module ``benchmarks/<name>.py`` (not starting with ``_``) with ``main() -> dict``.
``main`` prints its own table(s) while it runs and returns a JSON-serialisable dict of its
figures; the runner (:mod:`benchmarks.__main__`) stores every result in
``bench-results/<UTC timestamp>.json``. Optional keys the runner reads for its final summary:

- ``"summary"``: one line of text, the headline figure;
- ``"target_met"``: ``True`` / ``False`` against the benchmark's stated target (absent: none).

Figures are medians of repetitions, each next to a peer or ceiling measured in the same run on
the same machine, so a reader can tell a slow machine from a slow pipeline. Missing a target is a
result, not a failure: a benchmark *fails* only when it raises.

The helpers below are shared by the benchmark modules: :func:`table` formats plain-text tables,
:func:`median` and :func:`timed_median` take medians of repetitions.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = ["median", "settings_asked", "table", "timed_median"]


def settings_asked(environ: Mapping[str, str], prefix: str) -> dict[str, str]:
    """``<prefix><NAME>=<value>`` of ``environ`` as ``CITYSENSE_<NAME>=<value>``: the settings a
    benchmark run was asked to give the processes it starts, which otherwise get none of the
    caller's ``CITYSENSE_*`` variables (a run is the defaults unless asked)."""
    return {
        "CITYSENSE_" + name[len(prefix) :]: value
        for name, value in environ.items()
        if name.startswith(prefix) and len(name) > len(prefix)
    }


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (which must not be empty)."""
    return float(statistics.median(values))


def timed_median(run: Callable[[], object], repetitions: int = 5) -> tuple[float, list[float]]:
    """Call ``run`` ``repetitions`` times; return the median wall time in seconds and all times."""
    times: list[float] = []
    for _ in range(repetitions):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return median(times), times


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = "") -> str:
    """A plain-text table: first column left-aligned, the others right-aligned.

    Floats are shown with 2-3 significant decimals (thousands separated above 1000), ``None``
    as ``-``.
    """
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))

    def line(values: Sequence[str]) -> str:
        parts = [
            value.ljust(widths[i]) if i == 0 else value.rjust(widths[i])
            for i, value in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out.append(line(list(headers)))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(row) for row in cells)
    return "\n".join(out)
