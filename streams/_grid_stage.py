"""The grid stage: mobile air sensors' PM2.5 samples → windows per cell of the European grid.

Why: a car carrying a PM2.5 sensor measures street by street; a map needs those samples pooled
where they were taken, not per sensor. Pure logic, no Kafka (:mod:`streams._grid_runner` feeds
it polled batches and sends what it returns), tested with made-up clocks. Rules
(docs/streams.md#the-grid-stage):

- a sample is a record of a sensor the registry marks ``mobile``, with a PM2.5 value and a
  position whose stated accuracy, if any, is within ``max_accuracy_m``; its cell is the 100 m
  cell of the ETRS89-LAEA grid it falls in (:mod:`streams._grid`). Other records of mobile
  sensors are counted by outcome (``no_position``, ``inaccurate``, ``no_pm2_5``,
  ``outside_grid``) and left out; fixed sensors' records are ignored;
- event time, tumbling windows aligned to the epoch, and the watermark are the window stage's
  (:class:`streams._watermark.Watermarks`); a window is due when the watermark passes its end +
  grace, and kept for its allowed lateness, during which a late sample re-emits it with a higher
  revision (the sample count); a sample later than that is counted ``late`` (the window stage
  already sends the record itself to the late topic for its own windows);
- state per (window, cell): sample count, sum and maximum of PM2.5, the set of vehicles;
- privacy: a cell's window is emitted only when it holds at least ``min_samples`` samples from
  at least ``min_vehicles`` distinct vehicles; below that it is counted as suppressed and never
  published, so a single car's trace cannot be followed cell by cell;
- recovery as in the window stage: :meth:`GridStage.needed_offsets` gives per partition the
  lowest offset a kept window still needs, and records replayed from before a restart rebuild
  state without re-emitting windows the stored watermark had closed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from citysense.settings import GridSettings
from schemas import POSITION_FIELDS
from streams import _indicators as ind
from streams._columns import DOUBLE_FIELDS, Columns, KeyTable
from streams._grid import Cell, cells_of
from streams._stage import window_defs
from streams._tables import WindowDef
from streams._watermark import NO_WATERMARK, Watermarks

__all__ = ["OUTCOMES", "GridStage"]

_PM2_5: Final = DOUBLE_FIELDS["air"].index("pm2_5_ugm3")
_LAT, _LON, _ACCURACY = (DOUBLE_FIELDS["air"].index(f) for f in POSITION_FIELDS)
#: Outcomes of a mobile sensor's record (``gridded`` is a sample that went into a cell).
OUTCOMES: Final = ("gridded", "no_position", "inaccurate", "no_pm2_5", "outside_grid", "late")
#: A cell is its corner in resolution steps, 17 bits an axis (13,107 km at 100 m: the grid's
#: extent is 900-7,400 km east, 900-5,500 km north); (window number, cell) is one int64 with
#: the window number in the top 29 bits (windows of a minute or more, so far beyond 2500).
_AXIS_BITS: Final = 17
_CELL_BITS: Final = 2 * _AXIS_BITS
_AXIS_MASK: Final = (1 << _AXIS_BITS) - 1


@dataclass(slots=True)
class _CellWindow:
    """A cell's open (or kept) window."""

    count: int = 0
    total: float = 0.0
    maximum: float = -np.inf
    vehicles: set[int] = field(default_factory=set)
    #: Per partition id, the lowest offset folded in.
    offsets: dict[int, int] = field(default_factory=dict)
    #: The count at the last emission (0: never emitted), or at the replayed close.
    emitted_count: int = 0
    #: Closed (its end + grace passed) at least once: later changes are revisions.
    closed: bool = False
    #: Emitted at least once (it met the thresholds when it closed or since).
    published: bool = False


@lru_cache(maxsize=65_536)
def _corners(cell: Cell) -> tuple[tuple[float, float], ...]:
    """A cell's WGS84 corners, projected once per cell (a city has a few thousand)."""
    return cell.corners()


