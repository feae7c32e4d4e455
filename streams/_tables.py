"""Open windows of one window definition and one kind, as rows of mergeable state in numpy columns.

Why columns: the aggregator folds hundreds of thousands of records per second in one Python
process. Per record it does no Python work at all: a polled batch (``streams._columns.Columns``)
is assigned to window rows with :func:`numpy.unique`, and each row's state is updated with
``bincount`` and ``ufunc.at`` over the whole batch. Python loops run once per distinct
(sensor, window) of a batch, and once per emitted window.

State is mergeable: sums, counts, minima, maxima, and, where an indicator is a quantile, a
histogram kept as a log of ``(row, bin, weight)`` entries that is reduced by addition when it
grows or a window is emitted. Nothing in a row depends on the order records arrived in, so a
window's result is the same whatever the shuffle (floating-point sums are rounded on output for
that reason, see :func:`_rounded`).

Per kind (docs/architecture.md#windows-and-indicators):

- noise: Σ tᵢ·10^(Lᵢ/10) and Σ tᵢ over records with an LAeq, or else a spot A-weighted level
  ``la_db`` (tᵢ = the sensor's reporting interval from the registry, the period its level
  stands for), the maximum of LAmax (LAFmax, LASmax, or the level itself when the device gives
  no maximum), the minimum likewise, and a 0.1 dB histogram of the levels weighted by tᵢ for
  L10/L50/L90;
- air: per canonical quantity, count, sum, minimum and maximum;
- traffic: period counts summed per (line, direction, class); cumulative counters are turned
  into period counts by the stage (:mod:`streams._stage`) and added here;
- occupancy: per record the people in all regions (sum and maximum), per region sum and maximum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from decoders import TRAFFIC_CLASSES
from streams import _indicators as ind
from streams._columns import AIR_QUANTITIES, Columns

__all__ = ["KEY_BITS", "KeyFacts", "Table", "WindowDef"]

#: Keys (sensor ids) are dense ints below 2**KEY_BITS; a row's code is window number << KEY_BITS
#: | key, one int64 per (sensor, window).
KEY_BITS: Final = 24
_KEY_MASK: Final = (1 << KEY_BITS) - 1
_MICROS: Final = 1_000_000
_DIRECTIONS: Final = ("in", "out")
#: Indices of the noise columns (``streams._columns.DOUBLE_FIELDS["noise"]``).
_LAEQ, _LAMAX, _LAMIN, _LAFMAX, _LASMAX, _LAFMIN, _LASMIN, _LA = range(8)
#: A histogram log longer than this many entries per live row is reduced by addition.
_LOG_ENTRIES_PER_ROW: Final = 64
Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WindowDef:
    """A tumbling window definition, in µs (from ``citysense.settings.WindowSettings``)."""

    name: str
    size_us: int
    grace_us: int
    lateness_us: int
    emit_updates: bool

    @property
    def size_s(self) -> int:
        return self.size_us // _MICROS


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What the registry says about every key index, as arrays indexed by key."""

    interval_s: FloatArray
    capacity: FloatArray  # NaN: unknown


def _rounded(value: float, digits: int) -> float:
    """``value`` to ``digits`` decimals. Why: sums of floats depend on the order they are added
    in, which depends on how records were batched; rounding well above that noise (1e-12
    relative) makes a window's result the same for any batching, so replays are byte-identical.
    Levels are published to 0.01 dB, concentrations and people to 1e-4."""
    return round(float(value), digits)


class _Log:
    """Append-only parallel int64/float64 arrays, concatenated lazily."""

    __slots__ = ("_chunks", "_width", "size")

    def __init__(self, width: int) -> None:
        self._width = width
        self._chunks: list[FloatArray] = []
        self.size = 0

    def append(self, columns: Sequence[npt.NDArray[Any]]) -> None:
        if len(columns[0]):
            self._chunks.append(np.column_stack([c.astype(np.float64) for c in columns]))
            self.size += len(columns[0])

    def array(self) -> FloatArray:
        if not self._chunks:
            return np.empty((0, self._width))
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]

    def replace(self, array: FloatArray) -> None:
        self._chunks = [array] if len(array) else []
        self.size = len(array)


