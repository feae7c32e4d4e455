"""Stream aggregation: ``citysense aggregate`` against Quix Streams, throughput, RSS, emit delay.

In one run, on a private Tansu broker (the project's ``Stack``, Kafka only), on the same topic
contents:

1. input: ``RECORDS`` noise measurements (``CITYSENSE_BENCH_AGG_RECORDS``, default 2,000,000)
   from 1,000 sensors (``bench-noise-0001`` …, 20 sites), Avro single-object frames as ingest
   writes them, key = sensor id, partitioned as ingest does (murmur2). Each sensor reports every
   10 s of event time, so 1,000 records per 10 s; the order is shuffled within ``SHUFFLE_S``
   seconds. Produced once, before the timed phases, ending at about "now";
2. peer: a Quix Streams ``Application`` (in a subprocess) reading the same topic with a custom
   deserializer (``schemas.decode``) and a timestamp extractor from ``observed_at``, computing a
   1-minute tumbling mean of ``laeq_db`` and a count per sensor, ``.final()``, to an output topic.
   Its changelog topics stay on (Quix's default); ``TopicManager.derive_topic_config`` is
   replaced in that subprocess only, because Tansu reports no ``retention.ms``. Counted by a
   ``.update()`` step incrementing an integer (one cheap call per record next to Quix's own
   per-record work): records/s from its first record to its last;
3. ``citysense aggregate`` (a subprocess, settings by environment) with 1-minute windows, then
   1-hour windows, in the default scopes (per sensor, and per site once the rollup stage exists;
   the table names them), ``RUNS`` times each (``CITYSENSE_BENCH_AGG_RUNS``, default 3), from the
   start of the topic with fresh consumer groups and freshly recreated output topics: records/s
   from the first record it counted (``citysense_aggregate_records_total``, polled on
   ``/metrics`` every ``POLL_S``) to the N-th; the median run is shown;
4. peak RSS of each process (psutil, sampled every ``RSS_EVERY_S``, children included);
5. emit delay: on a fresh broker, ``PACED_S`` seconds of records at ``PACED_RATE`` records/s with
   event time = wall clock, 1-minute windows with ``grace_s`` ``GRACE_S``; for each final
   aggregate read back, (its Kafka timestamp, and separately the time it was received) minus
   (window end + grace), in wall time, per sensor and per site windows. This includes the
   aggregator's default out-of-orderness bound (the watermark trails the newest event time by
   it), so the table also shows the delays less that bound: the time past the moment the
   watermark itself passed window end + grace. Skipped when ``CITYSENSE_BENCH_AGG_PACED_S`` is 0.

The same 1-minute windows are also run in the ``sensor`` scope alone (phase ``1m-sensor``): that
is the work the Quix peer does (per sensor only; its rollup stage, per site, reads every
per-sensor result back from Kafka and is the rest of the default scopes' cost), so the ratio to
Quix is taken on that row, and the 200,000 records/s target on the default scopes.

Ceilings (phase ``ceiling``): a bare consumer of each Kafka client reads the same topic once and
only takes each record's value (:func:`reader_child`): aiokafka, the aggregator's client, with
its fetch sizes, and confluent-kafka (librdkafka), the client under Quix Streams. No consumer
built on a client can be faster than its row, so the aggregator's rate stands beside
aiokafka's, and the absolute rates, which move several-fold from one machine to another (the
machine is shared), beside figures of the same run.

The other ceiling (phase ``stage``, :func:`stage_work`): the window stage's own work on the same
records in memory, 1-minute windows per sensor, with no Kafka client at all (a child process
builds the records, polls of ``max_poll_records`` split by partition, and times only the
stage). No aggregator can do the peer's work faster than that row on this machine, whatever
its Kafka client, so it bounds the ratio to Quix a client change alone could give.

``CITYSENSE_BENCH_AGG_PHASES`` (comma-separated, default ``quix,ceiling,stage,1m,1m-sensor,1h``)
runs only some of the timed phases, e.g. ``1m`` to work on the aggregator's 1-minute windows
without the Quix peer's minutes; the target is then judged on what ran. Each citysense run
also reports the aggregator's process CPU time per record over the timed interval (steadier
than the rate on a shared machine). ``CITYSENSE_BENCH_AGG_SET_<NAME>=<value>`` runs the
aggregator with ``CITYSENSE_<NAME>=<value>``, to compare a setting in one session.

Targets (the aggregation issue): ≥ 200,000 records/s through one aggregator process and ≥ 35x the
Quix Streams peer (1-minute windows both, the ratio in the same scope). Every process shares
the machine's cores with the broker (all records are produced before the timed phases).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import uvloop
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

import schemas
from benchmarks import median, settings_asked, table
from benchmarks.ingest import quantile
from citysense.clients import ensure_topics, kafka_consumer, kafka_producer
from citysense.settings import AggregateSettings, KafkaSettings, WindowSettings
from citysense.stack import free_port, temporary_stack
from decoders import Kind

__all__ = ["main"]

RECORDS = int(os.environ.get("CITYSENSE_BENCH_AGG_RECORDS", "2000000"))
SENSORS = 1000
SITES = 20
INTERVAL_S = 10.0
#: Records move up to this many seconds of event time out of order (never past the same
#: sensor's next record, INTERVAL_S later).
SHUFFLE_S = 3.0
PARTITIONS = 6
CODEC = "milesight-ws302"
KIND: Kind = "noise"
MEASUREMENTS = schemas.measurement_topic(KIND)
AGGREGATES = schemas.aggregate_topic(KIND)
QUIX_OUTPUT = "bench.quix.noise.aggregates"
GRACE_S = 5.0
PACED_S = float(os.environ.get("CITYSENSE_BENCH_AGG_PACED_S", "150"))
PACED_RATE = 2000.0
#: Timed runs of each citysense phase (short ones; Quix runs once, it takes minutes).
RUNS = int(os.environ.get("CITYSENSE_BENCH_AGG_RUNS", "3"))
#: The timed phases to run (``quix``, ``ceiling``, ``stage``, ``1m``, ``1m-sensor``, ``1h``);
#: the default full run has all.
ALL_PHASES = "quix,ceiling,stage,1m,1m-sensor,1h"
PHASES = tuple(
    phase.strip()
    for phase in os.environ.get("CITYSENSE_BENCH_AGG_PHASES", ALL_PHASES).split(",")
    if phase.strip()
)
#: ``CITYSENSE_BENCH_AGG_SET_<NAME>=<value>`` runs the aggregator with ``CITYSENSE_<NAME>=<value>``
#: (after the benchmark's own settings, so it wins), e.g. to compare a setting in one session.
SET_PREFIX = "CITYSENSE_BENCH_AGG_SET_"
POLL_S = 0.1
RSS_EVERY_S = 0.2
#: The aggregator's defaults, which the benchmark leaves as they are: the watermark trails the
#: largest event time by this much, and each window is computed for these scopes.
OUT_OF_ORDERNESS_S = AggregateSettings().out_of_orderness_s
SCOPES = " + ".join(WindowSettings(name="default", size_s=60).scopes)
TARGET_RECORDS_S = 200_000.0
TARGET_RATIO = 35.0
CITYSENSE = str(Path(sys.executable).with_name("citysense"))
REPO = Path(__file__).resolve().parents[1]
#: The aggregator and Quix get this long per record (plus a start-up allowance) before the
#: benchmark gives up on them: far slower than either was ever seen.
SECONDS_PER_RECORD_MAX = 1 / 1000
STARTUP_S = 120.0


# --- input ------------------------------------------------------------------------------------


def sensor_ids() -> list[str]:
    return [f"bench-noise-{index:04d}" for index in range(1, SENSORS + 1)]


def site_of(index: int) -> str:
    """Sensors are dealt round-robin over ``SITES`` sites, 50 sensors each."""
    return f"bench-site-{index % SITES + 1:02d}"


def write_registry(path: Path) -> None:
    """A registry TOML (format of ``citysense/registry.py``) with the benchmark's fleet."""
    lines: list[str] = ["# citysense aggregate benchmark fleet (generated)", ""]
    for site in range(SITES):
        lines += [
            "[[sites]]",
            f'id = "bench-site-{site + 1:02d}"',
            f'name = "Benchmark site {site + 1}"',
            f"lat = {48.80 + site * 0.005:.4f}",
            f"lon = {2.30 + site * 0.005:.4f}",
            "",
        ]
    for index, sensor in enumerate(sensor_ids()):
        lines += [
            "[[sensors]]",
            f'id = "{sensor}"',
            f'kind = "{KIND}"',
            f'codec = "{CODEC}"',
            f'site = "{site_of(index)}"',
            f"lat = {48.80 + (index % SITES) * 0.005 + index * 1e-6:.6f}",
            f"lon = {2.30 + (index % SITES) * 0.005 + index * 1e-6:.6f}",
            f"interval_s = {INTERVAL_S}",
            "",
        ]
    path.write_text("\n".join(lines))


