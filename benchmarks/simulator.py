"""Simulator throughput at QoS 1 on a private Mosquitto, against the C client tools as ceiling.

A private Mosquitto (the project's ``Stack``, its other services not started, on a free port in
a temporary directory) receives, while a C subscriber (``mosquitto_sub -q 1``, Debian's
mosquitto-clients) consumes every uplink topic at QoS 1:

(a) ``run_simulation(rate=0, duration_s=30)``: one simulator process publishing the nation fleet
    at QoS 1 as fast as the broker acknowledges (up to 1000 in flight);
(b) the same with ``processes=2``;
(a') the same as (a) with the ``mqtt-publish`` fast path off (``CITYSENSE_LEAN``, paho's public
    ``Properties`` and PUBACK handling): the fast path is kept only while (a) acknowledges at
    least 15 % more per second than (a') in the same run (docs/runtime.md#fast-paths);
(c) the ceiling: the C publisher ``mosquitto_pub -q 1 -M 1000 -l`` fed a pre-generated file of
    fleet payloads (one per line, binary ones in hex, a fixed topic), run back to back for the
    same 30 s; the figure is messages / wall time until its last PUBACK.

``published/s`` is the simulator's count over its 30 s publishing window; ``acked/s`` counts the
wait for the last PUBACK too (what ``run_simulation`` reports as ``rate``); ``received/s`` is
the subscriber's, first to last message. Target (the simulator's issue): one process publishes at
least 10,000 messages/s at QoS 1 for 30 s, and more with ``--processes 2``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import shutil
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from benchmarks import table
from citysense.registry import load_registry, scenario_path
from citysense.settings import MqttSettings
from citysense.stack import temporary_stack
from citysense.stack._process import read_pid
from simulators import Fleet, SimulationSpec, run_simulation

DURATION_S = 30.0
TARGET_MSGS_S = 10_000.0
MAX_INFLIGHT = 1000
#: Lines per ``mosquitto_pub -l`` run. It reads stdin with no back-pressure, queueing every line
#: at once, so more than 65,535 lines would reuse MQTT packet ids still in flight.
CEILING_CHUNK = 60_000
#: The subscriber has caught up when it has everything, or received nothing for this long.
DRAIN_IDLE_S = 3.0
DRAIN_MAX_S = 30.0
SUBSCRIPTIONS = (
    "sensors/+/up",
    "gateways/+/sensors/+/up",
    "application/+/device/+/event/up",
    "v3/+/devices/+/up",
)
CEILING_TOPIC = "sensors/bench-ceiling/up"
PROBE_TOPIC = "sensors/bench-probe/up"


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str
    password: str
    pid: int

    def client_args(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-u", self.username, "-P", self.password]


class Subscriber:
    """``mosquitto_sub -q 1`` on every uplink topic, printing one byte per message."""

    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self._baseline = 0
        self._process = subprocess.Popen(
            [
                "mosquitto_sub",
                *broker.client_args(),
                "-i",
                f"bench-sub-{name}-{os.getpid()}",
                "-q",
                "1",
                *(arg for topic in SUBSCRIPTIONS for arg in ("-t", topic)),
                "-N",
                "-F",
                "x",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        fd = self._process.stdout.fileno()
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            now = time.perf_counter()
            if self.first is None:
                self.first = now
            self.last = now
            self.count += len(chunk)

    @property
    def received(self) -> int:
        return self.count - self._baseline

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Publish probes until one arrives: the subscription is then in place."""
        deadline = time.monotonic() + timeout
        while self.count == 0:
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError("mosquitto_sub did not receive a probe message")
            probe = ["mosquitto_pub", *self.broker.client_args(), "-q", "1"]
            subprocess.run([*probe, "-t", PROBE_TOPIC, "-m", "probe"], check=True, timeout=10)
            time.sleep(0.3)
        time.sleep(0.5)  # a probe still on its way is counted before the baseline
        self._baseline = self.count
        self.first = self.last = None

    def drain(self, expected: int) -> None:
        """Wait until ``expected`` messages arrived, or nothing arrives for a while."""
        deadline = time.monotonic() + DRAIN_MAX_S
        seen, idle_since = self.count, time.monotonic()
        while self.received < expected and time.monotonic() < deadline:
            time.sleep(0.1)
            if self.count != seen:
                seen, idle_since = self.count, time.monotonic()
            elif time.monotonic() - idle_since > DRAIN_IDLE_S:
                break

    def rate(self) -> float:
        if self.first is None or self.last is None or self.last <= self.first:
            return 0.0
        return (self.received - 1) / (self.last - self.first)

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._thread.join(timeout=5)
        if self._process.stdout is not None:
            self._process.stdout.close()


