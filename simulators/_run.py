"""Run the fleet: pace messages to a rate, publish at QoS 1, report a JSON summary.

``run_simulation`` drives one process; with ``processes > 1`` it starts that many worker
processes (each with its own seed, client id and share of the rate and message budget) and sums
their summaries. The summary is what the broker acknowledged: ``sent`` counts every published
message (``malformed`` included), ``late`` the valid ones whose event time is minutes old.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from citysense.registry import load_registry
from citysense.settings import MqttSettings
from simulators._fleet import Fleet
from simulators._publisher import Publisher
from simulators._vehicles import load_routes

__all__ = ["SimulationSpec", "run_simulation"]


@dataclass(frozen=True)
class SimulationSpec:
    registry_path: Path
    mqtt: MqttSettings
    seed: int = 0
    #: Messages per second; 0 means as fast as the broker acknowledges.
    rate: float = 50.0
    duration_s: float | None = None
    messages: int | None = None
    bad_ratio: float = 0.0
    late_ratio: float = 0.0
    processes: int = 1
    client_id: str = "citysense-simulator"
    max_inflight: int = 1000
    #: The publisher's ``mqtt-publish`` fast path (``Settings.fast``).
    fast: bool = True


def _worker(spec: SimulationSpec, index: int) -> dict[str, Any]:
    fleet = Fleet(
        load_registry(spec.registry_path),
        seed=spec.seed * 1000 + index,
        bad_ratio=spec.bad_ratio,
        late_ratio=spec.late_ratio,
        routes=load_routes(spec.registry_path),
    )
    share = spec.processes
    rate = spec.rate / share
    budget = None
    if spec.messages is not None:
        budget = spec.messages // share + (1 if index < spec.messages % share else 0)
    started = time.monotonic()
    deadline = started + spec.duration_s if spec.duration_s is not None else None
    # Batches of ~5 ms of traffic keep pacing smooth without a syscall per message.
    batch = max(1, min(500, int(rate / 200))) if rate > 0 else 200
    with Publisher(
        spec.mqtt, f"{spec.client_id}-{index}", spec.max_inflight, fast=spec.fast
    ) as publisher:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if budget is not None and fleet.stats.sent >= budget:
                break
            size = batch if budget is None else min(batch, budget - fleet.stats.sent)
            if rate > 0:
                due = started + (fleet.stats.sent + size) / rate
                if due > now:
                    time.sleep(min(due - now, 0.05))
                    continue
            publisher.publish_batch(fleet.next_batch(size))
        publisher.wait_acked()
        elapsed = time.monotonic() - started
    summary = fleet.stats.as_dict()
    summary["elapsed_s"] = elapsed
    return summary


def run_simulation(spec: SimulationSpec) -> dict[str, Any]:
    """Publish the fleet as ``spec`` says; returns the summary."""
    if spec.duration_s is None and spec.messages is None:
        raise ValueError("give a duration or a number of messages")
    if spec.processes == 1:
        parts = [_worker(spec, 0)]
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(spec.processes) as pool:
            parts = pool.starmap(_worker, [(spec, i) for i in range(spec.processes)])
    by_kind: Counter[str] = Counter()
    for part in parts:
        by_kind.update(part["by_kind"])
    elapsed = max(part["elapsed_s"] for part in parts)
    sent = sum(int(part["sent"]) for part in parts)
    return {
        "sent": sent,
        "malformed": sum(int(part["malformed"]) for part in parts),
        "late": sum(int(part["late"]) for part in parts),
        "by_kind": dict(sorted(by_kind.items())),
        "rate": round(sent / elapsed, 1) if elapsed > 0 else 0.0,
    }
