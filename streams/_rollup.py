"""The rollup stage: per-site windows and daily windows from the per-sensor aggregates.

Stage 1 (``streams._tables``) turns raw measurements into per-sensor windows on
``city.<kind>.aggregates.v1``. This module is stage 2, pure logic without Kafka: it reads those
per-sensor ``Aggregate`` records and produces

1. per-site rollups (key ``site:<site id>``) for every window definition whose ``scopes``
   include ``"site"``, same window start, end and size, over the registry's sensors of that site
   and kind;
2. daily windows per sensor from its hourly aggregates (``daily.hourly_window``), one per local
   calendar day of ``daily.timezone``: ``window_start``/``window_end`` are the real bounds of the
   local day in UTC µs and ``window_size_seconds`` is 86400 even on 23 and 25 hour days;
3. daily windows per site from the site's hourly rollups computed here.

Never from raw records. Input records whose key starts with ``site:``, whose
``window_size_seconds`` is 86400, whose ``final`` is false, whose kind is not handled, or whose
size is neither a site-scoped window nor the hourly window are ignored (not even for the
watermark: intermediate "update" records carry the end of a window still open).

Event time and emission. The event time of an input is its ``window_end``; a
:class:`~streams._watermark.Watermarks` with no out-of-orderness and the aggregator's idle
timeout tracks it per input partition. A site window closes when the watermark reaches
``window_end + grace_s + site_grace_s``, a daily window when it reaches ``day end + daily.grace_s``;
:meth:`RollupStage.advance` then emits it (``final`` true). An input arriving later
for a closed window (a new sensor, or a higher revision of a sensor's result, which *replaces*
that sensor's earlier contribution) re-emits the window with a higher revision, as long as the
watermark (taken before the input is observed) is below close + allowed lateness (the window
definition's ``allowed_lateness_s`` for site windows, ``daily.allowed_lateness_s`` for days);
from then on the input is reported as a :class:`LateInput` (see :meth:`RollupStage.late`) and
the window's state is dropped. A re-sent input (same key, window and revision) or an older
revision changes nothing. A window whose recomputed record equals the one last emitted is not
re-emitted either.

Determinism: a window's state is, per input, its latest revision; results are computed from it
in sorted order with ``math.fsum`` and rounded by :func:`_round` (levels and percentages to 0.01,
everything else to 1e-4, like stage 1), so the same inputs in any order give byte-identical
records. :meth:`RollupStage.advance` sorts its records by (window size, window start, key, kind).

Recovery: :meth:`RollupStage.needed_offsets` gives per partition the lowest input offset still
held by a kept window (daily windows hold their hourly inputs; a day also holds the previous
day's last hours for ozone), so committing it and replaying from there rebuilds the state.

Revisions: a result's ``revision`` is the sum over its inputs of their revision plus their sample
count. Every change (a new input, or a higher revision of one) raises it, and a window rebuilt by a
replay after a restart gets the same revision as before, so a sink keeping the highest revision
never ignores a correction (a per-emission counter would start again at 0 after a restart).

A site window is also emitted as soon as every registered sensor of the site (of its kind) has
sent its result for it: it need not wait for later results to move the watermark.

Site windows close at their end + the window definition's ``grace_s`` + ``site_grace_s``: the
window stage sends a sensor's result once its watermark passes end + ``grace_s``, after the
shorter windows ending at the same instant, whose results already move this stage's watermark.

Limit (known): the watermark floor survives a revoke (it never decreases), so inputs replayed into
the same object after a rebalance that are beyond lateness are reported late a second time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final
from zoneinfo import ZoneInfo

from citysense.registry import Registry
from citysense.settings import AggregateSettings
from decoders import TRAFFIC_CLASSES
from streams import _indicators as ind
from streams._watermark import Watermarks

__all__ = ["DAY_SECONDS", "SITE_PREFIX", "LateInput", "RollupStage"]

#: Keys of site results: ``site:<site id>``.
SITE_PREFIX: Final = "site:"
#: ``window_size_seconds`` of daily windows (nominal: also on 23 and 25 hour days).
DAY_SECONDS: Final = 86_400
_MICROS: Final = 1_000_000
_HOUR_US: Final = 3_600_000_000
#: The ozone 8-hour means of a day start 7 hours before its midnight (17:00 the day before).
_OZONE_CARRY_US: Final = 7 * _HOUR_US
_DIRECTIONS: Final = ("in", "out")
#: The order of :meth:`RollupStage.advance`'s records, one C-level key per record.
_RESULT_ORDER: Final = itemgetter("window_size_seconds", "window_start", "key", "kind")
_EXPIRED_SITE: Final = "site_window_expired"
_EXPIRED_DAY: Final = "daily_window_expired"


@dataclass(frozen=True, slots=True)
class LateInput:
    """An input that came too late for one of the windows it feeds (counted by the service).

    ``target`` is ``"site"`` or ``"daily"``; ``reason`` a short label for a metric. Inputs made
    here (a site's hourly rollup feeding the site's day) have ``partition`` None and
    ``offset`` -1.
    """

    partition: object
    offset: int
    key: str
    kind: str
    window_start_us: int
    window_size_s: int
    target: str
    reason: str


@dataclass(slots=True)
class _Input:
    """The latest revision of one input of a window, and the offsets needed to read it again."""

    revision: int
    values: Mapping[str, float]
    counts: Sequence[Mapping[str, Any]]
    regions: Sequence[Mapping[str, Any]]
    sample_count: int
    offsets: dict[object, int]


_WindowId = tuple[str, str, int, int]  # kind, key, size_s, start_us
_InputId = tuple[str, int]  # input key, input window start


@dataclass(slots=True)
class _Window:
    kind: str
    key: str
    start_us: int
    end_us: int
    size_s: int
    close_us: int
    expire_us: int
    #: Site windows: the site id; daily windows: None.
    site: str | None
    inputs: dict[_InputId, _Input] = field(default_factory=dict)
    #: Daily air windows: the previous day's last hourly inputs (ozone 8-hour means only).
    carry: dict[_InputId, _Input] = field(default_factory=dict)
    dirty: bool = False
    revision: int = -1  # last emitted; -1: never emitted
    last: tuple[Any, ...] | None = None  # last emitted payload

    def offsets(self) -> Iterable[tuple[object, int]]:
        for held in (self.inputs, self.carry):
            for item in held.values():
                yield from item.offsets.items()


def _round(name: str, value: float) -> float:
    """The one rounding of every published value (and of values other results derive from).

    Why: floating sums depend on the order they are added in; rounding well above that noise
    makes replays byte-identical. Levels (``*_db``) and ``occupancy_pct`` to 0.01, everything
    else (means, coverage, counts, which are whole already) to 1e-4, as stage 1 does.
    """
    digits = 2 if name.endswith("_db") or name == "occupancy_pct" else 4
    return round(float(value), digits)


def _merge_offsets(target: dict[object, int], offsets: Mapping[object, int]) -> None:
    for partition, offset in offsets.items():
        held = target.get(partition)
        if held is None or offset < held:
            target[partition] = offset


class RollupStage:
    """Per-site and daily windows from per-sensor ``Aggregate`` records (pure, no I/O).

    Times are int µs since the epoch; ``now_s`` is a monotonic clock in seconds (for the idle
    timeout only). Usage by the service: :meth:`assign` the partitions, :meth:`fold` every
    decoded record (``window_start``/``window_end`` as int µs), call :meth:`advance` after each
    poll and publish what it returns, count :meth:`late`, commit :meth:`needed_offsets`.
    """

    def __init__(
        self, settings: AggregateSettings, registry: Registry, *, kinds: Sequence[str]
    ) -> None:
        self._kinds = frozenset(kinds)
        self._grace_us = round(settings.site_grace_s * _MICROS)
        #: size_s → allowed lateness (µs) of the window definitions rolled up per site.
        self._site_windows = {
            w.size_s: round(w.allowed_lateness_s * _MICROS)
            for w in settings.windows
            if "site" in w.scopes
        }
        #: size_s → the window definition's own grace (µs): the window stage sends a sensor's
        #: result when its watermark passes end + that grace, after shorter windows ending at
        #: the same time, so a site window waits for it too.
        self._site_graces = {
            w.size_s: round(w.grace_s * _MICROS) for w in settings.windows if "site" in w.scopes
        }
        daily = settings.daily
        self._daily = daily.enabled
        self._hourly_s = next(
            (w.size_s for w in settings.windows if w.name == daily.hourly_window), 3600
        )
        self._tz = ZoneInfo(daily.timezone)
        self._daily_grace_us = round(daily.grace_s * _MICROS)
        self._daily_lateness_us = round(daily.allowed_lateness_s * _MICROS)
        self._thresholds = tuple(settings.affluence_thresholds_pct)
        self._registry = registry
        self._members: dict[tuple[str, str], int] = {}
        for sensor in registry.sensors.values():
            if sensor.site is not None:
                pair = (sensor.site, sensor.kind)
                self._members[pair] = self._members.get(pair, 0) + 1
        self._wm = Watermarks(out_of_orderness_s=0, idle_timeout_s=settings.idle_timeout_s)
        self._windows: dict[_WindowId, _Window] = {}
        self._late: list[LateInput] = []
        #: ``site:<site id>`` per site, made once.
        self._site_keys: dict[str, str] = {}

    # --- partitions and time ---------------------------------------------------------------

    def assign(self, partition: object, now_s: float) -> None:
        """A partition joins; it holds the watermark back until it delivers or is idle."""
        self._wm.assign(partition, now_s)

    def revoke(self, partition: object) -> None:
        """A partition leaves: its watermark is forgotten and every window holding an input
        read from it is dropped whole (a window without some of its inputs would be emitted
        wrong).

        The rollup group gives all partitions to one member and Kafka's eager rebalancing
        revokes all of them at once, so in practice a rebalance drops all state; the service
        commits :meth:`needed_offsets` before calling this, and whoever gets the partitions
        next replays from there.
        """
        self._wm.revoke(partition)
        for window_id in [
            wid for wid, w in self._windows.items() if any(p == partition for p, _ in w.offsets())
        ]:
            del self._windows[window_id]

    def watermark(self, now_s: float) -> int:
        """The event-time watermark (µs) over the assigned partitions."""
        return self._wm.current(now_s)

    def needed_offsets(self) -> dict[object, int]:
        """Per partition, the lowest offset of an input still held by a kept window.

        Partitions absent from the answer hold nothing: the service may commit its position.
        """
        needed: dict[object, int] = {}
        for window in self._windows.values():
            _merge_offsets(needed, _min_offsets(window))
        return needed

    def busy(self, partition: object, now_s: float) -> None:
        """``partition`` has inputs left to read: it is not idle (see :mod:`streams._watermark`)."""
        self._wm.busy(partition, now_s)

    def restore_watermark(self, watermark_us: int) -> None:
        """Start from the watermark of the last checkpoint before a restart."""
        self._wm.restore(watermark_us)

    def late(self) -> list[LateInput]:
        """The late inputs found since the last call (then forgotten)."""
        late, self._late = self._late, []
        return late

    def open_windows(self) -> int:
        return len(self._windows)

    # --- folding ---------------------------------------------------------------------------

    def fold(self, partition: object, offset: int, record: Mapping[str, Any], now_s: float) -> None:
        """Fold one per-sensor ``Aggregate`` record read at ``offset`` of ``partition``.

        Run once per sensor and window (every six measurements with 1-minute windows), so the
        common case, a sensor's final result for a site window, goes straight from the record's
        fields to its site window: no lookups repeated, the site's key made once per site.
        """
        size_s = int(record["window_size_seconds"])
        kind = str(record["kind"])
        if not record["final"] or size_s == DAY_SECONDS or kind not in self._kinds:
            return
        key = str(record["key"])
        if key.startswith(SITE_PREFIX):
            return
        site_lateness = self._site_windows.get(size_s)
        to_daily = self._daily and size_s == self._hourly_s
        if site_lateness is None and not to_daily:
            return
        start_us = int(record["window_start"])
        end_us = int(record["window_end"])
        marks = self._wm
        wm = marks.current(now_s)
        marks.observe(partition, end_us, now_s)
        values = record.get("values")
        counts = record.get("counts")
        regions = record.get("regions")
        item = _Input(
            int(record["revision"]),
            dict(values) if values else {},
            list(counts) if counts else [],
            list(regions) if regions else [],
            int(record["sample_count"]),
            {partition: offset},
        )
        input_id = (key, start_us)
        if site_lateness is not None:
            sensor = self._registry.sensors.get(key)
            if sensor is not None and sensor.site is not None and sensor.kind == kind:
                site = sensor.site
                close = end_us + self._site_graces[size_s] + self._grace_us
                if wm >= close + site_lateness:
                    self._late.append(
                        LateInput(
                            partition, offset, key, kind, start_us, size_s, "site", _EXPIRED_SITE
                        )
                    )
                else:
                    site_key = self._site_keys.get(site)
                    if site_key is None:
                        site_key = self._site_keys[site] = SITE_PREFIX + site
                    window_id = (kind, site_key, size_s, start_us)
                    window = self._windows.get(window_id)
                    if window is None:
                        window = _Window(
                            kind=kind,
                            key=site_key,
                            start_us=start_us,
                            end_us=end_us,
                            size_s=size_s,
                            close_us=close,
                            expire_us=close + site_lateness,
                            site=site,
                        )
                        self._windows[window_id] = window
                    held = window.inputs
                    current = held.get(input_id)
                    if current is None or current.revision < item.revision:  # as _put
                        held[input_id] = item
                        window.dirty = True
        if to_daily and self._fold_daily(kind, key, input_id, item, wm):
            self._late.append(
                LateInput(partition, offset, key, kind, start_us, size_s, "daily", _EXPIRED_DAY)
            )

    def _fold_daily(self, kind: str, key: str, input_id: _InputId, item: _Input, wm: int) -> bool:
        """Put an hourly input into its day and, for air, the next day's carry-over (each only
        while that day is within its allowed lateness); True when its own day is beyond it."""
        hour_us = input_id[1]
        day = ind.local_day(hour_us, self._tz)
        close = day.end_us + self._daily_grace_us
        late = wm >= close + self._daily_lateness_us
        if not late:
            window = self._daily_window(kind, key, day, close)
            _put(window.inputs, input_id, item, window)
        if kind == "air":
            following = ind.local_day(day.end_us, self._tz)
            next_close = following.end_us + self._daily_grace_us
            if (
                hour_us >= following.start_us - _OZONE_CARRY_US
                and wm < next_close + self._daily_lateness_us
            ):
                window = self._daily_window(kind, key, following, next_close)
                _put(window.carry, input_id, item, window)
        return late

    def _daily_window(self, kind: str, key: str, day: ind.LocalDay, close: int) -> _Window:
        window_id = (kind, key, DAY_SECONDS, day.start_us)
        window = self._windows.get(window_id)
        if window is None:
            window = _Window(
                kind=kind,
                key=key,
                start_us=day.start_us,
                end_us=day.end_us,
                size_s=DAY_SECONDS,
                close_us=close,
                expire_us=close + self._daily_lateness_us,
                site=None,
            )
            self._windows[window_id] = window
        return window

    # --- emitting --------------------------------------------------------------------------

    def advance(self, now_s: float) -> list[dict[str, Any]]:
        """Emit the windows closed by the watermark that changed, then drop expired ones.

        Site windows go first, so a site's hourly rollups feed the site's days in the same
        call. Returns ``Aggregate`` records (``window_start``/``window_end`` as int µs) sorted
        by (window size, window start, key, kind).
        """
        wm = self._wm.current(now_s)
        out: list[dict[str, Any]] = []
        for window in sorted(self._due(wm, daily=False), key=_order):
            record = self._emit(window)
            if record is None:
                continue
            out.append(record)
            if self._daily and window.size_s == self._hourly_s and window.site is not None:
                self._feed_site_day(window, record, wm)
        for window in sorted(self._due(wm, daily=True), key=_order):
            record = self._emit(window)
            if record is not None:
                out.append(record)
        for window_id in [wid for wid, w in self._windows.items() if wm >= w.expire_us]:
            del self._windows[window_id]
        out.sort(key=_RESULT_ORDER)
        return out

    def _feed_site_day(self, window: _Window, record: Mapping[str, Any], wm: int) -> None:
        """A site's hourly rollup, as emitted, becomes an input of the site's day."""
        item = _Input(
            revision=record["revision"],
            values=dict(record["values"]),
            counts=[dict(entry) for entry in record["counts"]],
            regions=[dict(entry) for entry in record["regions"]],
            sample_count=record["sample_count"],
            offsets=_min_offsets(window),
        )
        if self._fold_daily(window.kind, window.key, (window.key, window.start_us), item, wm):
            self._late.append(
                LateInput(
                    partition=None,
                    offset=-1,
                    key=window.key,
                    kind=window.kind,
                    window_start_us=window.start_us,
                    window_size_s=window.size_s,
                    target="daily",
                    reason=_EXPIRED_DAY,
                )
            )

    def _due(self, wm: int, *, daily: bool) -> list[_Window]:
        """Changed windows that the watermark closed, and site windows that every registered
        sensor of the site (of that kind) has reported for: those need not wait for the next
        window's results to move the watermark (a minute, for 1-minute windows)."""
        return [
            w
            for w in self._windows.values()
            if w.dirty
            and (w.size_s == DAY_SECONDS) == daily
            and (w.close_us <= wm or (not daily and self._complete(w)))
        ]

    def _complete(self, window: _Window) -> bool:
        if window.site is None:
            return False
        registered = self._members.get((window.site, window.kind), 0)
        return registered > 0 and len(window.inputs) >= registered

    def _emit(self, window: _Window) -> dict[str, Any] | None:
        window.dirty = False
        if not window.inputs:
            return None  # a day holding only the previous day's last hours
        unsorted, counts, regions = self._result(window)
        values = {name: unsorted[name] for name in sorted(unsorted)}
        sample_count = sum(item.sample_count for item in window.inputs.values())
        payload = (tuple(values.items()), _freeze(counts), _freeze(regions), sample_count)
        if payload == window.last:
            return None
        window.last = payload
        # Σ (revision + sample count) over the inputs: it grows with every change (a new input
        # holds at least one record, a replacing input has a higher revision) and is the same
        # after a replay, unlike a counter of emissions.
        window.revision = sum(item.revision + item.sample_count for item in window.inputs.values())
        return {
            "key": window.key,
            "kind": window.kind,
            "window_start": window.start_us,
            "window_end": window.end_us,
            "window_size_seconds": window.size_s,
            "revision": window.revision,
            "final": True,
            "values": values,
            "sample_count": sample_count,
            "counts": counts,
            "regions": regions,
        }

    def _result(
        self, window: _Window
    ) -> tuple[dict[str, float], list[dict[str, Any]], list[dict[str, Any]]]:
        items = [window.inputs[i] for i in sorted(window.inputs)]
        kind = window.kind
        if window.size_s != DAY_SECONDS:
            assert window.site is not None
            site = window.site
            if kind == "noise":
                return self._site_noise(items, window.size_s, site), [], []
            if kind == "air":
                return _air(items, hourly=window.size_s == 3600), [], []
            if kind == "traffic":
                return _traffic(items, all_lines=True)
            capacity = self._site_capacity(site)
            return _site_occupancy(items, capacity, self._thresholds), [], []
        day = ind.local_day(window.start_us, self._tz)
        hours = sorted(window.inputs)
        if kind == "noise":
            return _daily_noise([(h[1], window.inputs[h]) for h in hours], day, self._tz), [], []
        if kind == "air":
            values = _air(items, hourly=False)
            for quantity in ("pm2_5_ugm3", "pm10_ugm3"):
                if f"{quantity}_mean" in values:
                    values[f"{quantity}_mean_24h"] = values[f"{quantity}_mean"]
            ozone = {
                hour: item.values["o3_ugm3_mean"]
                for held in (window.carry, window.inputs)
                for (_key, hour), item in held.items()
                if "o3_ugm3_mean" in item.values
            }
            best = ind.max_daily_8h_mean(ozone, day) if ozone else None
            if best is not None:
                values["o3_max_8h_mean"] = _round("o3_max_8h_mean", best)
            return values, [], []
        if kind == "traffic":
            return _traffic(items, all_lines=False)
        if window.key.startswith(SITE_PREFIX):
            capacity = self._site_capacity(window.key[len(SITE_PREFIX) :])
            regions: list[dict[str, Any]] = []
        else:
            sensor = self._registry.get(window.key)
            capacity = sensor.capacity if sensor is not None else None
            regions = _daily_regions(items)
        return _daily_occupancy(items, capacity, self._thresholds), [], regions

    def _site_capacity(self, site: str) -> int | None:
        found = self._registry.sites.get(site)
        return found.capacity if found is not None else None

    def _site_noise(self, items: Sequence[_Input], size_s: int, site: str) -> dict[str, float]:
        """Noise over a site's sensors for one window of ``size_s`` seconds.

        - ``laeq_db`` = 10·log10( Σ tᵢ·10^(Lᵢ/10) / Σ tᵢ ), the energetic mean of the sensors'
          LAeq weighted by their measured durations tᵢ = coverageᵢ · size_s;
        - ``lamax_db`` = max of the sensors' LAmax, ``lamin_db`` = min of their LAmin;
        - ``coverage`` = Σ coverageᵢ / n, n = the site's registered noise sensors (a silent
          sensor counts 0).

        L10/L50/L90 are left out: percentile levels of different sensors do not combine (they
        would need the sensors' level histograms, which the aggregates do not carry).
        """
        values = _noise_levels([(item.values, size_s) for item in items])
        registered = self._members.get((site, "noise"), 0) or len(items)
        coverage = math.fsum(item.values.get("coverage", 0.0) for item in items) / registered
        values["coverage"] = _round("coverage", min(1.0, coverage))
        return values