class Table:
    """Rows of one window definition for one kind, keyed by (key index, window start)."""

    def __init__(self, kind: str, window: WindowDef, *, capacity: int = 1024) -> None:
        self.kind = kind
        self.window = window
        self.rows: dict[int, int] = {}
        #: Final emissions of windows emitted before (late records changed them), not yet
        #: counted in the metrics.
        self.revisions = 0
        self._free: list[int] = []
        self._capacity = 0
        self._quantities = AIR_QUANTITIES if kind == "air" else ()
        self._arrays: dict[str, npt.NDArray[Any]] = {}
        self._fills: dict[str, Any] = {}
        self._declare("key", np.int32, -1)
        self._declare("start", np.int64, 0)
        self._declare("partition", np.int32, -1)
        self._declare("min_offset", np.int64, np.iinfo(np.int64).max)
        self._declare("count", np.int64, 0)
        self._declare("emitted", np.bool_, False)
        self._declare("dirty", np.bool_, False)
        self._declare("live", np.bool_, False)
        if kind == "noise":
            self._declare("energy", np.float64, 0.0)
            self._declare("duration", np.float64, 0.0)
            self._declare("lmax", np.float64, -np.inf)
            self._declare("lmin", np.float64, np.inf)
            # (row, 0.1 dB bin, duration s)
            self.log = _Log(3)
        elif kind == "air":
            q = len(self._quantities)
            self._declare("q_count", np.int64, 0, q)
            self._declare("q_sum", np.float64, 0.0, q)
            self._declare("q_min", np.float64, np.inf, q)
            self._declare("q_max", np.float64, -np.inf, q)
            self.log = _Log(1)
        elif kind == "traffic":
            self._declare("resets", np.int64, 0)
            # (row, line, direction, class, count)
            self.log = _Log(5)
        else:
            self._declare("people_sum", np.float64, 0.0)
            self._declare("people_max", np.float64, -np.inf)
            # (row, region, count sum, count maximum)
            self.log = _Log(4)
        self._grow(capacity)

    # --- storage ---------------------------------------------------------------------------

    def _declare(self, name: str, dtype: Any, fill: Any, width: int = 0) -> None:
        shape: tuple[int, ...] = (0, width) if width else (0,)
        self._arrays[name] = np.empty(shape, dtype=dtype)
        self._fills[name] = fill

    def _grow(self, capacity: int) -> None:
        old = self._capacity
        for name, array in self._arrays.items():
            shape = (capacity, *array.shape[1:])
            grown = np.full(shape, self._fills[name], dtype=array.dtype)
            grown[:old] = array
            self._arrays[name] = grown
        self._free.extend(range(capacity - 1, old - 1, -1))
        self._capacity = capacity

    def __getattr__(self, name: str) -> npt.NDArray[Any]:
        try:
            return self.__dict__["_arrays"][name]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(name) from None

    def _rows_of(self, codes: list[int], partitions: Int64Array) -> Int64Array:
        """The rows of window ``codes``, new ones taken from the free list in order; a new
        row's partition is ``partitions[i]`` for ``codes[i]``.

        Why in one call: a 1-minute window definition opens a row for every few records, and
        setting a new row's columns one scalar at a time cost more than folding into it.
        """
        lookup = self.rows
        free = self._free
        found: list[int] = []
        new_codes: list[int] = []
        new_rows: list[int] = []
        new_positions: list[int] = []
        for position, code in enumerate(codes):
            row = lookup.get(code)
            if row is None:
                if not free:
                    self._grow(self._capacity * 2)
                row = lookup[code] = free.pop()
                new_codes.append(code)
                new_rows.append(row)
                new_positions.append(position)
            found.append(row)
        if new_rows:
            arrays = self._arrays
            made = np.asarray(new_rows, dtype=np.int64)
            made_codes = np.asarray(new_codes, dtype=np.int64)
            arrays["key"][made] = made_codes & _KEY_MASK
            arrays["start"][made] = (made_codes >> KEY_BITS) * self.window.size_us
            arrays["partition"][made] = partitions[new_positions]
            arrays["live"][made] = True
        return np.asarray(found, dtype=np.int64)

    def free(self, rows: npt.NDArray[np.int64]) -> None:
        """Forget ``rows`` (emitted for the last time, or their partition was revoked)."""
        if not len(rows):
            return
        size = self.window.size_us
        key, start = self._arrays["key"], self._arrays["start"]
        lookup = self.rows
        for code in ((start[rows] // size) << KEY_BITS | key[rows]).tolist():
            del lookup[code]
        for name, array in self._arrays.items():
            array[rows] = self._fills[name]
        self._free.extend(rows.tolist())
        gone = np.zeros(self._capacity, dtype=np.bool_)
        gone[rows] = True
        log = self.log.array()
        if len(log):
            self.log.replace(log[~gone[log[:, 0].astype(np.int64)]])

    # --- folding ----------------------------------------------------------------------------

    def fold(
        self,
        columns: Columns,
        selected: Int64Array,
        partitions: Int64Array,
        facts: KeyFacts,
    ) -> None:
        """Fold the records at ``selected`` (indices into ``columns``) into their windows;
        ``partitions``: each record's partition id (a new row takes its first record's)."""
        if not len(selected):
            return
        size = self.window.size_us
        keys = columns.key[selected].astype(np.int64)
        window_numbers = columns.time_us[selected] // size
        codes = (window_numbers << KEY_BITS) | keys
        unique, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        rows = self._rows_of(unique.tolist(), partitions[selected[first]])
        arrays = self._arrays
        groups = len(unique)
        arrays["count"][rows] += np.bincount(inverse, minlength=groups)
        first = np.full(groups, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, inverse, columns.offset[selected])
        arrays["min_offset"][rows] = np.minimum(arrays["min_offset"][rows], first)
        arrays["dirty"][rows] = True
        # Each record's row (-1: not folded here), for the per-entry logs of traffic/occupancy.
        record_rows = np.full(len(columns), -1, dtype=np.int64)
        record_rows[selected] = rows[inverse]
        folder = getattr(self, f"_fold_{self.kind}")
        folder(columns, selected, rows, inverse, record_rows, facts)

    def _fold_noise(
        self,
        columns: Columns,
        selected: Int64Array,
        rows: Int64Array,
        inverse: Int64Array,
        record_rows: Int64Array,
        facts: KeyFacts,
    ) -> None:
        values = columns.doubles[selected]
        # A device without LAeq may give a spot A-weighted level: a sample of the level over
        # its interval (the Browan TBSL100 does), energy-averaged like an LAeq.
        laeq = _first_present(values, (_LAEQ, _LA))
        duration = facts.interval_s[columns.key[selected]]
        has = ~np.isnan(laeq)
        groups = len(rows)
        arrays = self._arrays
        energy = np.where(has, duration * np.power(10.0, np.where(has, laeq, 0.0) / 10.0), 0.0)
        arrays["energy"][rows] += np.bincount(inverse, weights=energy, minlength=groups)
        arrays["duration"][rows] += np.bincount(
            inverse, weights=np.where(has, duration, 0.0), minlength=groups
        )
        high = _first_present(values, (_LAMAX, _LAFMAX, _LASMAX, _LAEQ, _LA))
        low = _first_present(values, (_LAMIN, _LAFMIN, _LASMIN, _LAEQ, _LA))
        local = np.full(groups, -np.inf)
        np.fmax.at(local, inverse, high)
        arrays["lmax"][rows] = np.fmax(arrays["lmax"][rows], local)
        local = np.full(groups, np.inf)
        np.fmin.at(local, inverse, low)
        arrays["lmin"][rows] = np.fmin(arrays["lmin"][rows], local)
        bins = np.floor(laeq[has] * 10.0 + 0.5)
        self.log.append((rows[inverse][has], bins, duration[has]))
        self._bound_log()

    def _fold_air(
        self,
        columns: Columns,
        selected: Int64Array,
        rows: Int64Array,
        inverse: Int64Array,
        record_rows: Int64Array,
        facts: KeyFacts,
    ) -> None:
        # The quantities only: the position columns after them are the grid stage's.
        values = columns.doubles[selected, : len(self._quantities)]
        has = ~np.isnan(values)
        groups = len(rows)
        arrays = self._arrays
        count = np.zeros((groups, values.shape[1]), dtype=np.int64)
        np.add.at(count, inverse, has.astype(np.int64))
        arrays["q_count"][rows] += count
        total = np.zeros((groups, values.shape[1]))
        np.add.at(total, inverse, np.where(has, values, 0.0))
        arrays["q_sum"][rows] += total
        low = np.full((groups, values.shape[1]), np.inf)
        np.fmin.at(low, inverse, values)
        arrays["q_min"][rows] = np.fmin(arrays["q_min"][rows], low)
        high = np.full((groups, values.shape[1]), -np.inf)
        np.fmax.at(high, inverse, values)
        arrays["q_max"][rows] = np.fmax(arrays["q_max"][rows], high)

    def _fold_traffic(
        self,
        columns: Columns,
        selected: Int64Array,
        rows: Int64Array,
        inverse: Int64Array,
        record_rows: Int64Array,
        facts: KeyFacts,
    ) -> None:
        entry_rows = record_rows[columns.count_row]
        period = (entry_rows >= 0) & (columns.count_value >= 0)
        self.log.append(
            (
                entry_rows[period],
                columns.count_line[period],
                columns.count_direction[period],
                columns.count_class[period],
                columns.count_value[period],
            )
        )
        self._bound_log()

    def add_counts(
        self,
        rows: Int64Array,
        lines: Int64Array,
        directions: Int64Array,
        classes: Int64Array,
        counts: Int64Array,
        resets: Int64Array,
    ) -> None:
        """Period counts derived from cumulative counters (by the stage) for existing rows; a
        count of -1 adds no count (a reset: no data) but its reset flag."""
        counted = counts >= 0
        self.log.append(
            (rows[counted], lines[counted], directions[counted], classes[counted], counts[counted])
        )
        self._bound_log()
        np.add.at(self._arrays["resets"], rows, resets)
        self._arrays["dirty"][rows] = True

    def _fold_occupancy(
        self,
        columns: Columns,
        selected: Int64Array,
        rows: Int64Array,
        inverse: Int64Array,
        record_rows: Int64Array,
        facts: KeyFacts,
    ) -> None:
        people = np.bincount(
            columns.region_row,
            weights=columns.region_count.astype(np.float64),
            minlength=len(columns),
        )[selected]
        groups = len(rows)
        arrays = self._arrays
        arrays["people_sum"][rows] += np.bincount(inverse, weights=people, minlength=groups)
        local = np.full(groups, -np.inf)
        np.maximum.at(local, inverse, people)
        arrays["people_max"][rows] = np.maximum(arrays["people_max"][rows], local)
        entry_rows = record_rows[columns.region_row]
        kept = entry_rows >= 0
        count = columns.region_count[kept]
        self.log.append((entry_rows[kept], columns.region_id[kept], count, count))
        self._bound_log()

    def _bound_log(self) -> None:
        """Keep the log proportional to the open windows, not to the records they took in.

        Every kind with a log appends entries per record (noise a histogram entry, traffic one
        per count, occupancy one per region); a window is kept for its size + grace + allowed
        lateness (75 min for 1-hour windows), so unreduced, the log held every record of that
        horizon: the aggregator's memory grew with the input rate for over an hour (issue 16's
        end-to-end run: 415 → 611 MiB in 10 minutes).
        """
        if self.log.size > _LOG_ENTRIES_PER_ROW * max(len(self.rows), 16):
            self._reduce_log()

    def _reduce_log(self) -> None:
        """Merge the entries of the same (row, detail) into one: histogram weights and counts
        add up, an occupancy maximum stays the maximum. Results do not change: what is read
        from the log (sums, maxima, the histogram) does not depend on how entries are split."""
        log = self.log.array()
        if not len(log):
            return
        if self.kind == "noise":  # (row, 0.1 dB bin): one int64 code
            codes = log[:, 0].astype(np.int64) << 20 | (log[:, 1].astype(np.int64) & 0xFFFFF)
            unique, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
            weights = np.bincount(inverse, weights=log[:, 2], minlength=len(unique))
            self.log.replace(np.column_stack([log[first, 0], log[first, 1], weights]))
            return
        # traffic: (row, line, direction, class) → count; occupancy: (row, region) → sum, max
        width = 4 if self.kind == "traffic" else 2
        first, inverse = _unique_rows(log[:, :width])
        total = np.bincount(inverse, weights=log[:, width], minlength=len(first))
        if self.kind == "traffic":
            self.log.replace(np.column_stack([log[first, :width], total]))
            return
        high = np.full(len(first), -np.inf)
        np.maximum.at(high, inverse, log[:, width + 1])
        self.log.replace(np.column_stack([log[first, :width], total, high]))

    # --- emitting ---------------------------------------------------------------------------

    def due(self, watermark_us: int) -> tuple[Int64Array, Int64Array, Int64Array]:
        """Rows to emit as final now, rows to emit as an update, rows to forget afterwards."""
        arrays = self._arrays
        live = arrays["live"]
        closes = arrays["start"] + (self.window.size_us + self.window.grace_us)
        closed = live & (closes <= watermark_us)
        final = np.flatnonzero(closed & (~arrays["emitted"] | arrays["dirty"]))
        updates = (
            np.flatnonzero(live & ~closed & arrays["dirty"])
            if self.window.emit_updates
            else np.empty(0, dtype=np.int64)
        )
        expired = np.flatnonzero(live & (closes + self.window.lateness_us <= watermark_us))
        return final, updates, expired

    def results(
        self,
        rows: Int64Array,
        *,
        final: bool,
        facts: KeyFacts,
        key_name: Callable[[int], str],
        affluence_thresholds: Sequence[float],
    ) -> list[dict[str, Any]]:
        """The ``Aggregate`` records of ``rows``.

        ``revision`` is the window's sample count: every later emission of a window holds more
        records, so its revision is higher, and a window rebuilt by a replay after a restart gets
        the same revision as before. A counter incremented per emission would start again at 0
        after a restart, and the sink, which keeps the highest revision, would then ignore the
        corrections that follow.

        Why column-wise: a 1-minute window definition emits a result for every few records, so
        the indicators are computed for all the rows at once and read back as Python lists.
        """
        if not len(rows):
            return []
        arrays = self._arrays
        if final:
            self.revisions += int(arrays["emitted"][rows].sum())
            arrays["emitted"][rows] = True
        arrays["dirty"][rows] = False
        keys = arrays["key"][rows].tolist()
        starts = arrays["start"][rows].tolist()
        counts = arrays["count"][rows].tolist()
        details: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]
        if self.kind == "noise":
            indicators = self._noise_values(rows)
            details = [([], [])] * len(keys)
        elif self.kind == "air":
            indicators = self._air_values(rows)
            details = [([], [])] * len(keys)
        else:
            indicators, details = self._logged_values(
                rows, keys, counts, facts, affluence_thresholds
            )
        window = self.window
        size_us, size_s = window.size_us, window.size_s
        return [
            {
                "key": key_name(key),
                "kind": self.kind,
                "window_start": start,
                "window_end": start + size_us,
                "window_size_seconds": size_s,
                "revision": count,
                "final": final,
                "values": values,
                "sample_count": count,
                "counts": traffic,
                "regions": regions,
            }
            for key, start, count, values, (traffic, regions) in zip(
                keys, starts, counts, indicators, details, strict=True
            )
        ]

    def _per_row_details(self, rows: Int64Array) -> dict[int, FloatArray]:
        """The log entries of ``rows``, per row."""
        if self.kind == "air":
            return {}
        if self.kind == "noise":
            self._reduce_log()
        log = self.log.array()
        if not len(log):
            return {}
        wanted = np.zeros(self._capacity, dtype=np.bool_)
        wanted[rows] = True
        mine = log[wanted[log[:, 0].astype(np.int64)]]
        if not len(mine):
            return {}
        mine = mine[np.argsort(mine[:, 0], kind="stable")]
        row_ids = mine[:, 0].astype(np.int64)
        cuts = np.flatnonzero(np.diff(row_ids)) + 1
        return {int(chunk[0, 0]): chunk[:, 1:] for chunk in np.split(mine, cuts)}

    def _noise_values(self, rows: Int64Array) -> list[dict[str, float]]:
        arrays = self._arrays
        energy = arrays["energy"][rows]
        duration = arrays["duration"][rows]
        measured = (duration > 0) & (energy > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            laeq = np.round(10.0 * np.log10(np.where(measured, energy / duration, 1.0)), 2)
        lmax = np.round(arrays["lmax"][rows], 2)
        lmin = np.round(arrays["lmin"][rows], 2)
        coverage = np.round(np.minimum(1.0, duration / self.window.size_s), 4)
        percentiles = self._exceeded_levels(rows)
        out: list[dict[str, float]] = []
        for i, (has, level, high, low, cover) in enumerate(
            zip(
                measured.tolist(),
                laeq.tolist(),
                lmax.tolist(),
                lmin.tolist(),
                coverage.tolist(),
                strict=True,
            )
        ):
            values: dict[str, float] = {}
            if has:
                values["laeq_db"] = level
            if high != -math.inf:
                values["lamax_db"] = high
            if low != math.inf:
                values["lamin_db"] = low
            levels = percentiles.get(i)
            if levels is not None:
                values["l10_db"], values["l50_db"], values["l90_db"] = levels
            values["coverage"] = cover
            out.append(values)
        return out

    def _exceeded_levels(self, rows: Int64Array) -> dict[int, tuple[float, float, float]]:
        """L10, L50, L90 of each of ``rows`` (by position in ``rows``), exactly as
        :func:`streams._indicators.exceeded_level_db` defines them, for all rows at once.

        Only the entries of ``rows`` are merged per (row, 0.1 dB bin), as :meth:`_reduce_log`
        would merge them: the rest of the log (windows still open, or kept for late records:
        seven times the emitted rows with 1-minute windows and 5 minutes of lateness) is left
        to :meth:`_bound_log`. The weights are the same: ``bincount`` adds a bin's entries in
        log order, and an earlier merge only replaced a prefix of them by its sum."""
        log = self.log.array()
        if not len(log):
            return {}
        position = np.full(self._capacity, -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        where = position[log[:, 0].astype(np.int64)]
        picked = where >= 0
        if not picked.any():
            return {}
        entries = log[picked]
        codes = entries[:, 0].astype(np.int64) << 20 | (entries[:, 1].astype(np.int64) & 0xFFFFF)
        unique, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        merged = np.bincount(inverse, weights=entries[:, 2], minlength=len(unique))
        mine = merged > 0
        if not mine.any():
            return {}
        owner, level_bin, weight = where[picked][first][mine], entries[first, 1][mine], merged[mine]
        order = np.lexsort((-level_bin, owner))  # per row, the highest level first
        owner, level_bin, weight = owner[order], level_bin[order], weight[order]
        size = len(owner)
        firsts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        lasts = np.r_[firsts[1:], size] - 1
        running = np.cumsum(weight)
        before = np.repeat(running[firsts] - weight[firsts], np.diff(np.r_[firsts, size]))
        accumulated = running - before
        total = np.repeat(accumulated[lasts], np.diff(np.r_[firsts, size]))
        result: list[list[float]] = []
        for percent in (10.0, 50.0, 90.0):
            target = percent / 100 * total
            reached = (accumulated >= target) | (
                np.abs(accumulated - target)
                <= ind.PERCENT_REL_TOL * np.maximum(np.abs(accumulated), np.abs(target))
            )
            first_hit = np.minimum.reduceat(np.where(reached, np.arange(size), size), firsts)
            hit = np.where(first_hit < size, first_hit, lasts)  # rounding beyond the tolerance
            result.append(np.round(level_bin[hit] / 10.0, 2).tolist())
        return {
            row: (l10, l50, l90)
            for row, l10, l50, l90 in zip(owner[firsts].tolist(), *result, strict=True)
        }

    def _air_values(self, rows: Int64Array) -> list[dict[str, float]]:
        arrays = self._arrays
        n = arrays["q_count"][rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.round(arrays["q_sum"][rows] / np.maximum(n, 1), 4).tolist()
        low = np.round(arrays["q_min"][rows], 4).tolist()
        high = np.round(arrays["q_max"][rows], 4).tolist()
        counts = n.tolist()
        hourly = self.window.size_s == 3600
        names = [
            (q, quantity, f"{quantity}_mean", f"{quantity}_min", f"{quantity}_max",
             f"{quantity}_count")
            for q, quantity in enumerate(self._quantities)
        ]  # fmt: skip
        out: list[dict[str, float]] = []
        for row_mean, row_low, row_high, row_counts in zip(mean, low, high, counts, strict=True):
            values: dict[str, float] = {}
            means: dict[str, float] = {}
            for q, quantity, mean_name, min_name, max_name, count_name in names:
                if not row_counts[q]:
                    continue
                values[mean_name] = row_mean[q]
                values[min_name] = row_low[q]
                values[max_name] = row_high[q]
                values[count_name] = float(row_counts[q])
                means[quantity] = row_mean[q]
            if hourly:
                band = ind.eaqi_band(means)
                if band is not None:
                    values["eaqi_band"] = float(band)
            out.append(values)
        return out

    def _logged_values(
        self,
        rows: Int64Array,
        keys: list[int],
        counts: list[int],
        facts: KeyFacts,
        affluence_thresholds: Sequence[float],
    ) -> tuple[list[dict[str, float]], list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]]:
        """Traffic and occupancy, from the rows' log entries."""
        arrays = self._arrays
        per_row = self._per_row_details(rows)
        indicators: list[dict[str, float]] = []
        details: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        for row, key, samples in zip(rows.tolist(), keys, counts, strict=True):
            entries = per_row.get(row)
            if self.kind == "traffic":
                traffic, values = _traffic_counts(entries)
                resets = int(arrays["resets"][row])
                if resets:
                    values["counter_resets"] = float(resets)
                indicators.append(values)
                details.append((traffic, []))
                continue
            people_mean = float(arrays["people_sum"][row]) / samples
            values = {
                "people_mean": _rounded(people_mean, 4),
                "people_max": float(arrays["people_max"][row]),
            }
            capacity = facts.capacity[key]
            if np.isfinite(capacity):
                pct = ind.occupancy_pct(round(people_mean, 4), int(capacity))
                if pct is not None:
                    values["occupancy_pct"] = _rounded(pct, 2)
                    values["affluence"] = float(
                        ind.affluence_level(round(pct, 2), affluence_thresholds)
                    )
            indicators.append(values)
            details.append(([], _region_results(entries, samples)))
        return indicators, details

    def open_windows(self) -> int:
        return len(self.rows)

    def state_bytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values()) + self.log.size * self.log._width * 8

    def needed_offsets(self) -> Iterator[tuple[int, int]]:
        """(partition, lowest offset) of every live row."""
        live = self._arrays["live"]
        partitions = self._arrays["partition"][live]
        offsets = self._arrays["min_offset"][live]
        for partition in np.unique(partitions).tolist():
            yield partition, int(offsets[partitions == partition].min())

    def rows_of_partition(self, partition: int) -> Int64Array:
        arrays = self._arrays
        return np.flatnonzero(arrays["live"] & (arrays["partition"] == partition))

    def mark_emitted_through(self, watermark_us: int, partition: int) -> None:
        """After a replay: rows of ``partition`` closed before the restart were emitted then."""
        arrays = self._arrays
        closes = arrays["start"] + (self.window.size_us + self.window.grace_us)
        done = arrays["live"] & (arrays["partition"] == partition) & (closes <= watermark_us)
        arrays["emitted"][done] = True
        arrays["dirty"][done] = False

    def row_of(self, key: int, time_us: int) -> int:
        return self.rows.get((time_us // self.window.size_us) << KEY_BITS | key, -1)


def _unique_rows(keys: FloatArray) -> tuple[Int64Array, Int64Array]:
    """``np.unique(keys, axis=0, return_index=True, return_inverse=True)`` less the unique rows
    themselves: the index of each distinct row's first occurrence and each row's group, the
    groups in the rows' sorted order. Why: ``unique`` along an axis sorts a structured view of
    the rows, several times slower than a stable ``lexsort`` of the columns; the groups, their
    order and the first occurrences are the same (equal rows keep their order in both)."""
    if len(keys):
        # Integral columns whose ranges fit in 62 bits together (the logs' rows, lines,
        # directions, classes, regions nearly always do): one int64 code per row, in the rows'
        # lexicographic order, and the 1-D ``unique``, faster again.
        columns = keys.astype(np.int64)
        if (columns == keys).all():
            lows = columns.min(axis=0)
            spans = (columns.max(axis=0) - lows).tolist()
            bits = [int(span).bit_length() for span in spans]
            if sum(bits) <= 62:
                codes = columns[:, 0] - lows[0]
                for column in range(1, keys.shape[1]):
                    codes = codes << bits[column] | (columns[:, column] - lows[column])
                _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
                return first, inverse
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    starts = np.empty(len(keys), dtype=np.bool_)
    starts[:1] = True
    np.any(ordered[1:] != ordered[:-1], axis=1, out=starts[1:])
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = np.cumsum(starts) - 1
    return order[starts], inverse


def _first_present(values: FloatArray, columns: Sequence[int]) -> FloatArray:
    """Per record, the first non-NaN of ``columns`` (NaN when none is present)."""
    result = values[:, columns[0]].copy()
    for column in columns[1:]:
        missing = np.isnan(result)
        if not missing.any():
            break
        result[missing] = values[missing, column]
    return result


def _traffic_counts(
    details: FloatArray | None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Counts per (line, direction, class), sorted, and totals per class and overall."""
    sums: dict[tuple[int, int, int], int] = {}
    if details is not None:
        for line, direction, traffic_class, count in details.tolist():
            triple = (int(line), int(direction), int(traffic_class))
            sums[triple] = sums.get(triple, 0) + int(count)
    counts = [
        {
            "line": line,
            "direction": _DIRECTIONS[direction],
            "traffic_class": TRAFFIC_CLASSES[traffic_class],
            "count": total,
            "cumulative": None,
        }
        for (line, direction, traffic_class), total in sorted(sums.items())
    ]
    values: dict[str, float] = {}
    for (_line, _direction, traffic_class), total in sorted(sums.items()):
        name = f"{TRAFFIC_CLASSES[traffic_class]}_count"
        values[name] = values.get(name, 0.0) + total
    if sums:
        values["total_count"] = float(sum(sums.values()))
    return counts, values


def _region_results(details: FloatArray | None, samples: int) -> list[dict[str, Any]]:
    """Mean (over the window's records; a record without the region counts 0) and maximum."""
    sums: dict[int, float] = {}
    maxima: dict[int, int] = {}
    if details is not None:
        for region, total, high in details.tolist():
            r = int(region)
            sums[r] = sums.get(r, 0.0) + total
            maxima[r] = max(maxima.get(r, 0), int(high))
    return [
        {"region": r, "mean_count": _rounded(sums[r] / samples, 4), "max_count": maxima[r]}
        for r in sorted(sums)
    ]