def encode(sensor: str, observed_at: datetime, rng: random.Random) -> bytes:
    """One noise measurement as ingest writes it: laeq, lamax and lamin set."""
    laeq = rng.uniform(45.0, 75.0)
    measurement = schemas.Measurement(
        sensor_id=sensor,
        kind=KIND,
        observed_at=observed_at,
        received_at=observed_at + timedelta(seconds=1),
        codec=CODEC,
        values={"laeq_db": laeq, "lamax_db": laeq + rng.uniform(3, 15), "lamin_db": laeq - 5},
    )
    return schemas.encode_measurement(measurement)


def records(count: int, start: float, seed: int = 7) -> Iterator[tuple[bytes, bytes]]:
    """``count`` (key, value) pairs: every sensor every ``INTERVAL_S`` from ``start`` (epoch s).

    Sensors are spread evenly over each interval, and each record is emitted at its event time
    plus a random delay up to ``SHUFFLE_S``: a heap releases a record once no later-generated
    one can come before it, so the shuffle costs no more memory than a round or two.
    """
    rng = random.Random(seed)
    ids = sensor_ids()
    heap: list[tuple[float, int, float]] = []
    made = 0
    round_no = 0
    while made < count:
        base = start + round_no * INTERVAL_S
        for index in range(min(SENSORS, count - made)):
            at = base + index * INTERVAL_S / SENSORS
            heapq.heappush(heap, (at + rng.uniform(0, SHUFFLE_S), index, at))
            made += 1
        round_no += 1
        released_before = start + round_no * INTERVAL_S  # no later record is earlier
        while heap and heap[0][0] < released_before:
            _, index, at = heapq.heappop(heap)
            yield ids[index].encode(), encode(ids[index], datetime.fromtimestamp(at, UTC), rng)
    while heap:
        _, index, at = heapq.heappop(heap)
        yield ids[index].encode(), encode(ids[index], datetime.fromtimestamp(at, UTC), rng)