def _put(held: dict[_InputId, _Input], input_id: _InputId, item: _Input, window: _Window) -> None:
    """Keep the latest revision of an input; a re-sent or older revision changes nothing."""
    current = held.get(input_id)
    if current is not None and current.revision >= item.revision:
        return
    held[input_id] = item
    window.dirty = True


def _min_offsets(window: _Window) -> dict[object, int]:
    offsets: dict[object, int] = {}
    for partition, offset in window.offsets():
        _merge_offsets(offsets, {partition: offset})
    return offsets


def _order(window: _Window) -> tuple[int, int, str, str]:
    return (window.size_s, window.start_us, window.key, window.kind)


def _freeze(rows: Sequence[Mapping[str, Any]]) -> tuple[tuple[tuple[str, Any], ...], ...]:
    return tuple(tuple(sorted(row.items())) for row in rows)


# --- noise -----------------------------------------------------------------------------------


def _noise_levels(inputs: Sequence[tuple[Mapping[str, float], float]]) -> dict[str, float]:
    """LAeq, LAmax, LAmin of (values, window seconds) inputs, each LAeq weighted by its
    measured duration ``coverage · seconds`` (coverage 1 when absent)."""
    # One pass over the inputs (a site window has one per sensor), the same lists in the
    # same order as one comprehension per list made.
    levels: list[float] = []
    durations: list[float] = []
    highs: list[float] = []
    lows: list[float] = []
    for v, s in inputs:
        if "laeq_db" in v:
            levels.append(v["laeq_db"])
            durations.append(v.get("coverage", 1.0) * s)
        if "lamax_db" in v:
            highs.append(v["lamax_db"])
        if "lamin_db" in v:
            lows.append(v["lamin_db"])
    values: dict[str, float] = {}
    laeq = ind.energetic_mean_db(levels, durations) if levels else None
    if laeq is not None:
        values["laeq_db"] = _round("laeq_db", laeq)
    if highs:
        values["lamax_db"] = _round("lamax_db", max(highs))
    if lows:
        values["lamin_db"] = _round("lamin_db", min(lows))
    return values