@contextlib.contextmanager
def private_broker() -> Iterator[Broker]:
    """The project's Mosquitto alone, from ``Stack``, on a free port in a temporary directory."""
    with temporary_stack("citysense-bench-", only=("mosquitto",)) as stack:
        settings = MqttSettings(url=stack.env()["CITYSENSE_MQTT_URL"])
        host, port, username, password, _tls = settings.endpoint()
        pid = read_pid(stack.root / "mosquitto.pid")
        assert username is not None
        assert password is not None
        assert pid is not None
        yield Broker(host, port, username, password, pid)


def _simulate_child(spec: SimulationSpec, conn: Connection) -> None:
    try:
        conn.send(("ok", run_simulation(spec)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _run_simulation_elsewhere(spec: SimulationSpec) -> dict[str, Any]:
    """``run_simulation`` in a fresh process, so this one's subscriber thread stays out of its
    way (with ``processes > 1`` that process starts the workers)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_simulate_child, args=(spec, sender))
    process.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        status, payload = "error", "the simulator process died without a result"
    process.join(timeout=30)
    if process.is_alive():
        process.kill()
        process.join()
    if status != "ok":
        raise RuntimeError(f"run_simulation failed:\n{payload}")
    result: dict[str, Any] = payload
    return result


@dataclass
class Run:
    label: str
    processes: int | None
    messages: int
    published_per_s: float
    acked_per_s: float
    received: int
    received_per_s: float
    drain_s: float
    #: CPU of the publishing processes over the run's wall time (100 = one core busy).
    client_cpu_pct: float
    #: CPU of the publishing processes per message, in microseconds (their start-up included).
    client_cpu_us_per_msg: float
    broker_cpu_pct: float
    load_before: float


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _children_cpu_seconds() -> float:
    """CPU of this process's finished children (and theirs): the publishers once reaped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def simulator_run(broker: Broker, processes: int, *, fast: bool = True) -> Run:
    label = f"simulator, {processes} process{'es' if processes > 1 else ''}"
    if not fast:
        label += ", mqtt-publish off"
    print(f"  {label}: {DURATION_S:.0f} s at QoS 1, rate 0 (as fast as acked) ...", flush=True)
    load = os.getloadavg()[0]
    subscriber = Subscriber(broker, f"p{processes}")
    try:
        subscriber.wait_ready()
        cpu_before = _cpu_seconds(broker.pid)
        client_before = _children_cpu_seconds()
        started = time.perf_counter()
        spec = SimulationSpec(
            registry_path=scenario_path("nation"),
            mqtt=MqttSettings(
                url=f"mqtt://{broker.username}:{broker.password}@{broker.host}:{broker.port}"
            ),
            seed=11,
            rate=0,
            duration_s=DURATION_S,
            processes=processes,
            client_id=f"bench-sim-{os.getpid()}",
            max_inflight=MAX_INFLIGHT,
            fast=fast,
        )
        summary = _run_simulation_elsewhere(spec)
        finished = time.perf_counter()
        client = _children_cpu_seconds() - client_before
        subscriber.drain(int(summary["sent"]))
        cpu = _cpu_seconds(broker.pid) - cpu_before
        wall = max((subscriber.last or finished), finished) - started
    finally:
        subscriber.stop()
    sent = int(summary["sent"])
    return Run(
        label=label,
        processes=processes,
        messages=sent,
        published_per_s=sent / DURATION_S,
        acked_per_s=float(summary["rate"]),
        received=subscriber.received,
        received_per_s=subscriber.rate(),
        drain_s=max(0.0, (subscriber.last or finished) - finished),
        client_cpu_pct=100 * client / (finished - started),
        client_cpu_us_per_msg=1e6 * client / sent if sent else 0.0,
        broker_cpu_pct=100 * cpu / wall,
        load_before=load,
    )


def fleet_lines(count: int = 5000) -> tuple[bytes, float, float]:
    """``count`` fleet payloads, one per line (binary ones hex-encoded, as no line may hold a
    newline or NUL); returns the text, the mean line payload size and the fleet's own mean."""
    fleet = Fleet(load_registry(scenario_path("nation")), seed=3)
    messages = fleet.next_batch(count)
    lines: list[bytes] = []
    for message in messages:
        payload = message.payload
        if b"\n" in payload or b"\0" in payload or not payload.isascii():
            payload = payload.hex().encode()
        lines.append(payload)
    mean_line = sum(len(line) for line in lines) / len(lines)
    mean_fleet = sum(len(m.payload) for m in messages) / len(messages)
    return b"\n".join(lines) + b"\n", mean_line, mean_fleet


def ceiling_run(broker: Broker, workdir: Path) -> tuple[Run, float, float]:
    label = "ceiling: mosquitto_pub -l (C)"
    text, mean_line, mean_fleet = fleet_lines()
    block = text * (CEILING_CHUNK // text.count(b"\n") + 1)
    chunk = b"\n".join(block.split(b"\n")[:CEILING_CHUNK]) + b"\n"
    path = workdir / "ceiling-lines.txt"
    path.write_bytes(chunk)
    print(
        f"  {label}: runs of {CEILING_CHUNK:,} lines at QoS 1, -M {MAX_INFLIGHT}, "
        f"for {DURATION_S:.0f} s ...",
        flush=True,
    )
    load = os.getloadavg()[0]
    subscriber = Subscriber(broker, "ceiling")
    argv = ["mosquitto_pub", *broker.client_args(), "-q", "1", "-M", str(MAX_INFLIGHT)]
    argv += ["-V", "mqttv5", "-i", f"bench-pub-{os.getpid()}", "-t", CEILING_TOPIC, "-l"]
    try:
        subscriber.wait_ready()
        cpu_before = _cpu_seconds(broker.pid)
        client_before = _children_cpu_seconds()
        started = time.perf_counter()
        published = 0
        while time.perf_counter() - started < DURATION_S:
            with path.open("rb") as stdin:
                subprocess.run(argv, stdin=stdin, check=True, timeout=120)
            published += CEILING_CHUNK
        finished = time.perf_counter()
        client = _children_cpu_seconds() - client_before
        subscriber.drain(published)
        cpu = _cpu_seconds(broker.pid) - cpu_before
        wall = max((subscriber.last or finished), finished) - started
    finally:
        subscriber.stop()
        path.unlink(missing_ok=True)
    elapsed = finished - started
    run = Run(
        label=label,
        processes=None,
        messages=published,
        published_per_s=published / elapsed,
        acked_per_s=published / elapsed,
        received=subscriber.received,
        received_per_s=subscriber.rate(),
        drain_s=max(0.0, (subscriber.last or finished) - finished),
        client_cpu_pct=100 * client / elapsed,
        client_cpu_us_per_msg=1e6 * client / published if published else 0.0,
        broker_cpu_pct=100 * cpu / wall,
        load_before=load,
    )
    return run, mean_line, mean_fleet


def main() -> dict[str, Any]:
    for tool in ("mosquitto", "mosquitto_sub", "mosquitto_pub"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise RuntimeError(f"{tool} is not installed: run `make setup`")
    with private_broker() as broker:
        print(f"private Mosquitto on {broker.host}:{broker.port} (pid {broker.pid})", flush=True)
        workdir = Path(tempfile.mkdtemp(prefix="citysense-bench-lines-"))
        try:
            one = simulator_run(broker, 1)
            plain = simulator_run(broker, 1, fast=False)
            two = simulator_run(broker, 2)
            ceiling, mean_line, mean_fleet = ceiling_run(broker, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    runs = [one, plain, two, ceiling]
    rows = [
        [
            run.label,
            run.messages,
            run.published_per_s,
            run.acked_per_s,
            run.received,
            run.received_per_s,
            run.drain_s,
            run.acked_per_s / ceiling.acked_per_s if ceiling.acked_per_s else None,
            run.client_cpu_pct,
            run.client_cpu_us_per_msg,
            run.broker_cpu_pct,
            run.load_before,
        ]
        for run in runs
    ]
    print()
    print(
        table(
            [
                "run",
                "messages",
                "published/s",
                "acked/s",
                "received",
                "received/s",
                "drain s",
                "vs ceiling",
                "publisher CPU %",
                "publisher CPU µs/msg",
                "broker CPU %",
                "load",
            ],
            rows,
            title=(
                f"QoS 1, {DURATION_S:.0f} s, {MAX_INFLIGHT} in flight; payloads: fleet mean "
                f"{mean_fleet:.0f} B, ceiling lines mean {mean_line:.0f} B; CPU % of one core; "
                f"load = 1-min load average before the run, on {os.cpu_count()} CPUs"
            ),
        )
    )
    lost = [run.label for run in runs if run.received < run.messages]
    if lost:
        print(f"\nWARNING: the subscriber received fewer messages than acknowledged in: {lost}")
    one_ok = one.acked_per_s >= TARGET_MSGS_S
    scales = two.acked_per_s > one.acked_per_s
    target_met = one_ok and scales
    print(
        f"\ntarget >= {TARGET_MSGS_S:,.0f} msg/s from one process: "
        f"{'PASS' if one_ok else 'FAIL'} ({one.acked_per_s:,.0f} acked/s, "
        f"{one.acked_per_s / ceiling.acked_per_s:.0%} of the C ceiling "
        f"{ceiling.acked_per_s:,.0f}/s); more with 2 processes: "
        f"{'PASS' if scales else 'FAIL'} ({two.acked_per_s:,.0f} acked/s)"
    )
    gain = one.acked_per_s / plain.acked_per_s - 1 if plain.acked_per_s else float("nan")
    print(
        f"fast path mqtt-publish: {one.acked_per_s:,.0f} acked/s on, {plain.acked_per_s:,.0f} "
        f"off ({gain:+.0%}; kept at >= +15 %)"
    )
    return {
        "fast_paths": {
            "mqtt-publish": {"on": one.acked_per_s, "off": plain.acked_per_s, "gain": gain}
        },
        "duration_s": DURATION_S,
        "max_inflight": MAX_INFLIGHT,
        "target_msgs_per_s": TARGET_MSGS_S,
        "payload_mean_bytes": {"fleet": mean_fleet, "ceiling_lines": mean_line},
        "runs": [run.__dict__ for run in runs],
        "cpus": os.cpu_count(),
        "target_met": target_met,
        "summary": (
            f"1 process {one.acked_per_s:,.0f} msg/s ({plain.acked_per_s:,.0f} with "
            f"mqtt-publish off), 2 processes {two.acked_per_s:,.0f} msg/s, "
            f"C ceiling {ceiling.acked_per_s:,.0f} msg/s (target >= {TARGET_MSGS_S:,.0f} from one)"
        ),
    }