def input_start(count: int) -> float:
    """Where ``count`` records of the input start (epoch s): on an hour, so that they end at
    about now."""
    span = math.ceil(count / SENSORS) * INTERVAL_S
    return (time.time() - span) // 3600 * 3600


def partition_of(key: bytes) -> int:
    """The Java client's default partitioner, as ingest uses."""
    return int(murmur2(key) & 0x7FFFFFFF) % PARTITIONS


async def produce(kafka: KafkaSettings, pairs: Iterator[tuple[bytes, bytes]]) -> int:
    """Send ``pairs`` to the measurement topic in big per-partition batches; returns the count.

    ``create_batch``/``send_batch`` as ingest does: ``send()`` per record would make producing
    the input take longer than the phases it feeds.
    """
    await ensure_topics(kafka, [MEASUREMENTS, AGGREGATES, schemas.LATE_TOPIC])
    producer = kafka_producer(kafka, linger_ms=50, max_batch_size=1 << 20, request_timeout_ms=60000)
    await producer.start()
    sent = 0
    try:
        pending: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
        inflight: list[asyncio.Future[Any]] = []
        for key, value in pairs:
            partition = partition_of(key)
            pending[partition].append((key, value))
            if len(pending[partition]) >= 5000:
                inflight += await _send_batch(producer, partition, pending[partition])
                sent += len(pending[partition])
                pending[partition] = []
            if len(inflight) >= 60:  # keep the broker's and our memory bounded
                await asyncio.gather(*inflight)
                inflight = []
        for partition, rest in pending.items():
            inflight += await _send_batch(producer, partition, rest)
            sent += len(rest)
        await asyncio.gather(*inflight)
    finally:
        await producer.stop()
    return sent


async def _send_batch(
    producer: Any, partition: int, pairs: Sequence[tuple[bytes, bytes]]
) -> list[asyncio.Future[Any]]:
    futures: list[asyncio.Future[Any]] = []
    timestamp = int(time.time() * 1000)
    start = 0
    while start < len(pairs):
        builder = producer.create_batch()
        while start < len(pairs):
            key, value = pairs[start]
            if builder.append(key=key, value=value, timestamp=timestamp) is None:
                break
            start += 1
        futures.append(await producer.send_batch(builder, MEASUREMENTS, partition=partition))
    return futures


# --- processes: RSS and metrics ---------------------------------------------------------------


class RssSampler:
    """Peak RSS of a process and its children, sampled in a thread every ``RSS_EVERY_S``."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        processes = [self.process, *self.process.children(recursive=True)]
        total = 0
        for process in processes:
            with contextlib.suppress(psutil.Error):  # a child that just ended
                total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._sample())
            except psutil.Error:
                return
            self._stop.wait(RSS_EVERY_S)

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as {sample with labels: value}; empty while the server is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name`` over its label sets that carry all of ``labels``."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if (key == name and not wanted)
        or (key.startswith(name + "{") and all(label in key for label in wanted))
    )


def consumed(samples: dict[str, float]) -> float:
    """Measurements the window stage counted. Not the whole counter: the rollup stage counts the
    per-sensor results it reads back from the aggregates topic under the same name."""
    return total(samples, RECORDS_TOTAL, topic=MEASUREMENTS)


def buckets(samples: dict[str, float], name: str) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets summed over label sets, as ``quantile`` takes them."""
    summed: dict[float, float] = {}
    for key, value in samples.items():
        if key.startswith(name + "_bucket{"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            bound = math.inf if le == "+Inf" else float(le)
            summed[bound] = summed.get(bound, 0.0) + value
    return sorted(summed.items())


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it does not end within ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Run:
    """One timed consumption of the input: rate from the first record counted to the last."""

    label: str
    records: int = 0
    seconds: float = 0.0
    startup_s: float = 0.0
    peak_rss_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "seconds": self.seconds,
            "records_per_s": self.rate,
            "startup_s": self.startup_s,
            "peak_rss_mb": self.peak_rss_mb,
            **self.extra,
        }


# --- Quix Streams peer ------------------------------------------------------------------------