def _daily_noise(
    hours: Sequence[tuple[int, _Input]], day: ind.LocalDay, tz: ZoneInfo
) -> dict[str, float]:
    """A local day's noise from its hourly results (hour start, input).

    - ``ld_db``, ``le_db``, ``ln_db`` = energetic means of the hourly LAeq of the day (07-19),
      evening (19-23) and night (23-07) hours of that local day (``noise_period``), each hour
      weighted by its measured duration tₕ = coverageₕ · 3600 s;
    - ``lden_db`` = ``lden_db(Ld, Le, Ln, day_hours, evening_hours, night_hours)`` with the real
      period lengths of the day (``local_day``: 11/4/… on DST days, night 7 or 9 hours), only
      when all three periods have a level;
    - ``laeq_db`` over the whole day (same weights), ``lamax_db`` max, ``lamin_db`` min;
    - ``coverage`` = Σ tₕ / the real length of the day (23, 24 or 25 hours).
    """
    values = _noise_levels([(item.values, 3600.0) for _, item in hours])
    periods: dict[str, tuple[list[float], list[float]]] = {
        "day": ([], []),
        "evening": ([], []),
        "night": ([], []),
    }
    measured = 0.0
    for hour_us, item in hours:
        if "laeq_db" not in item.values:
            continue
        duration = item.values.get("coverage", 1.0) * 3600.0
        levels, durations = periods[ind.noise_period(hour_us, tz)]
        levels.append(item.values["laeq_db"])
        durations.append(duration)
        measured += duration
    means: dict[str, float] = {}
    for period, name in (("day", "ld_db"), ("evening", "le_db"), ("night", "ln_db")):
        levels, durations = periods[period]
        mean = ind.energetic_mean_db(levels, durations) if levels else None
        if mean is not None:
            means[name] = mean
            values[name] = _round(name, mean)
    if len(means) == 3:
        ld, le, ln = means["ld_db"], means["le_db"], means["ln_db"]
        lden = ind.lden_db(ld, le, ln, day.day_hours, day.evening_hours, day.night_hours)
        values["lden_db"] = _round("lden_db", lden)
    day_s = (day.end_us - day.start_us) / _MICROS
    values["coverage"] = _round("coverage", min(1.0, measured / day_s))
    return values


