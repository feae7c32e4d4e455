"""The broker's CPU per record: records per partition batch, and the consumers' fetch settings.

The end-to-end benchmark puts the embedded Tansu broker among the largest CPU users per message
(``benchmarks/end_to_end.py``). Here, on a private Tansu (the project's ``Stack``, Kafka only, a
fresh broker per configuration), one producer writes ``RATE`` records/s
(``CITYSENSE_BENCH_BROKER_RATE``, default 3,000) of 150 bytes for ``DURATION_S`` seconds
(``CITYSENSE_BENCH_BROKER_SECONDS``, default 20) to 4 topics of 6 partitions, the pipeline's
measurement topics, while two consumers (the aggregator's and the sink's share) read them all.
Each round sends one batch of ``batch`` records to every partition, as ingest does, and waits
for the acknowledgements. The figure is the broker process's CPU time (psutil) over the load,
per record written: where its cores go at that rate. Configurations:

- records per partition batch 16 (what ingest sent at 3,000 msg/s in the end-to-end run: about
  25 produce requests and 156 partition batches a second) and 64;
- the consumers' ``[kafka] fetch_min_bytes`` / ``fetch_max_wait_ms``: 1 byte / 500 ms (the
  default) and 64 KiB / 100 ms.

Each configuration runs ``RUNS`` times (``CITYSENSE_BENCH_BROKER_RUNS``, default 2), the order
reversed on every other round so that a shared machine's load falls on all alike; the table has
the medians. No target: the figures say which knob moves the broker's CPU
(docs/architecture.md#kafka-requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import psutil

from benchmarks import table
from citysense.clients import ensure_topics, kafka_consumer, kafka_producer
from citysense.settings import KafkaSettings
from citysense.stack import temporary_stack

__all__ = ["main"]

RATE = float(os.environ.get("CITYSENSE_BENCH_BROKER_RATE", "3000"))
DURATION_S = float(os.environ.get("CITYSENSE_BENCH_BROKER_SECONDS", "20"))
RUNS = int(os.environ.get("CITYSENSE_BENCH_BROKER_RUNS", "2"))
TOPICS = tuple(f"city.{kind}.measurements.v1" for kind in ("noise", "air", "traffic", "occupancy"))
PARTITIONS = 6
VALUE = bytes(range(150))
CONSUMERS = 2


@dataclass(frozen=True)
class Config:
    batch: int
    fetch_min_bytes: int
    fetch_max_wait_ms: int

    @property
    def label(self) -> str:
        return f"batch {self.batch}, fetch {self.fetch_min_bytes} B / {self.fetch_max_wait_ms} ms"


CONFIGS = (Config(16, 1, 500), Config(64, 1, 500), Config(16, 65_536, 100))


async def _consume(settings: KafkaSettings, stop: asyncio.Event, counted: list[int]) -> None:
    consumer = kafka_consumer(settings, *TOPICS, group_id=None)
    await consumer.start()
    try:
        while not stop.is_set():
            polled = await consumer.getmany(timeout_ms=200, max_records=20_000)
            counted[0] += sum(len(records) for records in polled.values())
    finally:
        await consumer.stop()


async def _load(settings: KafkaSettings, config: Config, broker: psutil.Process) -> dict[str, Any]:
    await ensure_topics(settings, TOPICS)
    producer = kafka_producer(settings, linger_ms=0)
    await producer.start()
    stop = asyncio.Event()
    counts = [[0] for _ in range(CONSUMERS)]
    readers = [asyncio.create_task(_consume(settings, stop, c)) for c in counts]
    try:
        await asyncio.sleep(2)  # the consumers joined and fetch
        partitions = [(topic, p) for topic in TOPICS for p in range(PARTITIONS)]
        per_round = config.batch * len(partitions)
        before = broker.cpu_times()
        started = time.monotonic()
        due = started
        sent = 0
        while time.monotonic() - started < DURATION_S:
            acks = []
            for topic, partition in partitions:
                builder = producer.create_batch()
                for i in range(config.batch):
                    builder.append(key=b"sensor-%d" % i, value=VALUE, timestamp=None)
                acks.append(await producer.send_batch(builder, topic, partition=partition))
            await asyncio.gather(*acks)
            sent += per_round
            due += per_round / RATE
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        for _ in range(100):  # at most 10 s for the consumers to read the last rounds
            if min(c[0] for c in counts) >= sent:
                break
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        after = broker.cpu_times()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.gather(*readers)
        await producer.stop()
    cpu_s = (after.user + after.system) - (before.user + before.system)
    return {
        "records": sent,
        "records_per_s": sent / elapsed,
        "consumed": [c[0] for c in counts],
        "broker_cpu_s": cpu_s,
        "broker_cpu_us_per_record": cpu_s * 1e6 / sent,
    }


def _run(config: Config) -> dict[str, Any]:
    with temporary_stack("citysense-bench-broker-", only=("kafka",)) as stack:
        pid = next(s.pid for s in stack.status() if s.name == "kafka" and s.running)
        assert pid is not None
        settings = KafkaSettings(
            bootstrap=stack.env()["CITYSENSE_KAFKA_BOOTSTRAP"],
            idempotence=False,
            fetch_min_bytes=config.fetch_min_bytes,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
        )
        return asyncio.run(_load(settings, config, psutil.Process(pid)))


def main() -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {c.label: [] for c in CONFIGS}
    for round_ in range(RUNS):
        order = CONFIGS if round_ % 2 == 0 else tuple(reversed(CONFIGS))
        for config in order:
            result = _run(config)
            runs[config.label].append(result)
            print(
                f"  {config.label}: {result['records_per_s']:,.0f} rec/s, broker "
                f"{result['broker_cpu_us_per_record']:.1f} µs/record",
                flush=True,
            )
    rows = []
    figures: dict[str, Any] = {"rate": RATE, "duration_s": DURATION_S, "runs": runs}
    medians: dict[str, float] = {}
    for config in CONFIGS:
        results = runs[config.label]
        medians[config.label] = statistics.median(r["broker_cpu_us_per_record"] for r in results)
        rows.append(
            [
                config.label,
                statistics.median(r["records_per_s"] for r in results),
                medians[config.label],
                ", ".join(f"{r['broker_cpu_us_per_record']:.1f}" for r in results),
            ]
        )
    figures["broker_cpu_us_per_record"] = medians
    reference = CONFIGS[0].label
    figures["comparisons"] = [
        {
            "figure": f"broker CPU per record, {label}",
            "value": value,
            "unit": "µs",
            "versus": reference,
            "versus_value": medians[reference],
        }
        for label, value in medians.items()
        if label != reference
    ]
    figures["summary"] = ", ".join(
        f"{label}: {value:.1f} µs/record" for label, value in medians.items()
    )
    print(table(["configuration", "records/s", "broker µs/record", "runs"], rows))
    return figures


if __name__ == "__main__":
    main()