def quix_child(bootstrap: str, group: str, count: int, state_dir: str) -> None:
    """The Quix Streams application (run as ``python -m benchmarks.aggregate quix …``).

    Prints one JSON line: wall times of the first and the ``count``-th record it processed.
    """
    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Mean
    from quixstreams.models.serializers import Deserializer
    from quixstreams.models.topics import Topic, TopicConfig, TopicManager

    def derive_topic_config(cls: type[TopicManager], topics: list[Topic]) -> TopicConfig:
        # Tansu reports no retention.ms, which Quix's own version requires.
        partitions = [t.broker_config.num_partitions or PARTITIONS for t in topics]
        return TopicConfig(num_partitions=max(partitions), replication_factor=1)

    TopicManager.derive_topic_config = classmethod(derive_topic_config)  # type: ignore[method-assign,assignment]

    class AvroDeserializer(Deserializer):
        def __call__(self, value: bytes, ctx: object) -> dict[str, Any]:
            return schemas.decode(value)[1]

    def observed_ms(value: dict[str, Any], headers: object, timestamp: int, kind: object) -> int:
        return int(value["observed_at"].timestamp() * 1000)

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    deserializer = AvroDeserializer()  # type: ignore[no-untyped-call]  # Quix's base is untyped
    source = app.topic(
        MEASUREMENTS, value_deserializer=deserializer, timestamp_extractor=observed_ms
    )
    output = app.topic(QUIX_OUTPUT, value_serializer="json")
    times: list[float] = []
    seen = 0

    def counted(_value: object) -> None:
        nonlocal seen
        seen += 1
        if seen == 1 or seen == count:
            times.append(time.time())
            if seen == count:
                app.stop()

    sdf = app.dataframe(source)
    sdf = sdf.update(counted)
    sdf = (
        sdf.tumbling_window(timedelta(minutes=1), grace_ms=timedelta(seconds=GRACE_S))
        .agg(mean=Mean("laeq_db"), count=Count())
        .final()
    )
    sdf.to_topic(output)
    app.run()
    print(json.dumps({"first": times[0], "last": times[-1], "seen": seen}), flush=True)


def run_quix(bootstrap: str, count: int, workdir: Path) -> Run:
    """Quix Streams over the input in a subprocess; RSS sampled from outside."""
    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    args = ["quix", bootstrap, group, str(count), str(workdir / "quix-state")]
    return _child_run("Quix Streams 1-min mean/count", args, count, workdir / "quix.log")


def _child_run(label: str, args: list[str], count: int, log: Path) -> Run:
    """``python -m benchmarks.aggregate <args>`` (a child printing the wall times of its first
    and ``count``-th record as its last JSON line, and any other figure of its run), timed from
    outside, its RSS sampled."""
    started = time.time()
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.aggregate", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            # This checkout's benchmarks package, whichever directory the run started from.
            cwd=REPO,
        )
    sampler = RssSampler(proc.pid)
    try:
        out, _ = proc.communicate(timeout=STARTUP_S + count * SECONDS_PER_RECORD_MAX)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{label} log:\n{_tail(log)}\n{label} did not finish") from None
    finally:
        peak = sampler.stop()
        stop_process(proc)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"{label} log:\n{_tail(log)}\n{label} exited {proc.returncode}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    first, last = result.pop("first"), result.pop("last")
    return Run(
        label=label,
        records=count - 1,  # the interval from the first record to the last
        seconds=last - first,
        startup_s=first - started,
        peak_rss_mb=peak,
        extra=result,  # what else the child told (the table's columns, e.g. windows emitted)
    )


# --- read ceilings: the Kafka clients alone ---------------------------------------------------


def reader_child(client: str, bootstrap: str, count: int) -> None:
    """A bare consumer reading the input once and doing nothing with it but take each record's
    value (run as ``python -m benchmarks.aggregate read <client> …``): the ceiling of any
    consumer built on that client, here and on this machine.

    ``aiokafka`` (the aggregator's client, on uvloop, with the aggregator's fetch sizes and
    ``max_poll_records``) or ``confluent-kafka`` (librdkafka; the client under Quix Streams).
    Prints one JSON line: wall times of the first and the ``count``-th record.
    """
    times = (
        _confluent_read(bootstrap, count)
        if client == "confluent-kafka"
        else uvloop.run(_aiokafka_read(bootstrap, count))
    )
    print(json.dumps({"first": times[0], "last": times[1]}), flush=True)