# --- air -------------------------------------------------------------------------------------


def _air(items: Sequence[_Input], *, hourly: bool) -> dict[str, float]:
    """Per quantity q over the inputs: ``q_mean`` = Σ meanᵢ·countᵢ / Σ countᵢ (count-weighted
    mean of the inputs' means, ``q_count`` the weights), ``q_min`` min, ``q_max`` max,
    ``q_count`` Σ countᵢ. An input's quantity without a positive ``q_count`` is left out.
    ``eaqi_band`` (hourly windows only) from the rounded means, as stage 1 does."""
    quantities = sorted(
        {
            name[: -len("_mean")]
            for item in items
            for name in item.values
            if name.endswith("_mean") and f"{name[: -len('_mean')]}_count" in item.values
        }
    )
    values: dict[str, float] = {}
    means: dict[str, float] = {}
    for q in quantities:
        weighted = [
            (item.values[f"{q}_mean"], item.values[f"{q}_count"])
            for item in items
            if f"{q}_mean" in item.values and item.values.get(f"{q}_count", 0) > 0
        ]
        if not weighted:
            continue
        total = math.fsum(count for _, count in weighted)
        mean = _round(f"{q}_mean", math.fsum(m * c for m, c in weighted) / total)
        means[q] = mean
        values[f"{q}_mean"] = mean
        lows = [item.values[f"{q}_min"] for item in items if f"{q}_min" in item.values]
        highs = [item.values[f"{q}_max"] for item in items if f"{q}_max" in item.values]
        if lows:
            values[f"{q}_min"] = _round(f"{q}_min", min(lows))
        if highs:
            values[f"{q}_max"] = _round(f"{q}_max", max(highs))
        values[f"{q}_count"] = total
    if hourly:
        band = ind.eaqi_band(means)
        if band is not None:
            values["eaqi_band"] = float(band)
    return values


