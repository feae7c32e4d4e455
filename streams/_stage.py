"""The window stage: one kind's measurement records → per-sensor window results, late records.

Pure logic, no Kafka (the service in :mod:`streams._service` feeds it polled batches and sends what
it returns), so every rule here is unit-tested with made-up clocks (docs/architecture.md: rules 3
and 4 of #delivery-guarantees, and #windows-and-indicators):

- event time is ``observed_at``; windows are tumbling, aligned to the Unix epoch in UTC,
  ``[start, start + size)``;
- the watermark is :class:`streams._watermark.Watermarks`' (per partition, min over partitions,
  idle partitions left out); a batch is judged against the watermark reached before it;
- a window is emitted (``final``, revision 0) when the watermark passes its end + grace; a record
  for it that arrives later, while the watermark is below end + grace + allowed lateness, is
  folded and the window is emitted again with the next revision; a record later than that for
  any window definition goes to the late topic with the reason, and is counted;
- traffic cumulative counters become period counts in event-time order per counter, once the
  watermark has passed a reading (so any arrival order within the out-of-orderness bound gives
  the same counts); a reading older than one already differenced cannot be placed and is late;
- :meth:`WindowStage.needed_offsets` gives per partition the lowest offset still held by a kept
  window: committing it means a restart replays exactly what rebuilds the kept state.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from citysense.settings import AggregateSettings, WindowSettings
from streams import _indicators as ind
from streams._columns import Columns, KeyTable
from streams._tables import Int64Array, KeyFacts, Table, WindowDef
from streams._watermark import NO_WATERMARK, Watermarks

__all__ = ["LateItem", "WindowStage", "window_defs"]

_MICROS: Final = 1_000_000
#: Reporting interval assumed for a sensor missing from the registry (the registry's default).
DEFAULT_INTERVAL_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class LateItem:
    """A record (its position in the batch) that missed at least one window for good."""

    index: int
    reason: str


def window_defs(windows: Sequence[WindowSettings]) -> list[WindowDef]:
    return [
        WindowDef(
            name=w.name,
            size_us=w.size_s * _MICROS,
            grace_us=round(w.grace_s * _MICROS),
            lateness_us=round(w.allowed_lateness_s * _MICROS),
            emit_updates=w.emit == "update",
        )
        for w in windows
    ]


@dataclass(slots=True)
class _Reading:
    """A cumulative counter reading waiting for the watermark."""

    time_us: int
    cumulative: int
    offset: int
    partition: int


class WindowStage:
    """Per-sensor windows of one kind; see the module docstring for the rules."""

    def __init__(
        self,
        kind: str,
        settings: AggregateSettings,
        facts: Callable[[str], tuple[float, int | None]],
        keys: KeyTable | None = None,
    ) -> None:
        """``facts(sensor_id)`` gives the sensor's reporting interval (s) and capacity."""
        self.kind = kind
        self.keys = keys or KeyTable()
        self._facts_of = facts
        self._settings = settings
        self.tables = [Table(kind, w) for w in window_defs(settings.windows)]
        self.watermarks = Watermarks(settings.out_of_orderness_s, settings.idle_timeout_s)
        self._partitions: dict[Hashable, int] = {}
        self._partition_ids: list[Hashable] = []
        self._interval = np.empty(0)
        self._ranks: Int64Array = np.empty(0, dtype=np.int64)
        self._capacity = np.empty(0)
        self._thresholds = settings.affluence_thresholds_pct
        #: Traffic: per counter (key, line, direction, class), readings not yet differenced and
        #: the last one that was.
        self._pending: dict[tuple[int, int, int, int], list[_Reading]] = {}
        self._last: dict[tuple[int, int, int, int], _Reading] = {}
        self._keep_us = max(
            t.window.size_us + t.window.grace_us + t.window.lateness_us for t in self.tables
        )

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
        """Forget everything fed by ``partition``: its new owner replays it from the commit."""
        self.watermarks.revoke(partition)
        pid = self._partitions.get(partition)
        if pid is None:
            return
        for table in self.tables:
            table.free(table.rows_of_partition(pid))
        for counter in [c for c, r in self._pending.items() if r and r[0].partition == pid]:
            del self._pending[counter]
        for counter in [c for c, r in self._last.items() if r.partition == pid]:
            del self._last[counter]

    # --- folding ----------------------------------------------------------------------------

    def _key_facts(self) -> KeyFacts:
        known = len(self._interval)
        if known < len(self.keys):
            interval = [0.0] * (len(self.keys) - known)
            capacity = [0.0] * (len(self.keys) - known)
            for i in range(known, len(self.keys)):
                seconds, cap = self._facts_of(self.keys.name(i))
                interval[i - known] = seconds
                capacity[i - known] = np.nan if cap is None else float(cap)
            self._interval = np.concatenate([self._interval, interval])
            self._capacity = np.concatenate([self._capacity, capacity])
        return KeyFacts(self._interval, self._capacity)

    def fold(
        self,
        partition: Hashable,
        columns: Columns,
        now_s: float,
        *,
        replay_watermark: int | None = None,
    ) -> list[LateItem]:
        """Fold one partition's batch; returns the records that are late for some window.

        ``replay_watermark``: the batch was processed before a restart, when the watermark had
        reached that value; windows that had closed by then are not emitted again (they were),
        and nothing is reported late twice.
        """
        if not len(columns):
            self.watermarks.observe(partition, NO_WATERMARK, now_s)
            return []
        if replay_watermark is None:
            return self.fold_parts([(partition, len(columns))], columns, now_s)[0][0]
        pid = self._partition_id(partition)
        pids = np.full(len(columns), pid, dtype=np.int64)
        late = self._fold_tables(columns, pids, np.full(len(columns), replay_watermark))
        for table in self.tables:
            table.mark_emitted_through(replay_watermark, pid)
        if self.kind == "traffic":
            self._queue_readings(columns, pids, late)
        self.watermarks.observe(partition, int(columns.time_us.max()), now_s)
        return []

    def fold_parts(
        self, parts: Sequence[tuple[Hashable, int]], columns: Columns, now_s: float
    ) -> list[tuple[list[LateItem], int]]:
        """Fold several partitions' batches of one poll, given as runs of rows of ``columns``
        (``(partition, stop)``: the part's rows end at ``stop``, the next part's begin there),
        exactly as :meth:`fold` one part after the other: each part is judged against the
        watermark reached before it (the previous parts observed). Per part: its late records
        (row indices into ``columns``) and the watermark after it.

        Why: a live poll brings a few records of each partition; folding each alone paid every
        window table's fixed numpy cost per partition, most of the aggregator's CPU at a few
        thousand records a second. The state reached is the same: a row's records come from
        one partition (the key decides it), so its sums add in the same order.
        """
        watermarks = self.watermarks
        times = columns.time_us
        starts: list[int] = []
        pids: list[int] = []
        before: list[int] = []
        after: list[int] = []
        start = 0
        for partition, stop in parts:
            starts.append(start)
            pids.append(self._partition_id(partition))
            start = stop
        filled = [i for i, (_, stop) in enumerate(parts) if stop > starts[i]]
        highest = np.maximum.reduceat(times, [starts[i] for i in filled]).tolist() if filled else []
        maxima = dict(zip(filled, highest, strict=True))
        for i, (partition, _stop) in enumerate(parts):
            high = maxima.get(i)
            if high is None:  # nothing to fold: as :meth:`fold`, the partition is not observed
                current = watermarks.current(now_s)
                before.append(current)
                after.append(current)
                continue
            before.append(watermarks.current(now_s))
            watermarks.observe(partition, int(high), now_s)
            after.append(watermarks.current(now_s))
        out: list[tuple[list[LateItem], int]] = [([], w) for w in after]
        if not len(columns):
            return out
        lengths = [stop - first for (_, stop), first in zip(parts, starts, strict=True)]
        if len(parts) == 1:
            record_pids = np.full(len(columns), pids[0], dtype=np.int64)
            record_watermarks = np.full(len(columns), before[0], dtype=np.int64)
        else:
            record_pids = np.repeat(np.asarray(pids, dtype=np.int64), lengths)
            record_watermarks = np.repeat(np.asarray(before, dtype=np.int64), lengths)
        late = self._fold_tables(columns, record_pids, record_watermarks)
        items: list[LateItem] = []
        if self.kind == "traffic":
            items = self._queue_readings(columns, record_pids, late)
        for index in np.flatnonzero(late).tolist():
            items.append(LateItem(index, "beyond_allowed_lateness"))
        if not items:
            return out
        items.sort(key=lambda item: item.index)
        part = 0
        for item in items:
            while item.index >= parts[part][1]:
                part += 1
            out[part][0].append(item)
        return out

    def _fold_tables(
        self, columns: Columns, pids: Int64Array, watermarks: Int64Array
    ) -> np.ndarray[Any, Any]:
        """Fold every record not too late (against its own watermark) into every table; the
        records too late for some table."""
        facts = self._key_facts()
        late = np.zeros(len(columns), dtype=np.bool_)
        times = columns.time_us
        for table in self.tables:
            w = table.window
            closes = times - times % w.size_us + (w.size_us + w.grace_us)
            too_late = closes + w.lateness_us <= watermarks
            late |= too_late
            table.fold(columns, np.flatnonzero(~too_late), pids, facts)
        return late

    def _queue_readings(
        self, columns: Columns, pids: Int64Array, late: np.ndarray[Any, Any]
    ) -> list[LateItem]:
        """Queue cumulative counter readings (those without a period count) for differencing."""
        cumulative = (columns.count_value < 0) & (columns.count_cumulative >= 0)
        items: list[LateItem] = []
        for entry in np.flatnonzero(cumulative).tolist():
            record = int(columns.count_row[entry])
            if late[record]:
                continue
            counter = (
                int(columns.key[record]),
                int(columns.count_line[entry]),
                int(columns.count_direction[entry]),
                int(columns.count_class[entry]),
            )
            reading = _Reading(
                int(columns.time_us[record]),
                int(columns.count_cumulative[entry]),
                int(columns.offset[record]),
                int(pids[record]),
            )
            last = self._last.get(counter)
            if last is not None and reading.time_us <= last.time_us:
                if reading.time_us < last.time_us:
                    items.append(LateItem(record, "cumulative_counter_out_of_order"))
                continue
            self._pending.setdefault(counter, []).append(reading)
        return items

    def _difference(self, watermark: int) -> None:
        """Turn queued readings at or below the watermark into period counts, in time order."""
        if not self._pending:
            return
        by_table: list[list[list[int]]] = [[[] for _ in range(6)] for _ in self.tables]
        for counter, readings in list(self._pending.items()):
            ready = [r for r in readings if r.time_us <= watermark]
            if not ready:
                continue
            waiting = [r for r in readings if r.time_us > watermark]
            if waiting:
                self._pending[counter] = waiting
            else:
                del self._pending[counter]
            ready.sort(key=lambda r: (r.time_us, r.cumulative))
            key, line, direction, traffic_class = counter
            for reading in ready:
                last = self._last.get(counter)
                self._last[counter] = reading
                if last is None or reading.time_us == last.time_us:
                    continue
                step = ind.counter_delta(
                    last.cumulative,
                    reading.cumulative,
                    (reading.time_us - last.time_us) / _MICROS,
                    self._settings.max_crossings_per_s,
                )
                for table, columns in zip(self.tables, by_table, strict=True):
                    row = table.row_of(key, reading.time_us)
                    if row < 0:
                        continue
                    for column, value in zip(
                        columns,
                        (
                            row,
                            line,
                            direction,
                            traffic_class,
                            step.delta or 0,
                            int(step.event == "reset"),
                        ),
                        strict=True,
                    ):
                        column.append(value)
                    if step.delta is None:
                        # No period count: "no data", not 0 (the reset is still flagged).
                        columns[4][-1] = -1
        for table, columns in zip(self.tables, by_table, strict=True):
            if not columns[0]:
                continue
            rows, lines, directions, classes, counts, resets = (
                np.asarray(c, dtype=np.int64) for c in columns
            )
            table.add_counts(rows, lines, directions, classes, counts, resets)

    # --- emitting ---------------------------------------------------------------------------

    def advance(self, now_s: float) -> list[dict[str, Any]]:
        """Aggregate records due at the current watermark, in a deterministic order."""
        watermark = self.watermarks.current(now_s)
        if self.kind == "traffic":
            self._difference(watermark)
        facts = self._key_facts()
        out: list[dict[str, Any]] = []
        # The sort key of each result, column-wise: window end, size, key index, final.
        order: list[tuple[Any, Any, Any, Any]] = []
        for table in self.tables:
            final, updates, expired = table.due(watermark)
            for rows, is_final in ((final, True), (updates, False)):
                if not len(rows):
                    continue
                window = table.window
                order.append(
                    (
                        table.start[rows] + window.size_us,
                        np.full(len(rows), window.size_s, dtype=np.int64),
                        table.key[rows],
                        np.full(len(rows), is_final),
                    )
                )
                out += table.results(
                    rows,
                    final=is_final,
                    facts=facts,
                    key_name=self.keys.name,
                    affluence_thresholds=self._thresholds,
                )
            table.free(expired)
        self._forget_counters(watermark)
        # In window-end order across the window sizes: the rollup stage's watermark follows the
        # results' window ends, so a burst (catching up a backlog) must not send every 1-minute
        # result of an hour before the hour's own result. Sorted as by (window_end,
        # window_size_seconds, key, final) with the keys as their rank among the sensor ids:
        # sorting the dicts by that tuple compared a thousand sensor ids per minute as strings.
        # Both sorts are stable, so results equal in all four keep their order.
        if len(out) > 1:
            columns = zip(*order, strict=True)
            ends, sizes, keys, finals = (np.concatenate(column) for column in columns)
            ranked = np.lexsort((finals, self._key_ranks()[keys], sizes, ends))
            out = [out[i] for i in ranked.tolist()]
        return out

    def _key_ranks(self) -> Int64Array:
        """Each key index's rank among the sensor ids in ``str`` order (Python's, not numpy's,
        which ignores trailing NULs), made again only when keys were added."""
        count = len(self.keys)
        if len(self._ranks) != count:
            names = self.keys.ids
            ranks = np.empty(count, dtype=np.int64)
            ranks[sorted(range(count), key=names.__getitem__)] = np.arange(count)
            self._ranks = ranks
        return self._ranks

    def _forget_counters(self, watermark: int) -> None:
        """Counters silent for longer than every kept window are forgotten (bounded memory)."""
        horizon = watermark - self._keep_us
        for counter in [c for c, r in self._last.items() if r.time_us < horizon]:
            if counter not in self._pending:
                del self._last[counter]

    # --- recovery and metrics ---------------------------------------------------------------

    def needed_offsets(self) -> dict[Hashable, int]:
        """Per partition, the lowest offset still needed by kept state."""
        lowest: dict[int, int] = {}
        for table in self.tables:
            for pid, offset in table.needed_offsets():
                lowest[pid] = min(offset, lowest.get(pid, offset))
        for readings in self._pending.values():
            for r in readings:
                lowest[r.partition] = min(r.offset, lowest.get(r.partition, r.offset))
        for r in self._last.values():
            lowest[r.partition] = min(r.offset, lowest.get(r.partition, r.offset))
        return {self._partition_ids[pid]: offset for pid, offset in lowest.items()}

    def open_windows(self) -> dict[str, int]:
        return {t.window.name: t.open_windows() for t in self.tables}

    def state_bytes(self) -> int:
        return sum(t.state_bytes() for t in self.tables)


def registry_facts(registry: Any) -> Callable[[str], tuple[float, int | None]]:
    """``facts`` for :class:`WindowStage` from a :class:`citysense.registry.Registry`."""

    def facts(sensor_id: str) -> tuple[float, int | None]:
        sensor = registry.sensors.get(sensor_id) if registry is not None else None
        if sensor is None:
            return DEFAULT_INTERVAL_S, None
        return sensor.interval_s, sensor.capacity

    return facts