async def _aiokafka_read(bootstrap: str, count: int) -> tuple[float, float]:
    consumer = kafka_consumer(
        KafkaSettings(bootstrap=bootstrap, idempotence=False),
        MEASUREMENTS,
        group_id=None,
        max_poll_records=AggregateSettings().max_poll_records,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    seen, first = 0, 0.0
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                if records and not seen:
                    first = time.time()
                for record in records:
                    len(record.value)
                seen += len(records)
    finally:
        await consumer.stop()
    return first, time.time()


def _confluent_read(bootstrap: str, count: int) -> tuple[float, float]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-read-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # The fetch sizes the aggregator's aiokafka consumer uses.
            "max.partition.fetch.bytes": 8 << 20,
            "fetch.max.bytes": 64 << 20,
            "fetch.queue.backoff.ms": 10,
        }
    )
    # Assigned, as aiokafka's reader without a group: no group join before the first fetch.
    consumer.assign([TopicPartition(MEASUREMENTS, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen, first = 0, 0.0
    try:
        while seen < count:
            for message in consumer.consume(num_messages=10_000, timeout=0.2):
                if message.error() is not None:
                    continue
                len(message.value() or b"")
                if not seen:
                    first = time.time()
                seen += 1
    finally:
        consumer.close()
    return first, time.time()


def stage_child(count: int) -> None:
    """:func:`stage_work` over ``count`` records (run as ``python -m benchmarks.aggregate stage
    …``): prints one JSON line, ``first`` 0 and ``last`` the seconds the work took (making the
    records is not timed), and the number of windows emitted (the 1-minute per-sensor run's
    count, when both did the same work)."""
    seconds, results = stage_work(count)
    print(json.dumps({"first": 0.0, "last": seconds, "windows_emitted": results}), flush=True)


def stage_work(count: int) -> tuple[float, int]:
    """The window stage's own work on the input, in memory, with no Kafka client at all: the
    ceiling of the aggregator's 1-minute windows per sensor (the Quix peer's work) on a client
    that would cost nothing. Returns the seconds that work took and the results it gave.

    The same records (:func:`records`, the same seed), polled ``max_poll_records`` at a time
    and split by partition as a poll hands them out, go through what the aggregator does with
    a poll in that scope: :func:`streams._columns.extract_parts`, :meth:`WindowStage.fold_parts`,
    :meth:`WindowStage.advance` and :func:`schemas._aggregate_codec.encode_aggregate` of each
    result. Left out: the consumer, the producer, the service's bookkeeping (dead letters,
    commits, metrics).
    """
    from schemas._aggregate_codec import encode_aggregate
    from streams._columns import extract_parts
    from streams._stage import WindowStage

    settings = AggregateSettings(
        windows=[WindowSettings(name="1m", size_s=60, scopes=("sensor",))],
        daily={"enabled": False},
    )
    stage = WindowStage(KIND, settings, lambda _sensor: (INTERVAL_S, None))
    pairs = records(count, input_start(count))
    poll = settings.max_poll_records
    offsets = [0] * PARTITIONS
    worked = 0.0
    results = 0
    done = 0
    while done < count:
        by_partition: dict[int, list[_Polled]] = {}
        for key, value in itertools.islice(pairs, poll):
            partition = partition_of(key)
            by_partition.setdefault(partition, []).append(_Polled(key, value, offsets[partition]))
            offsets[partition] += 1
        done += sum(len(part) for part in by_partition.values())
        began = time.perf_counter()
        columns, stops = extract_parts(list(by_partition.values()), KIND, stage.keys)
        stage.fold_parts(list(zip(by_partition, stops, strict=True)), columns, 0.0)
        emitted = stage.advance(0.0)
        for result in emitted:
            encode_aggregate(result)
        worked += time.perf_counter() - began
        results += len(emitted)
    return worked, results


@dataclass(slots=True)
class _Polled:
    """What the stage reads of a polled record (aiokafka's ``ConsumerRecord`` has these)."""

    key: bytes
    value: bytes
    offset: int


def run_stage(count: int, workdir: Path) -> Run:
    """:func:`stage_child` in a subprocess (its RSS holds no more than a poll of records)."""
    label = "citysense window stage alone, in memory (no Kafka), 1-min per sensor"
    run = _child_run(label, ["stage", str(count)], count, workdir / "stage.log")
    run.startup_s = 0.0  # the child's clock starts at 0: there is no start-up to tell
    return run


def run_reader(client: str, bootstrap: str, count: int, workdir: Path) -> Run:
    """:func:`reader_child` in a subprocess, as the other consumers run; RSS sampled."""
    args = ["read", client, bootstrap, str(count)]
    return _child_run(f"{client}, read only (ceiling)", args, count, workdir / f"read-{client}.log")


# --- citysense aggregate ----------------------------------------------------------------------


def aggregator_env(
    base: dict[str, str], registry: Path, windows: list[dict[str, Any]], port: int
) -> dict[str, str]:
    """The environment of one ``citysense aggregate`` run: its own groups and windows."""
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env.update(base)
    env.update(
        CITYSENSE_KAFKA_IDEMPOTENCE="false",
        CITYSENSE_HTTP_PORT=str(port),
        CITYSENSE_REGISTRY=str(registry),
        CITYSENSE_AGGREGATE_GROUP_ID=f"bench-aggregate-{tag}",
        CITYSENSE_AGGREGATE_ROLLUP_GROUP_ID=f"bench-aggregate-rollup-{tag}",
        CITYSENSE_AGGREGATE_KINDS=KIND,
        CITYSENSE_AGGREGATE_WINDOWS=json.dumps(windows),
        CITYSENSE_AGGREGATE_DAILY=json.dumps({"enabled": False}),
        CITYSENSE_LOG_LEVEL="WARNING",
        # Never the developer's ./.stack/env: only what is set here.
        CITYSENSE_STACK_DIR=str(registry.parent / "no-stack"),
    )
    env.update(settings_asked(os.environ, SET_PREFIX))
    return env


class Aggregator:
    """One ``citysense aggregate`` subprocess, its ``/metrics`` and its RSS."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = int(env["CITYSENSE_HTTP_PORT"])
        self.log = log
        self.started = time.time()
        with log.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [CITYSENSE, "aggregate"], env=env, stdout=stderr, stderr=stderr
            )
        self.sampler = RssSampler(self.proc.pid)

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            hint = " (3: not implemented on this checkout)" if code == 3 else ""
            # The runner's summary shows the last line: the exit status, not the log.
            raise RuntimeError(
                f"log of citysense aggregate:\n{_tail(self.log)}\n"
                f"citysense aggregate exited {code}{hint}"
            )

    def metrics(self) -> dict[str, float]:
        return scrape(self.port)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its children so far."""
        processes = [self.sampler.process, *self.sampler.process.children(recursive=True)]
        spent = 0.0
        for process in processes:
            with contextlib.suppress(psutil.Error):  # a child that just ended
                times = process.cpu_times()
                spent += times.user + times.system
        return spent

    def stop(self) -> float:
        """Stop the process; its peak RSS in MiB."""
        stop_process(self.proc)
        return self.sampler.stop()


RECORDS_TOTAL = "citysense_aggregate_records_total"
WINDOWS_EMITTED = "citysense_aggregate_windows_emitted_total"
EMIT_DELAY = "citysense_aggregate_emit_delay_seconds"
STATE_BYTES = "citysense_aggregate_state_bytes"
LATE_RECORDS = "citysense_aggregate_late_records_total"


def run_citysense(
    base: dict[str, str], registry: Path, window: dict[str, Any], count: int, workdir: Path
) -> Run:
    """``citysense aggregate`` over the input with one window size, ``RUNS`` times: the median
    rate, the largest peak RSS, the other figures of the median run."""
    kafka = KafkaSettings(bootstrap=base["CITYSENSE_KAFKA_BOOTSTRAP"], idempotence=False)
    runs: list[Run] = []
    for _ in range(RUNS):
        asyncio.run(reset_outputs(kafka))
        runs.append(_citysense_once(base, registry, window, count, workdir))
    runs.sort(key=lambda r: r.rate)
    chosen = runs[len(runs) // 2]
    chosen.peak_rss_mb = max(r.peak_rss_mb for r in runs)
    chosen.extra["rates"] = [r.rate for r in runs]
    chosen.extra["cpu_us_per_record_runs"] = [r.extra["cpu_us_per_record"] for r in runs]
    return chosen


async def reset_outputs(kafka: KafkaSettings) -> None:
    """Delete and recreate the aggregator's output topics, so that a run's rollup stage reads
    only that run's per-sensor results (it reads them back from the aggregates topic)."""
    outputs = [AGGREGATES, schemas.LATE_TOPIC, schemas.DEADLETTER_TOPIC]
    admin = AIOKafkaAdminClient(**kafka.client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in outputs if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
    await ensure_topics(kafka, outputs)


def _citysense_once(
    base: dict[str, str], registry: Path, window: dict[str, Any], count: int, workdir: Path
) -> Run:
    name = window["name"]
    env = aggregator_env(base, registry, [window], free_port())
    aggregator = Aggregator(env, workdir / f"aggregate-{name}.log")
    deadline = time.monotonic() + STARTUP_S + count * SECONDS_PER_RECORD_MAX
    scopes = " + ".join(window.get("scopes", ())) or SCOPES
    run = Run(label=f"citysense {name} ({scopes})")
    try:
        first_at, first_count = _wait_for(aggregator, lambda n: n > 0, deadline)
        first_cpu = aggregator.cpu_seconds()
        run.startup_s = first_at - aggregator.started
        last_at, last_count = _wait_for(aggregator, lambda n: n >= count, deadline)
        last_cpu = aggregator.cpu_seconds()
        samples = aggregator.metrics()
        run.records = int(last_count - first_count)
        run.seconds = last_at - first_at
        run.extra = {
            "cpu_us_per_record": (last_cpu - first_cpu) / max(run.records, 1) * 1e6,
            "counted": last_count,
            "windows_emitted": total(samples, WINDOWS_EMITTED),
            "late_records": total(samples, LATE_RECORDS),
            "state_bytes": total(samples, STATE_BYTES),
        }
    finally:
        run.peak_rss_mb = aggregator.stop()
    return run


def _wait_for(
    aggregator: Aggregator, done: Any, deadline: float, poll_s: float = POLL_S
) -> tuple[float, float]:
    """Poll the records counter until ``done(count)``; (wall time, count) at that poll."""
    while True:
        aggregator.check_alive()
        count = consumed(aggregator.metrics())
        if done(count):
            return time.time(), count
        if time.monotonic() > deadline:
            raise RuntimeError(f"citysense aggregate counted {count:,.0f} records before timeout")
        time.sleep(poll_s)


# --- emit delay -------------------------------------------------------------------------------


async def paced_phase(kafka: KafkaSettings, aggregator: Aggregator) -> dict[str, Any]:
    """Records at ``PACED_RATE`` with event time = now for ``PACED_S``; every final 1-minute
    aggregate read back meanwhile, its delay past window end + grace in wall time."""
    consumer = kafka_consumer(kafka, AGGREGATES, group_id=None, fetch_max_wait_ms=20)
    await consumer.start()
    delays: dict[str, list[float]] = {}
    reader = asyncio.create_task(_read_aggregates(consumer, delays))
    try:
        sent = await _paced_produce(kafka, aggregator)
        # Windows that closed while producing may still be on their way (site windows last).
        await asyncio.sleep(GRACE_S + 5)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
    result: dict[str, Any] = {"sent": sent}
    for name, values in sorted(delays.items()):
        result[f"{name}.windows"] = len(values)
        result[f"{name}.p50_s"] = median(values)
        result[f"{name}.max_s"] = max(values)
    return result


async def _read_aggregates(consumer: AIOKafkaConsumer, delays: dict[str, list[float]]) -> None:
    """Delays of final 1-minute aggregates as they arrive (the topic is fresh), by scope
    (``sensor``/``site``) and clock (``kafka_ts``: the record's timestamp, set by the
    aggregator's producer when it sent it; ``received``: when this consumer got it)."""
    async for message in consumer:
        received = time.time()
        name, record = schemas.decode(message.value)
        if name != "Aggregate" or record["window_size_seconds"] != 60 or not record["final"]:
            continue
        scope = "site" if record["key"].startswith("site:") else "sensor"
        due = record["window_end"].timestamp() + GRACE_S
        delays.setdefault(f"{scope}.kafka_ts", []).append(message.timestamp / 1000 - due)
        delays.setdefault(f"{scope}.received", []).append(received - due)


async def _paced_produce(kafka: KafkaSettings, aggregator: Aggregator) -> int:
    """``PACED_RATE`` records/s in 20 ms ticks, round-robin over the sensors, event time now."""
    producer = kafka_producer(kafka, linger_ms=5)
    await producer.start()
    rng = random.Random(11)
    ids = sensor_ids()
    tick = 0.02
    per_tick = PACED_RATE * tick
    sent = 0
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < PACED_S:
            aggregator.check_alive()
            due = int(elapsed / tick * per_tick) + int(per_tick)
            now = datetime.now(UTC)
            while sent < due:
                sensor = ids[sent % SENSORS]
                await producer.send(MEASUREMENTS, encode(sensor, now, rng), key=sensor.encode())
                sent += 1
            await asyncio.sleep(tick - (time.monotonic() - started) % tick)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def run_paced(registry: Path, workdir: Path) -> dict[str, Any]:
    """The emit-delay phase on a fresh broker, so the aggregator starts at the paced records."""
    with temporary_stack("citysense-bench-aggregate-paced-", only=("kafka",)) as stack:
        base = stack.env()
        kafka = KafkaSettings(bootstrap=base["CITYSENSE_KAFKA_BOOTSTRAP"], idempotence=False)
        asyncio.run(ensure_topics(kafka, [MEASUREMENTS, AGGREGATES, schemas.LATE_TOPIC]))
        window = {"name": "1m", "size_s": 60, "grace_s": GRACE_S}
        env = aggregator_env(base, registry, [window], free_port())
        aggregator = Aggregator(env, workdir / "aggregate-paced.log")
        try:
            _wait_ready(aggregator)
            result = asyncio.run(paced_phase(kafka, aggregator))
            samples = aggregator.metrics()
            own = buckets(samples, EMIT_DELAY)
            result["own_histogram_p50_s"] = quantile(own, 0.5)
            result["own_histogram_samples"] = own[-1][1] if own else 0
        finally:
            result_rss = aggregator.stop()
        result["peak_rss_mb"] = result_rss
        return result


def _wait_ready(aggregator: Aggregator, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        aggregator.check_alive()
        try:
            url = f"http://127.0.0.1:{aggregator.port}/readyz"
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("citysense aggregate did not become ready")
        time.sleep(0.2)


# --- report -----------------------------------------------------------------------------------


def _paced_rows(paced: dict[str, Any]) -> list[list[object]]:
    """One row per scope and clock: windows, p50 and max, and the same past the moment the
    watermark itself passed window end + grace (``OUT_OF_ORDERNESS_S`` later)."""
    rows: list[list[object]] = []
    for scope in ("sensor", "site"):
        for clock, label in (("kafka_ts", "Kafka timestamp"), ("received", "received")):
            key = f"{scope}.{clock}"
            if f"{key}.windows" in paced:
                p50, top = paced[f"{key}.p50_s"], paced[f"{key}.max_s"]
                rows.append(
                    [
                        f"{scope} windows, {label}",
                        paced[f"{key}.windows"],
                        p50,
                        top,
                        p50 - OUT_OF_ORDERNESS_S,
                        top - OUT_OF_ORDERNESS_S,
                    ]
                )
    rows.append(
        [
            "aggregator's own histogram (poll due -> ack)",
            int(paced["own_histogram_samples"]),
            None,
            None,
            paced["own_histogram_p50_s"],
            None,
        ]
    )
    return rows


def report(runs: list[Run], paced: dict[str, Any] | None) -> dict[str, Any]:
    """Print the tables; return the figures with ``summary`` and ``target_met``."""
    quix, aiokafka_read, confluent_read, in_memory, one_minute, one_minute_sensor, one_hour = runs
    ratio = one_minute.rate / quix.rate if quix.rate else 0.0
    same_work_ratio = one_minute_sensor.rate / quix.rate if quix.rate else 0.0
    print(
        table(
            [
                "pipeline",
                "records/s",
                "x Quix",
                "peak RSS MB",
                "records timed",
                "start-up s",
                "windows emitted",
                "CPU µs/record",
            ],
            [
                [
                    r.label,
                    r.rate,
                    r.rate / quix.rate if quix.rate else None,
                    r.peak_rss_mb,
                    r.records,
                    r.startup_s,
                    r.extra.get("windows_emitted"),
                    r.extra.get("cpu_us_per_record"),
                ]
                for r in runs
                if r.records
            ],
            title=(
                f"aggregation of {RECORDS:,} noise records from {SENSORS:,} sensors "
                f"(citysense: median of {RUNS}; target >= {TARGET_RECORDS_S:,.0f} records/s "
                f"and >= {TARGET_RATIO:.0f}x Quix)"
            ),
        )
    )
    if paced is not None:
        print()
        print(
            table(
                [
                    "emit delay past window end + grace",
                    "windows",
                    "p50 s",
                    "max s",
                    "p50 s - o-o-o",
                    "max s - o-o-o",
                ],
                _paced_rows(paced),
                title=(
                    f"paced: {paced['sent']:,} records over {PACED_S:.0f} s at event time = now, "
                    f"1-min windows, grace {GRACE_S:.0f} s, out-of-orderness (o-o-o) "
                    f"{OUT_OF_ORDERNESS_S:.0f} s (the default)"
                ),
            )
        )
    # A phase left out (CITYSENSE_BENCH_AGG_PHASES) is not held against the target.
    ratio_met = same_work_ratio >= TARGET_RATIO or "quix" not in PHASES or "1m-sensor" not in PHASES
    target = "1m" in PHASES and one_minute.rate >= TARGET_RECORDS_S and ratio_met
    summary = (
        f"citysense 1-min {one_minute.rate:,.0f} records/s ({SCOPES}); per sensor only "
        f"{one_minute_sensor.rate:,.0f}/s = {same_work_ratio:.1f}x Quix ({quix.rate:,.0f}/s, "
        f"per sensor); 1-h {one_hour.rate:,.0f}/s"
    )
    if in_memory.rate and quix.rate:
        summary += (
            f"; the window stage alone in memory (no Kafka) {in_memory.rate:,.0f}/s = "
            f"{in_memory.rate / quix.rate:.1f}x Quix"
        )
    if aiokafka_read.rate:
        summary += (
            f"; aiokafka alone reads {aiokafka_read.rate:,.0f}/s "
            f"(1-min = {one_minute.rate / aiokafka_read.rate:.2f} of it)"
        )
    if paced is not None and "sensor.kafka_ts.p50_s" in paced:
        summary += f"; emit delay p50 {paced['sensor.kafka_ts.p50_s']:.2f} s (sensor windows)"
    return {
        "records": RECORDS,
        # A phase left out has no figures (not a rate of 0).
        "quix": quix.figures() if quix.records else None,
        "read_aiokafka": aiokafka_read.figures() if aiokafka_read.records else None,
        "read_confluent_kafka": confluent_read.figures() if confluent_read.records else None,
        "stage_in_memory": in_memory.figures() if in_memory.records else None,
        "citysense_1m": one_minute.figures() if one_minute.records else None,
        "citysense_1m_sensor": one_minute_sensor.figures() if one_minute_sensor.records else None,
        "citysense_1h": one_hour.figures() if one_hour.records else None,
        "ratio_1m_to_quix": ratio,
        "ratio_1m_sensor_to_quix": same_work_ratio,
        "paced": paced,
        "summary": summary,
        "target_met": target,
    }


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # A SIGTERM'd benchmark still stops its subprocesses and brokers (the ``finally`` blocks).
    raise SystemExit(128 + signum)


def main() -> dict[str, Any]:
    """Produce the input once, run the consumers on it, then the paced phase."""
    workdir = Path(tempfile.mkdtemp(prefix="citysense-bench-aggregate-"))
    registry = workdir / "registry.toml"
    write_registry(registry)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with temporary_stack("citysense-bench-aggregate-", only=("kafka",)) as stack:
            base = stack.env()
            kafka = KafkaSettings(bootstrap=base["CITYSENSE_KAFKA_BOOTSTRAP"], idempotence=False)
            began = time.perf_counter()
            produced = asyncio.run(produce(kafka, records(RECORDS, input_start(RECORDS))))
            print(f"produced {produced:,} records in {time.perf_counter() - began:.1f} s")
            skipped = Run(label="(not run)")
            runs = [
                run_quix(kafka.bootstrap, produced, workdir) if "quix" in PHASES else skipped,
                *(
                    run_reader(client, kafka.bootstrap, produced, workdir)
                    if "ceiling" in PHASES
                    else skipped
                    for client in ("aiokafka", "confluent-kafka")
                ),
                run_stage(produced, workdir) if "stage" in PHASES else skipped,
                run_citysense(base, registry, {"name": "1m", "size_s": 60}, produced, workdir)
                if "1m" in PHASES
                else skipped,
                run_citysense(
                    base,
                    registry,
                    {"name": "1m", "size_s": 60, "scopes": ["sensor"]},
                    produced,
                    workdir,
                )
                if "1m-sensor" in PHASES
                else skipped,
                run_citysense(base, registry, {"name": "1h", "size_s": 3600}, produced, workdir)
                if "1h" in PHASES
                else skipped,
            ]
        paced = run_paced(registry, workdir) if PACED_S > 0 else None
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(workdir, ignore_errors=True)
    return report(runs, paced)


if __name__ == "__main__":
    if sys.argv[1:2] == ["quix"]:
        bootstrap, group, count, state_dir = sys.argv[2:6]
        quix_child(bootstrap, group, int(count), state_dir)
    elif sys.argv[1:2] == ["stage"]:
        stage_child(int(sys.argv[2]))
    elif sys.argv[1:2] == ["read"]:
        client, bootstrap, count = sys.argv[2:5]
        reader_child(client, bootstrap, int(count))
    else:
        print(json.dumps(main(), indent=2, default=str))