class GridStage:
    """Per-cell PM2.5 windows of mobile air sensors; see the module docstring for the rules."""

    def __init__(
        self,
        settings: GridSettings,
        out_of_orderness_s: float,
        idle_timeout_s: float,
        mobile: Callable[[str], bool],
        keys: KeyTable | None = None,
    ) -> None:
        """``mobile(sensor_id)`` says whether the registry marks the sensor as mobile."""
        self.settings = settings
        self.keys = keys or KeyTable()
        self._mobile_of = mobile
        self._mobile = np.zeros(0, dtype=np.bool_)
        self.windows: list[WindowDef] = window_defs(settings.windows)
        self.watermarks = Watermarks(out_of_orderness_s, idle_timeout_s)
        self._open: list[dict[int, _CellWindow]] = [{} for _ in self.windows]
        self._partitions: dict[Hashable, int] = {}
        self._partition_ids: list[Hashable] = []
        #: Records of mobile sensors per outcome, and cells per (window name, outcome), since
        #: the last :meth:`take_counts`.
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.cells: dict[tuple[str, str], int] = {}

    # --- partitions -------------------------------------------------------------------------

    def _partition_id(self, partition: Hashable) -> int:
        pid = self._partitions.get(partition)
        if pid is None:
            pid = self._partitions[partition] = len(self._partition_ids)
            self._partition_ids.append(partition)
        return pid

    def assign(self, partition: Hashable, now_s: float) -> None:
        self._partition_id(partition)
        self.watermarks.assign(partition, now_s)

    def revoke(self, partition: Hashable) -> None:
        """Forget every cell ``partition`` fed: its new owner replays it from the commit. A cell
        mixes vehicles of several partitions, so one member holds every partition (the runner
        uses the all-to-one assignor, as the rollup stage does) and a rebalance revokes them all
        together."""
        self.watermarks.revoke(partition)
        pid = self._partitions.get(partition)
        if pid is None:
            return
        for cells in self._open:
            for code in [c for c, w in cells.items() if pid in w.offsets]:
                del cells[code]

    # --- folding ----------------------------------------------------------------------------

    def _mobile_keys(self) -> npt.NDArray[np.bool_]:
        known = len(self._mobile)
        if known < len(self.keys):
            more = [self._mobile_of(self.keys.name(i)) for i in range(known, len(self.keys))]
            self._mobile = np.concatenate([self._mobile, np.asarray(more, dtype=np.bool_)])
        return self._mobile

    def fold(
        self,
        partition: Hashable,
        columns: Columns,
        now_s: float,
        *,
        replay_watermark: int | None = None,
    ) -> None:
        """Fold one partition's batch of air measurement columns.

        ``replay_watermark``: the batch was read before a restart, when the watermark had
        reached that value; windows closed by then are not emitted again unless later samples
        change them, and nothing is counted twice.
        """
        pid = self._partition_id(partition)
        n = len(columns)
        if not n:
            self.watermarks.observe(partition, NO_WATERMARK, now_s)
            return
        watermark = self.watermarks.current(now_s) if replay_watermark is None else replay_watermark
        counting = replay_watermark is None
        doubles = columns.doubles
        mobile = self._mobile_keys()[columns.key]
        lat, lon = doubles[:, _LAT], doubles[:, _LON]
        accuracy = doubles[:, _ACCURACY]
        pm = doubles[:, _PM2_5]
        positioned = mobile & ~np.isnan(lat) & ~np.isnan(lon)
        accurate = positioned & ~(accuracy > self.settings.max_accuracy_m)  # NaN: unstated
        measured = accurate & ~np.isnan(pm)
        north, east, on_grid = cells_of(
            np.where(measured, lat, 0.0), np.where(measured, lon, 0.0), self.settings.resolution_m
        )
        on_grid &= ((north // self.settings.resolution_m) < (1 << _AXIS_BITS)) & (
            (east // self.settings.resolution_m) < (1 << _AXIS_BITS)
        )
        sample = measured & on_grid
        if counting:
            self._count("no_position", mobile & ~positioned)
            self._count("inaccurate", positioned & ~accurate)
            self._count("no_pm2_5", accurate & np.isnan(pm))
            self._count("outside_grid", measured & ~on_grid)
        step = self.settings.resolution_m
        cell_codes = ((north // step) << _AXIS_BITS) | (east // step)
        times = columns.time_us
        late = np.zeros(n, dtype=np.bool_)
        for index, w in enumerate(self.windows):
            closes = times - times % w.size_us + (w.size_us + w.grace_us)
            too_late = sample & (closes + w.lateness_us <= watermark)
            late |= too_late
            self._fold_window(
                index, columns, np.flatnonzero(sample & ~too_late), cell_codes, pid, watermark,
                replay_watermark is not None,
            )  # fmt: skip
        if counting:
            self._count("late", late)
            self._count("gridded", sample & ~late)
        self.watermarks.observe(partition, int(times.max()), now_s)

    def _count(self, outcome: str, mask: npt.NDArray[np.bool_]) -> None:
        self.outcomes[outcome] += int(np.count_nonzero(mask))

    def _fold_window(
        self,
        index: int,
        columns: Columns,
        selected: npt.NDArray[np.int64],
        cell_codes: npt.NDArray[np.int64],
        pid: int,
        watermark: int,
        replaying: bool,
    ) -> None:
        if not len(selected):
            return
        w = self.windows[index]
        numbers = columns.time_us[selected] // w.size_us
        codes = (numbers << _CELL_BITS) | cell_codes[selected]
        unique, inverse = np.unique(codes, return_inverse=True)
        groups = len(unique)
        values = columns.doubles[selected, _PM2_5]
        counts = np.bincount(inverse, minlength=groups)
        totals = np.bincount(inverse, weights=values, minlength=groups)
        maxima = np.full(groups, -np.inf)
        np.maximum.at(maxima, inverse, values)
        offsets = np.full(groups, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(offsets, inverse, columns.offset[selected])
        # The vehicles of each group: the distinct (group, key) pairs.
        pairs = np.unique((inverse.astype(np.int64) << 32) | columns.key[selected].astype(np.int64))
        vehicles: list[list[int]] = [[] for _ in range(groups)]
        for pair in pairs.tolist():
            vehicles[pair >> 32].append(pair & 0xFFFF_FFFF)
        cells = self._open[index]
        for g, code in enumerate(unique.tolist()):
            state = cells.get(code)
            if state is None:
                state = cells[code] = _CellWindow()
            state.count += int(counts[g])
            state.total += float(totals[g])
            state.maximum = max(state.maximum, float(maxima[g]))
            state.vehicles.update(vehicles[g])
            first = int(offsets[g])
            state.offsets[pid] = min(first, state.offsets.get(pid, first))
            if replaying:
                start = (code >> _CELL_BITS) * w.size_us
                if start + w.size_us + w.grace_us <= watermark:
                    # Closed and emitted (or suppressed) before the restart, with what it then
                    # held: only a later change is a revision.
                    state.closed = True
                    state.emitted_count = state.count
                    state.published = self._publishable(state)

    # --- emitting ---------------------------------------------------------------------------

    def advance(self, now_s: float) -> list[dict[str, Any]]:
        """``CellAggregate`` records due at the current watermark, in (window end, size, cell)
        order; windows past their allowed lateness are forgotten."""
        watermark = self.watermarks.current(now_s)
        out: list[dict[str, Any]] = []
        for w, cells in zip(self.windows, self._open, strict=True):
            expired: list[int] = []
            for code, state in cells.items():
                start = (code >> _CELL_BITS) * w.size_us
                closes = start + w.size_us + w.grace_us
                if closes > watermark:
                    continue
                if state.count != state.emitted_count:
                    if self._publishable(state):
                        out.append(self._result(w, code, state))
                        self._count_cell(w.name, "revised" if state.published else "published")
                        state.published = True
                    elif not state.closed:
                        self._count_cell(w.name, "suppressed")
                    state.emitted_count = state.count
                state.closed = True
                if closes + w.lateness_us <= watermark:
                    expired.append(code)
            for code in expired:
                del cells[code]
        out.sort(key=lambda r: (r["window_end"], r["window_size_seconds"], r["cell_id"]))
        return out

    def _publishable(self, state: _CellWindow) -> bool:
        return (
            state.count >= self.settings.min_samples
            and len(state.vehicles) >= self.settings.min_vehicles
        )

    def _count_cell(self, window: str, outcome: str) -> None:
        self.cells[(window, outcome)] = self.cells.get((window, outcome), 0) + 1

    def _result(self, w: WindowDef, code: int, state: _CellWindow) -> dict[str, Any]:
        step = self.settings.resolution_m
        cell_code = code & ((1 << _CELL_BITS) - 1)
        cell = Cell((cell_code >> _AXIS_BITS) * step, (cell_code & _AXIS_MASK) * step, step)
        start = (code >> _CELL_BITS) * w.size_us
        # Rounded as the window stage rounds means (streams._tables._rounded): a sum's last bits
        # depend on the batching, 1e-4 µg/m³ is far above that noise and far below a sensor's.
        mean = round(state.total / state.count, 4)
        return {
            "cell_id": cell.id,
            "resolution_m": step,
            "window_start": start,
            "window_end": start + w.size_us,
            "window_size_seconds": w.size_s,
            "revision": state.count,
            "final": True,
            "sample_count": state.count,
            "vehicle_count": len(state.vehicles),
            "pm2_5_ugm3_mean": mean,
            "pm2_5_ugm3_max": round(state.maximum, 4),
            "eaqi_band": ind.eaqi_band({"pm2_5_ugm3": mean}),
            "corners": [{"lon": lon, "lat": lat} for lon, lat in _corners(cell)],
        }

    # --- recovery and metrics ---------------------------------------------------------------

    def needed_offsets(self) -> dict[Hashable, int]:
        """Per partition, the lowest offset still needed by a kept window."""
        lowest: dict[int, int] = {}
        for cells in self._open:
            for state in cells.values():
                for pid, offset in state.offsets.items():
                    lowest[pid] = min(offset, lowest.get(pid, offset))
        return {self._partition_ids[pid]: offset for pid, offset in lowest.items()}

    def open_cells(self) -> dict[str, int]:
        return {w.name: len(cells) for w, cells in zip(self.windows, self._open, strict=True)}

    def take_counts(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        """The record outcomes and cell outcomes counted since the last call (for metrics)."""
        outcomes, cells = self.outcomes, self.cells
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.cells = {}
        return outcomes, cells