# --- traffic ---------------------------------------------------------------------------------


def _class_order(name: str) -> tuple[int, str]:
    return (TRAFFIC_CLASSES.index(name) if name in TRAFFIC_CLASSES else len(TRAFFIC_CLASSES), name)


def _traffic(
    items: Sequence[_Input], *, all_lines: bool
) -> tuple[dict[str, float], list[dict[str, Any]], list[dict[str, Any]]]:
    """Traffic counts summed per (line, direction, class) over the inputs; with ``all_lines``
    (site windows) every line is reported as line 0, meaning "all lines of all the site's
    sensors". Every value (``<class>_count``, ``total_count``, ``counter_resets``) is summed.
    Entries with a null ``count`` (cumulative only) are left out."""
    sums: dict[tuple[int, str, str], int] = {}
    for item in items:
        for entry in item.counts:
            if entry.get("count") is None:
                continue
            triple = (
                0 if all_lines else int(entry["line"]),
                str(entry["direction"]),
                str(entry["traffic_class"]),
            )
            sums[triple] = sums.get(triple, 0) + int(entry["count"])
    counts = [
        {
            "line": line,
            "direction": direction,
            "traffic_class": traffic_class,
            "count": total,
            "cumulative": None,
        }
        for (line, direction, traffic_class), total in sorted(
            sums.items(),
            key=lambda kv: (kv[0][0], _DIRECTIONS.index(kv[0][1]), _class_order(kv[0][2])),
        )
    ]
    names = sorted({name for item in items for name in item.values})
    values = {
        name: _round(name, math.fsum(item.values.get(name, 0.0) for item in items))
        for name in names
    }
    return values, counts, []


