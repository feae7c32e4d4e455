"""The PNG beside BENCHMARKS.md and the soak's: rate, lag and RSS over an end-to-end run.

Three panels sharing the time axis (seconds since the simulator started), from the samples of
:mod:`benchmarks.end_to_end`: each stage's rate in, each consumer group's lag, and each process's
resident memory. The drain (after the simulator stopped) is shaded. matplotlib's ``Agg`` backend:
no display needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_run"]


def _series(
    samples: Sequence[dict[str, Any]], field: str
) -> dict[str, tuple[list[float], list[float]]]:
    names = sorted({name for sample in samples for name in sample.get(field, {})})
    out: dict[str, tuple[list[float], list[float]]] = {}
    for name in names:
        times: list[float] = []
        values: list[float] = []
        for sample in samples:
            value = sample.get(field, {}).get(name)
            if value is not None:
                times.append(float(sample["t"]))
                values.append(float(value))
        if times:
            out[name] = (times, values)
    return out


def plot_run(samples: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Draw the three panels to ``path`` (PNG); returns it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (rate_ax, lag_ax, rss_ax) = plt.subplots(3, 1, sharex=True, figsize=(10, 9))
    try:
        panels = (
            (rate_ax, "rate", "messages/s in"),
            (lag_ax, "lag", "consumer lag (records)"),
            (rss_ax, "rss_mb", "RSS (MiB)"),
        )
        for axis, field, label in panels:
            for name, (times, values) in _series(samples, field).items():
                axis.plot(times, values, label=name, linewidth=1.2)
            axis.set_ylabel(label)
            axis.grid(True, alpha=0.3)
            if axis.get_legend_handles_labels()[0]:
                axis.legend(loc="upper left", fontsize="small", ncols=3)
        drain = [float(s["t"]) for s in samples if s.get("phase") == "drain"]
        load = [float(s["t"]) for s in samples if s.get("phase") == "load"]
        if drain and load:
            for axis in (rate_ax, lag_ax, rss_ax):
                axis.axvspan(max(load), max(drain), color="grey", alpha=0.15, linewidth=0)
        rss_ax.set_xlabel("seconds since the simulator started (shaded: drain)")
        figure.suptitle(title)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path
