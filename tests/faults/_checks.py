"""The invariants, checked against the load's own record of what it sent.

- every acknowledged valid message is on a measurement topic under its idempotency key, all its
  records there name one row, and that row is in TimescaleDB (the primary key makes it once);
- every acknowledged malformed message is in ``city.deadletter.v1`` once per PUBLISH, with a
  reason;
- the records the aggregator declares late are late messages of the load (the others are in
  their windows: see ``_recompute``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg

import schemas
from simulators import Outgoing
from tests.faults._load import Load, Sent, idempotency_key
from tests.faults._tap import KafkaTap, digest

__all__ = ["Ledger", "measurement_rows"]

RAW_TABLES = (
    "noise_measurements",
    "air_measurements",
    "traffic_measurements",
    "occupancy_measurements",
)


def stamped_natural(message: Outgoing) -> tuple[str, int] | None:
    """(sensor_id, observed_at µs) of a direct message that carries its event time."""
    if message.topic.startswith(("application/", "v3/")):
        return None
    observed_at = dict(message.user_properties).get("observed_at")
    if observed_at is None:
        return None
    return message.topic.split("/")[-2], schemas.epoch_micros(datetime.fromisoformat(observed_at))


def measurement_rows(database_url: str) -> set[tuple[str, int]]:
    """Every raw row's natural key (sensor_id, time in µs)."""
    rows: set[tuple[str, int]] = set()
    with psycopg.connect(database_url) as conn:
        for table in RAW_TABLES:
            cursor = conn.execute(
                f"SELECT sensor_id, (extract(epoch FROM time) * 1000000)::bigint FROM {table}"
            )
            rows.update((str(s), int(t)) for s, t in cursor.fetchall())
    return rows


class Ledger:
    """What the loads of the module sent, scenario after scenario."""

    def __init__(self) -> None:
        self.loads: list[Load] = []
        #: (topic, payload digest) of acknowledged malformed PUBLISHes, over every scenario.
        self.bad: Counter[tuple[str, str]] = Counter()
        #: Identities sent while a dead letter could be produced twice: ingest killed between
        #: producing it and its PUBACK, or Kafka's answer lost and the producer retrying (the
        #: embedded broker has no idempotent producer to drop the second copy).
        self.at_least_once: set[tuple[str, str]] = set()

    def add(self, load: Load, *, at_least_once: bool = False) -> None:
        assert load.error is None, load.error
        self.loads.append(load)
        for sent in load.sent:
            if sent.tag == "bad" and load.acked[id(sent.message)] and not sent.duplicate:
                identity = (sent.message.topic, digest(sent.message.payload))
                self.bad[identity] += 1
                if at_least_once:
                    self.at_least_once.add(identity)

    @staticmethod
    def owed(load: Load) -> list[Sent]:
        """The valid messages the broker acknowledged (first deliveries only)."""
        return [
            s
            for s in load.sent
            if s.tag != "bad" and not s.duplicate and load.acked[id(s.message)] > 0
        ]

    def check_delivered(
        self, load: Load, tap: KafkaTap, stored_rows: Callable[[], set[tuple[str, int]]]
    ) -> dict[str, int]:
        """Waits for the load's messages to reach Kafka and TimescaleDB; asserts the invariants
        of delivery; returns counts for the report."""
        owed = self.owed(load)
        assert owed, "the load sent nothing valid"
        keys = {idempotency_key(s.message): s for s in owed}
        deadline = time.monotonic() + 240
        while True:
            assert tap.error is None, repr(tap.error)
            with tap.lock:
                missing = [k for k in keys if k not in tap.index.measurements]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not missing, f"{len(missing)} acknowledged, never in Kafka: {missing[:5]}"
        with tap.lock:
            naturals = {k: set(tap.index.measurements[k]) for k in keys}
        wanted: set[tuple[str, int]] = set()
        split = {}
        for key, sent in keys.items():
            stamped = stamped_natural(sent.message)
            if stamped is not None:
                # A direct message's id is its sensor's counter, reused by the next load's
                # fleet: its row is the one its own event time names.
                assert stamped in naturals[key], (key, stamped, naturals[key])
                wanted.add(stamped)
            elif len(naturals[key]) != 1:
                split[key] = naturals[key]
            else:
                wanted |= naturals[key]
        assert not split, f"messages that became more than one row: {list(split.items())[:5]}"
        while True:
            absent = wanted - stored_rows()
            if not absent or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not absent, f"{len(absent)} acknowledged, not in TimescaleDB: {list(absent)[:5]}"
        return {"owed": len(owed), "rows": len(wanted), "sent": len(load.sent)}

    def check_dead_letters(self, tap: KafkaTap) -> None:
        """Each acknowledged malformed PUBLISH is dead-lettered once, with its reason; more than
        once only where delivery is at-least-once (see ``at_least_once``)."""
        deadline = time.monotonic() + 120
        while True:
            with tap.lock:
                got = {i: list(tap.index.dead_letters.get(i, [])) for i in self.bad}
            short = {i: (n, len(got[i])) for i, n in self.bad.items() if len(got[i]) < n}
            if not short or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not short, f"malformed messages not dead-lettered: {list(short.items())[:5]}"
        twice = {
            i: (n, len(got[i]))
            for i, n in self.bad.items()
            if len(got[i]) > n and i not in self.at_least_once
        }
        assert not twice, f"dead-lettered more than once: {list(twice.items())[:5]}"
        assert all(reason for reasons in got.values() for reason in reasons)

    def check_late(self, tap: KafkaTap) -> dict[str, int]:
        """Late records are late messages; messages late beyond every allowance are all there."""
        late_keys: dict[tuple[str, int], Sent] = {}
        on_time: set[tuple[str, int]] = set()
        with tap.lock:
            measurements = dict(tap.index.measurements)
            declared = set(tap.index.late)
        for load in self.loads:
            for sent in self.owed(load):
                stamped = stamped_natural(sent.message)
                found = measurements.get(idempotency_key(sent.message), set())
                for natural in [stamped] if stamped is not None else found:
                    if sent.tag == "late":
                        late_keys[natural] = sent
                    else:
                        on_time.add(natural)
        wrongly = declared & on_time
        assert not wrongly, f"on-time records declared late: {list(wrongly)[:5]}"
        # A late message not declared late must be counted in its window: the recomputation
        # (``_recompute``) folds every record not declared late, so a late record dropped
        # silently would make a stored window differ from it.
        return {"late_sent": len(late_keys), "declared": len(declared & set(late_keys))}


def summary(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())