# --- occupancy -------------------------------------------------------------------------------


def _occupancy_rates(
    values: dict[str, float], capacity: int | None, thresholds: Sequence[float]
) -> None:
    if "people_mean" not in values:
        return
    pct = ind.occupancy_pct(values["people_mean"], capacity)
    if pct is not None:
        values["occupancy_pct"] = _round("occupancy_pct", pct)
        values["affluence"] = float(ind.affluence_level(values["occupancy_pct"], thresholds))


def _site_occupancy(
    items: Sequence[_Input], capacity: int | None, thresholds: Sequence[float]
) -> dict[str, float]:
    """People at a site: ``people_mean`` = Σ of the sensors' people_mean; ``people_max`` = Σ of
    their people_max, an upper bound (the sensors' maxima need not be simultaneous);
    ``occupancy_pct`` = 100 · people_mean / the site's registry capacity and ``affluence`` its
    level, both left out when the capacity is unknown. Regions are per sensor and are not
    combined (none in site results)."""
    values: dict[str, float] = {}
    means = [item.values["people_mean"] for item in items if "people_mean" in item.values]
    if means:
        values["people_mean"] = _round("people_mean", math.fsum(means))
    maxima = [item.values["people_max"] for item in items if "people_max" in item.values]
    if maxima:
        values["people_max"] = _round("people_max", math.fsum(maxima))
    _occupancy_rates(values, capacity, thresholds)
    return values


