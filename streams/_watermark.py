"""Event-time watermarks: how far a consumer's input has certainly got.

Contract: docs/architecture.md#windows-and-indicators.

Each partition's watermark is the largest event time it has delivered minus the bounded
out-of-orderness: a record older than that is assumed not to come any more, and one that still
does is *late*. The consumer's watermark is the minimum over its partitions, because one slow
partition may still deliver old records. Two refinements, after the failures users of other
stream processors report most (windows that never close when a key or partition goes quiet):

- a partition that has delivered nothing for ``idle_timeout_s`` of wall time, and has nothing
  left to deliver (the consumer is at its end, :meth:`Watermarks.busy` says otherwise), stops
  holding the consumer's watermark back; it counts again as soon as it delivers;
- a partition that has never delivered anything counts as idle from its assignment on, for the
  same timeout, so an empty partition never blocks the others.

When every partition is idle the watermark stays where the busiest of them left it: time never
advances on wall clock alone, so a replay of old data is never judged late because the machine's
clock is ahead. Only event time (observed_at) and the monotonic clock passed in by the caller
enter the computation, which keeps this module pure and testable with made-up clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NO_WATERMARK", "Watermarks"]

#: The watermark before any record was seen: below every real event time.
NO_WATERMARK = -(1 << 62)


@dataclass(slots=True)
class _Partition:
    max_event_us: int
    last_active_s: float


class Watermarks:
    """Per-partition watermarks with an idle timeout, combined by minimum.

    Partitions are any hashable ids (the service uses aiokafka ``TopicPartition``);
    ``now_s`` is a monotonic clock reading in seconds, given by the caller.
    """

    def __init__(self, out_of_orderness_s: float, idle_timeout_s: float) -> None:
        if out_of_orderness_s < 0 or idle_timeout_s <= 0:
            raise ValueError("out_of_orderness_s must be >= 0 and idle_timeout_s > 0")
        self._bound_us = round(out_of_orderness_s * 1_000_000)
        self._idle_s = idle_timeout_s
        self._partitions: dict[object, _Partition] = {}
        self._floor = NO_WATERMARK
        #: (now_s, result) of the last :meth:`current`, dropped by every change of a partition:
        #: the rollup asks once per input record, mostly with nothing changed in between.
        self._cached: tuple[float, int] | None = None

    def assign(self, partition: object, now_s: float) -> None:
        """A partition joins; it holds the watermark back until it is idle or delivers."""
        if partition not in self._partitions:
            self._partitions[partition] = _Partition(NO_WATERMARK, now_s)
            self._cached = None

    def revoke(self, partition: object) -> None:
        if self._partitions.pop(partition, None) is not None:
            self._cached = None

    def observe(self, partition: object, max_event_us: int, now_s: float) -> None:
        """``partition`` delivered records whose largest event time is ``max_event_us``."""
        state = self._partitions.get(partition)
        if state is None:
            self._partitions[partition] = _Partition(max_event_us, now_s)
            self._cached = None
            return
        if max_event_us > state.max_event_us:
            state.max_event_us = max_event_us
            self._cached = None
        if state.last_active_s != now_s:
            state.last_active_s = now_s
            self._cached = None

    def busy(self, partition: object, now_s: float) -> None:
        """``partition`` still has records to deliver (the consumer is behind its end): it is
        not idle, however long since it delivered (a consumer catching up a backlog may not
        fetch every partition every few seconds)."""
        state = self._partitions.get(partition)
        if state is not None and state.last_active_s != now_s:
            state.last_active_s = now_s
            self._cached = None

    def partition_watermark(self, partition: object) -> int:
        state = self._partitions.get(partition)
        if state is None or state.max_event_us == NO_WATERMARK:
            return NO_WATERMARK
        return state.max_event_us - self._bound_us

    def idle(self, partition: object, now_s: float) -> bool:
        state = self._partitions.get(partition)
        return state is None or now_s - state.last_active_s >= self._idle_s

    def current(self, now_s: float) -> int:
        """The consumer's watermark: never decreases, whatever the partitions do."""
        cached = self._cached
        if cached is not None and cached[0] == now_s:
            return cached[1]
        active = [
            self.partition_watermark(p)
            for p, state in self._partitions.items()
            if now_s - state.last_active_s < self._idle_s
        ]
        if active:
            candidate = min(active)
        else:
            known = [self.partition_watermark(p) for p in self._partitions]
            candidate = max(known, default=NO_WATERMARK)
        if candidate > self._floor:
            self._floor = candidate
        self._cached = (now_s, self._floor)
        return self._floor

    def restore(self, watermark_us: int) -> None:
        """Start from a watermark reached before a restart (it only ever moves forward)."""
        if watermark_us > self._floor:
            self._floor = watermark_us
            self._cached = None
