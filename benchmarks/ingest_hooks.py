"""What ingest's fleet-health hook costs per message: ``IngestService.handle``, hook on and off.

The messages are the ``nation`` scenario's (the simulator's ``Fleet``, LoRaWAN envelopes and
direct payloads as they arrive over MQTT), handed to ``IngestService.handle`` in process with a
Kafka batcher that drops what it is given: MQTT and Kafka are left out, so the figure is the
stage's own CPU per message, where the hook's share shows most. Duplicate detection is off (the
same messages are handled again and again). Each repetition runs ``MESSAGES`` messages through
each variant back to back (in alternating order), in µs of process CPU time per message; the
figures are the medians over ``REPETITIONS`` repetitions and the hook's cost is the median of
the paired differences, so that both variants meet the same machine load (on a shared machine
single runs vary by more than the hook costs):

- ``off``: ``ingest.fleet_refresh_s = 0``, no fleet health (the switch);
- ``on``: the default: each accepted measurement stored under its sensor id for the refresh.

The refresh task's own work (the RSSI/SNR histograms of what was heard, the silent and
low-battery counts over the registry) runs once every ``fleet_refresh_s`` (5 s), not per
message; it is timed per call here and spread over the messages of 5 s at 20,000 msg/s (the
ingest target of issue 4), and timed again for a city-sized registry (``CITY_SENSORS``), as it
walks the whole registry on ingest's event loop.

The garbage collector is set as the stages run it. Whether the hot modules run compiled (``make
native``) is printed with the results.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import table
from benchmarks.decode_encode import _compiled, fleet_samples
from citysense.registry import Registry
from citysense.runtime import GC_YOUNG_THRESHOLD
from citysense.settings import IngestSettings, Settings
from ingest import Incoming, IngestService
from ingest._fleet import FleetHealth
from ingest._records import KafkaRecord

MESSAGES = 5_000
REPETITIONS = 41
#: Messages handled between two ``flush_metrics`` calls (the listener's read budget).
READ_BUDGET = 64
#: The rate over which one refresh is spread (ingest's target, issue 4) and the refresh period.
RATE = 20_000
REFRESH_S = 5.0
#: Registered sensors of a city, for the refresh's cost (it walks the whole registry).
CITY_SENSORS = 20_000


class _NullBatcher:
    """Takes records and forgets them: Kafka is not what is measured."""

    def add(self, _record: KafkaRecord, _done: Callable[[], None]) -> None:
        return None


def _nothing() -> None:
    return None


def _service(fleet_refresh_s: float) -> IngestService:
    registry, _ = fleet_samples()
    settings = Settings(ingest=IngestSettings(duplicate_window=0, fleet_refresh_s=fleet_refresh_s))
    service = IngestService(settings, registry)
    service._batcher = _NullBatcher()  # type: ignore[assignment]
    return service


def _incomings() -> list[Incoming]:
    _, samples = fleet_samples()
    pool = [Incoming(s.topic, s.body, s.received_at, {}) for s in samples]
    return [pool[i % len(pool)] for i in range(MESSAGES)]


def _run(service: IngestService, messages: Sequence[Incoming]) -> float:
    """µs of process CPU per message for ``handle`` (with the metric flush of each read)."""
    handle = service.handle
    flush = service.flush_metrics
    started = time.process_time()
    for start in range(0, len(messages), READ_BUDGET):
        for incoming in messages[start : start + READ_BUDGET]:
            handle(incoming, _nothing)
        flush()
    return (time.process_time() - started) / len(messages) * 1e6


def _refresh_us(fleet: FleetHealth, service: IngestService, messages: Sequence[Incoming]) -> float:
    """µs of CPU for one refresh after a period in which every sensor was heard."""
    timings = []
    for _ in range(REPETITIONS):
        for incoming in messages[:2_000]:
            service.handle(incoming, _nothing)
        started = time.process_time()
        fleet.take_heard()
        fleet.refresh()
        timings.append((time.process_time() - started) * 1e6)
    return statistics.median(timings)


def _city_refresh_ms(service: IngestService) -> float:
    """ms of CPU for one refresh with ``CITY_SENSORS`` registered sensors, the twelfth of them
    heard since the last one (a 60 s reporting interval, a 5 s refresh period): the nation
    sensors repeated under new ids, each heard with one of the nation's measurements."""
    fleet = service._fleet
    assert fleet is not None
    registry = fleet._registry
    base = list(registry.sensors.values())
    sensors = [
        base[i % len(base)].model_copy(
            update={"id": f"{base[i % len(base)].id}-{i}", "dev_eui": None}
        )
        for i in range(CITY_SENSORS)
    ]
    accepted = list(fleet.heard.values())
    assert accepted, "the nation's measurements were taken already"
    city = FleetHealth(Registry(sensors, list(registry.sites.values())))
    timings = []
    for _ in range(REPETITIONS):
        city.heard = {
            s.id: accepted[i % len(accepted)] for i, s in enumerate(sensors[: CITY_SENSORS // 12])
        }
        started = time.process_time()
        city.take_heard()
        city.refresh()
        timings.append((time.process_time() - started) * 1e3)
    return statistics.median(timings)


def main() -> dict[str, Any]:
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    try:
        return _main()
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _main() -> dict[str, Any]:
    messages = _incomings()
    services = {"off": _service(0), "on": _service(REFRESH_S)}
    gc.collect()
    gc.freeze()
    for service in services.values():  # warm up: label children, caches
        _run(service, messages[:2_000])
    runs: dict[str, list[float]] = {name: [] for name in services}
    order = list(services)
    for repetition in range(REPETITIONS):
        for name in order if repetition % 2 == 0 else order[::-1]:
            service = services[name]
            runs[name].append(_run(service, messages))
            fleet = service._fleet
            if fleet is not None:  # what the refresh task would have taken meanwhile
                fleet.take_heard()
    off = statistics.median(runs["off"])
    on = statistics.median(runs["on"])
    hook = statistics.median(b - a for a, b in zip(runs["off"], runs["on"], strict=True))
    fleet = services["on"]._fleet
    assert fleet is not None
    refresh = _refresh_us(fleet, services["on"], messages)
    for incoming in messages[:2_000]:  # every nation sensor heard once, for the city's copies
        services["on"].handle(incoming, _nothing)
    city_ms = _city_refresh_ms(services["on"])
    refresh_per_message = refresh / (RATE * REFRESH_S)
    sensors = len(fleet._registry.sensors)
    print(
        table(
            ["variant", "median µs CPU / message", "fastest run"],
            [
                ["hook off (fleet_refresh_s = 0)", off, min(runs["off"])],
                ["hook on (default)", on, min(runs["on"])],
            ],
            title=(
                f"IngestService.handle, nation scenario ({sensors} sensors), median of "
                f"{REPETITIONS} x {MESSAGES:,} messages; hot modules: {_compiled()}"
            ),
        )
    )
    print(
        f"hook: {hook:+.3f} µs per message (median of paired differences, "
        f"{hook / off * 100:+.1f} %); one refresh "
        f"({sensors} sensors): {refresh:.0f} µs, {refresh_per_message:.4f} µs per message at "
        f"{RATE:,} msg/s every {REFRESH_S:g} s; at {CITY_SENSORS:,} sensors: {city_ms:.1f} ms "
        f"(the event loop is held that long every {REFRESH_S:g} s)"
    )
    return {
        "messages": MESSAGES,
        "repetitions": REPETITIONS,
        "compiled": _compiled(),
        "off_us": off,
        "on_us": on,
        "hook_us": hook,
        "runs_us": runs,
        "refresh_us": refresh,
        "refresh_us_per_message": refresh_per_message,
        "sensors": sensors,
        "city_sensors": CITY_SENSORS,
        "city_refresh_ms": city_ms,
        "comparisons": [
            {
                "figure": "ingest handle, fleet-health hook on",
                "value": on,
                "unit": "µs CPU/message",
                "versus": "hook off (fleet_refresh_s = 0)",
                "versus_value": off,
            }
        ],
    }