def _daily_occupancy(
    items: Sequence[_Input], capacity: int | None, thresholds: Sequence[float]
) -> dict[str, float]:
    """A day's occupancy from hourly results: ``people_mean`` = Σ meanₕ·nₕ / Σ nₕ (nₕ the
    hour's sample_count), ``people_max`` = max, ``occupancy_pct``/``affluence`` as for a
    window, against the sensor's capacity (sensor keys) or the site's (site keys)."""
    values: dict[str, float] = {}
    weighted = [
        (item.values["people_mean"], item.sample_count)
        for item in items
        if "people_mean" in item.values and item.sample_count > 0
    ]
    if weighted:
        total = sum(n for _, n in weighted)
        values["people_mean"] = _round("people_mean", math.fsum(m * n for m, n in weighted) / total)
    maxima = [item.values["people_max"] for item in items if "people_max" in item.values]
    if maxima:
        values["people_max"] = _round("people_max", max(maxima))
    _occupancy_rates(values, capacity, thresholds)
    return values


def _daily_regions(items: Sequence[_Input]) -> list[dict[str, Any]]:
    """Per region over a sensor's day: mean_count = Σ meanₕ·nₕ / Σ nₕ over all the day's hours
    (an hour without the region counts 0, as stage 1 counts a record without it), max_count max.
    """
    total = sum(item.sample_count for item in items)
    sums: dict[int, list[float]] = {}
    maxima: dict[int, int] = {}
    for item in items:
        for region in item.regions:
            r = int(region["region"])
            sums.setdefault(r, []).append(float(region["mean_count"]) * item.sample_count)
            maxima[r] = max(maxima.get(r, 0), int(region["max_count"]))
    if total <= 0:
        return []
    return [
        {
            "region": r,
            "mean_count": _round("mean_count", math.fsum(sums[r]) / total),
            "max_count": maxima[r],
        }
        for r in sorted(sums)
    ]
