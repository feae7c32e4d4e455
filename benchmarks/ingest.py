"""Ingest throughput, latency and memory: simulator → Mosquitto → ingest → Kafka, QoS 1.

In one run on a private stack (Mosquitto + Tansu from the project's ``Stack``):

1. ceiling: the C client ``mosquitto_sub -q 1`` on the same broker, fed by the same simulator
   publishing as fast as the broker acknowledges (QoS 1), for ``DURATION_S``;
2. ingest with 1 and with 2 processes (MQTT shared subscription): the simulator publishes as fast
   as acknowledged for ``DURATION_S``; the figure is records Kafka acknowledged per second (from
   ingest's own ``produced`` counter) over the steady part of the run, and peak RSS;
3. backlog drain: the simulator publishes flat out for ``BACKLOG_S`` while ingest is stopped
   (its persistent session queues the messages, as during an outage), then one ingest process
   drains the backlog with no publisher competing for the cores: ingest's own capacity; run
   twice on the same messages (one simulator seed and message count), with every fast path on
   and with ``mqtt-read`` off (paho's public ``on_message``), through ``CITYSENSE_LEAN``: the
   figures that keep the fast path only while it makes ingest at least 15 % faster
   (docs/runtime.md#fast-paths);
4. latency at 5,000 msg/s: p50/p99 of MQTT receive → Kafka acknowledgement (ingest's sampled
   latency histogram, interpolated within buckets); the rate shown is the load offered (messages
   sent over the paced window), with the counts sent and Kafka-acknowledged beside it;
5. soak at 5,000 msg/s for ``SOAK_MINUTES`` (``CITYSENSE_BENCH_SOAK_MINUTES``, default 10): RSS
   every 15 s; flat means the last minute's RSS is within 10 % of the second minute's.

Each phase's ingest ends its persistent MQTT sessions when it stops: left behind, they made the
broker queue every later phase's messages for them and write that queue out at each autosave.

Targets (issue 4): ≥ 20,000 msg/s and ≥ 60 % of the ceiling; p99 < 250 ms at 5,000 msg/s; RSS flat.
Every process shares the machine's 2 cores, so figures move with whatever else runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from benchmarks import table
from benchmarks.simulator import Broker, Subscriber
from citysense.settings import FastPath, MqttSettings
from citysense.stack import free_port, temporary_stack

DURATION_S = float(os.environ.get("CITYSENSE_BENCH_DURATION_S", "30"))
RATE_FOR_LATENCY = 5000
#: Seconds the simulator publishes, flat out, the backlog ingest then drains.
BACKLOG_S = DURATION_S * 2 / 3
#: The simulator's seed for every backlog: the runs compared drain the same messages.
BACKLOG_SEED = 13
#: The backlog is drained once Kafka acknowledged nothing more for this long.
DRAIN_IDLE_S = 5.0
SOAK_MINUTES = float(os.environ.get("CITYSENSE_BENCH_SOAK_MINUTES", "10"))
CITYSENSE = str(Path(sys.executable).with_name("citysense"))


def _base_env(env: dict[str, str], root: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    base.update(env)
    base["CITYSENSE_STACK_DIR"] = str(root / "no-stack")
    base["CITYSENSE_LOG_LEVEL"] = "WARNING"
    # Ingest's own ceiling over the general default of 6 partitions per topic (several batches
    # in flight per kind), not the embedded stack's single partition, which the end-to-end
    # benchmark runs.
    base["CITYSENSE_KAFKA_PARTITIONS"] = "6"
    return base


class Ingest:
    """``citysense ingest`` processes sharing one subscription."""

    def __init__(self, env: dict[str, str], processes: int, tag: str) -> None:
        self.env = env
        self.client_ids = [f"bench-ingest-{tag}-{index}" for index in range(processes)]
        self.ports = [free_port() for _ in range(processes)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for index, port in enumerate(self.ports):
            penv = dict(env)
            penv.update(
                CITYSENSE_HTTP_PORT=str(port),
                CITYSENSE_MQTT_CLIENT_ID=f"bench-ingest-{tag}",
                CITYSENSE_INGEST_SHARED_GROUP=f"bench-{tag}" if processes > 1 else "",
            )
            if processes == 1:
                penv.pop("CITYSENSE_INGEST_SHARED_GROUP")
            self.procs.append(
                subprocess.Popen(
                    [CITYSENSE, "ingest", "--client-id-suffix", f"-{index}"],
                    env=penv,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 30
        for port in self.ports:
            while _get(port, "/readyz")[0] != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("ingest did not become ready")
                time.sleep(0.1)

    def metric(self, name: str) -> float:
        return sum(_metric(_get(port, "/metrics")[1], name) for port in self.ports)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the ingest processes used so far."""
        total = 0.0
        for proc in self.procs:
            times = psutil.Process(proc.pid).cpu_times()
            total += times.user + times.system
        return total

    def rss(self) -> int:
        return sum(psutil.Process(p.pid).memory_info().rss for p in self.procs)

    def histogram(self, name: str) -> list[tuple[float, float]]:
        buckets: dict[float, float] = {}
        for port in self.ports:
            for line in _get(port, "/metrics")[1].splitlines():
                if line.startswith(f"{name}_bucket{{"):
                    le = line.split('le="', 1)[1].split('"', 1)[0]
                    bound = float("inf") if le == "+Inf" else float(le)
                    buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
        return sorted(buckets.items())

    def stop(self, *, keep_sessions: bool = False) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not keep_sessions:
            for client_id in self.client_ids:
                end_session(self.env, client_id)


def end_session(env: dict[str, str], client_id: str) -> None:
    """Discard the broker's persistent session of a stopped ingest process.

    Ingest subscribes with a session that outlives it (session expiry 1 h): once a phase is over,
    the broker would go on queueing every later phase's messages for it, and write that queue out
    at each autosave. Connecting with the same client id, clean start and no session expiry
    (``mosquitto_sub -V 5`` without ``-c``) ends the session and its queue.
    """
    settings = MqttSettings(url=env["CITYSENSE_MQTT_URL"])
    host, port, user, password, _tls = settings.endpoint()
    assert user is not None
    assert password is not None
    broker = Broker(host, port, user, password, 0)
    subprocess.run(
        [
            "mosquitto_sub",
            *broker.client_args(),
            *("-V", "5", "-i", client_id, "-t", "bench/end-session", "-E"),
        ],
        check=True,
        timeout=30,
        stdout=subprocess.DEVNULL,
    )


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    )


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus-style histogram_quantile: linear interpolation within the bucket."""
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank = q * buckets[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            share = (
                (rank - previous_count) / (count - previous_count) if count > previous_count else 0
            )
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return previous_bound


def simulate(
    env: dict[str, str],
    rate: float,
    duration: float | None,
    processes: int = 1,
    *,
    messages: int | None = None,
    seed: int | None = None,
) -> subprocess.Popen[bytes]:
    """The simulator publishing for ``duration`` seconds, or ``messages`` messages; ``seed``
    (default: the clock) picks the fleet's messages, so two runs given one seed and one count
    publish the same messages."""
    amount = ["--duration", str(duration)] if messages is None else ["--messages", str(messages)]
    return subprocess.Popen(
        [
            CITYSENSE,
            "simulate",
            "--rate",
            str(rate),
            *amount,
            "--processes",
            str(processes),
            "--seed",
            str(int(time.time()) if seed is None else seed),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def _summary(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    import json

    out, _ = proc.communicate(timeout=DURATION_S * 10 + 600)
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


def ceiling(env: dict[str, str]) -> dict[str, float]:
    settings = MqttSettings(url=env["CITYSENSE_MQTT_URL"])
    host, port, user, password, _tls = settings.endpoint()
    assert user is not None
    assert password is not None
    subscriber = Subscriber(Broker(host, port, user, password, 0), "ceiling")
    try:
        subscriber.wait_ready()
        summary = _summary(simulate(env, 0, DURATION_S))
        subscriber.drain(int(summary["sent"]))
        return {"published_per_s": summary["rate"], "received_per_s": subscriber.rate()}
    finally:
        subscriber.stop()


def throughput(env: dict[str, str], processes: int) -> dict[str, float]:
    ingest = Ingest(env, processes, f"tp{processes}-{int(time.time())}")
    try:
        sim = simulate(env, 0, DURATION_S)
        time.sleep(5)  # warm-up: connections, partition metadata, JIT-free but cache-warm
        start_count, start_at, start_cpu = (
            ingest.metric("citysense_ingest_produced_records_total"),
            time.monotonic(),
            ingest.cpu_s(),
        )
        peak_rss = 0
        while sim.poll() is None and time.monotonic() - start_at < DURATION_S - 6:
            peak_rss = max(peak_rss, ingest.rss())
            time.sleep(1)
        end_count, end_at, end_cpu = (
            ingest.metric("citysense_ingest_produced_records_total"),
            time.monotonic(),
            ingest.cpu_s(),
        )
        summary = _summary(sim)
        produced = end_count - start_count
        return {
            "processes": processes,
            "ingest_per_s": produced / (end_at - start_at),
            # Less noisy than the rate on a shared machine: what a message costs ingest.
            "cpu_us_per_msg": (end_cpu - start_cpu) / produced * 1e6 if produced else float("nan"),
            "published_per_s": summary["rate"],
            "peak_rss_mb": peak_rss / 2**20,
        }
    finally:
        ingest.stop()


def _all_but(path: FastPath) -> str:
    """``CITYSENSE_LEAN`` with every fast path on but ``path``."""
    return ",".join(other.value for other in FastPath if other is not path)


def backlog(
    env: dict[str, str], lean: str = "1", *, messages: int | None = None, seed: int = BACKLOG_SEED
) -> dict[str, float]:
    """Ingest's own capacity, with no publisher competing for the cores: the broker holds a
    backlog for ingest's persistent session (published while ingest was stopped, as after an
    outage), then one ingest process drains it; the rate counts from ingest being ready to the
    last record Kafka acknowledged. ``lean`` is ingest's ``CITYSENSE_LEAN`` (the simulator
    keeps its own fast path either way).

    The backlog is what the simulator publishes in ``BACKLOG_S``, or ``messages`` messages: the
    runs compared pass the first run's count, and all use one ``seed``, so each drains the same
    messages. Published for a time, the backlogs differed by up to 40 % with the machine's load,
    and a clock seed gave each run another mix of sensors and codecs."""
    tag = f"backlog-{lean}-{int(time.time())}"
    ingest_env = {**env, "CITYSENSE_LEAN": lean}
    Ingest(ingest_env, 1, tag).stop(keep_sessions=True)  # the session and its subscriptions exist
    publisher = simulate(env, 0, BACKLOG_S, messages=messages, seed=seed)
    sent = int(_summary(publisher)["sent"])
    ingest = Ingest(ingest_env, 1, tag)
    try:
        start_count, start_at, start_cpu = (
            ingest.metric("citysense_ingest_produced_records_total"),
            time.monotonic(),
            ingest.cpu_s(),
        )
        count, end_at = start_count, start_at
        while count < sent and time.monotonic() - end_at < DRAIN_IDLE_S:
            time.sleep(0.05)
            now_count = ingest.metric("citysense_ingest_produced_records_total")
            if now_count != count:
                count, end_at = now_count, time.monotonic()
        end_cpu = ingest.cpu_s()
        drained = count - start_count
        return {
            "backlog": sent,
            "drained": count,
            "drain_per_s": drained / (end_at - start_at),
            "cpu_us_per_msg": (end_cpu - start_cpu) / drained * 1e6 if drained else float("nan"),
        }
    finally:
        ingest.stop()


def latency(env: dict[str, str]) -> dict[str, float]:
    ingest = Ingest(env, 1, f"lat-{int(time.time())}")
    try:
        summary = _summary(simulate(env, RATE_FOR_LATENCY, DURATION_S))
        time.sleep(2)
        buckets = ingest.histogram("citysense_ingest_latency_seconds")
        return {
            # Offered load: what the simulator paced over its DURATION_S window. Its own "rate"
            # divides by the window plus the wait for the broker's last PUBACKs, which says less
            # about the load ingest met.
            "rate_per_s": summary["sent"] / DURATION_S,
            "simulator_rate_per_s": summary["rate"],
            "produced": ingest.metric("citysense_ingest_produced_records_total"),
            "sent": summary["sent"],
            "p50_ms": quantile(buckets, 0.5) * 1000,
            "p99_ms": quantile(buckets, 0.99) * 1000,
            "samples": buckets[-1][1] if buckets else 0,
        }
    finally:
        ingest.stop()


def soak(env: dict[str, str]) -> dict[str, Any]:
    ingest = Ingest(env, 1, f"soak-{int(time.time())}")
    duration = SOAK_MINUTES * 60
    samples: list[tuple[float, float]] = []
    try:
        sim = simulate(env, RATE_FOR_LATENCY, duration)
        started = time.monotonic()
        while sim.poll() is None:
            samples.append((time.monotonic() - started, ingest.rss() / 2**20))
            time.sleep(15)
        summary = _summary(sim)
    finally:
        ingest.stop()
    second_minute = [rss for t, rss in samples if 60 <= t < 120] or [samples[0][1]]
    last_minute = [rss for t, rss in samples if t >= duration - 60] or [samples[-1][1]]
    early, late = max(second_minute), max(last_minute)
    return {
        "minutes": SOAK_MINUTES,
        "sent": summary["sent"],
        "rss_minute_2_mb": early,
        "rss_last_minute_mb": late,
        "rss_max_mb": max(rss for _t, rss in samples),
        "flat": late <= early * 1.10,
    }


def main() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="citysense-bench-ingest-env-"))
    try:
        with temporary_stack("citysense-bench-ingest-", only=("mosquitto", "kafka")) as stack:
            env = _base_env(stack.env(), root)
            ceil = ceiling(env)
            runs = [throughput(env, 1), throughput(env, 2)]
            drain = backlog(env)
            same = int(drain["backlog"])
            drain_off = backlog(env, lean=_all_but(FastPath.MQTT_READ), messages=same)
            lat = latency(env)
            soaked = soak(env) if SOAK_MINUTES > 0 else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    best = max(runs, key=lambda r: r["ingest_per_s"])
    ratio = best["ingest_per_s"] / ceil["received_per_s"] if ceil["received_per_s"] else 0.0
    print(
        table(
            ["measure", "value"],
            [
                ["ceiling: mosquitto_sub -q 1 received msg/s", ceil["received_per_s"]],
                ["ceiling run: simulator published msg/s", ceil["published_per_s"]],
                *[
                    [f"ingest x{r['processes']}: Kafka-acknowledged msg/s", r["ingest_per_s"]]
                    for r in runs
                ],
                *[[f"ingest x{r['processes']}: peak RSS MB", r["peak_rss_mb"]] for r in runs],
                *[
                    [f"ingest x{r['processes']}: CPU µs per message", r["cpu_us_per_msg"]]
                    for r in runs
                ],
                ["best ingest / ceiling", ratio],
                [
                    "backlog drain, no publisher running: msg/s",
                    drain["drain_per_s"],
                ],
                [
                    "backlog drain: messages drained / published",
                    f"{drain['drained']:,.0f} / {drain['backlog']:,.0f}",
                ],
                ["backlog drain: CPU µs per message", drain["cpu_us_per_msg"]],
                ["backlog drain, mqtt-read off: msg/s", drain_off["drain_per_s"]],
                [
                    "backlog drain, mqtt-read off: messages drained / published",
                    f"{drain_off['drained']:,.0f} / {drain_off['backlog']:,.0f}",
                ],
                ["backlog drain, mqtt-read off: CPU µs per message", drain_off["cpu_us_per_msg"]],
                [f"latency at {lat['rate_per_s']:.0f} msg/s: p50 ms", lat["p50_ms"]],
                [f"latency at {lat['rate_per_s']:.0f} msg/s: p99 ms", lat["p99_ms"]],
                [
                    "latency run: messages sent / Kafka-acknowledged",
                    f"{lat['sent']:,.0f} / {lat['produced']:,.0f}",
                ],
                [
                    "latency run: simulator's own rate (incl. last acks)",
                    lat["simulator_rate_per_s"],
                ],
                *(
                    [
                        ["soak minutes", soaked["minutes"]],
                        ["soak RSS minute 2 MB", soaked["rss_minute_2_mb"]],
                        ["soak RSS last minute MB", soaked["rss_last_minute_mb"]],
                        ["soak RSS flat (≤ +10 %)", soaked["flat"]],
                    ]
                    if soaked
                    else []
                ),
            ],
        )
    )
    fast_paths: dict[str, dict[str, float]] = {}
    for name, off in (("mqtt-read", drain_off),):
        gain = drain["drain_per_s"] / off["drain_per_s"] - 1 if off["drain_per_s"] else 0.0
        fast_paths[name] = {"on": drain["drain_per_s"], "off": off["drain_per_s"], "gain": gain}
        print(
            f"fast path {name} (backlog drain): {drain['drain_per_s']:,.0f} msg/s on, "
            f"{off['drain_per_s']:,.0f} off ({gain:+.0%}; kept at >= +15 %)"
        )
    target = best["ingest_per_s"] >= 20_000 and ratio >= 0.6 and lat["p99_ms"] < 250
    if soaked is not None:
        target = target and bool(soaked["flat"])
    return {
        "ceiling": ceil,
        "throughput": runs,
        "backlog": drain,
        "backlog_mqtt_read_off": drain_off,
        "fast_paths": fast_paths,
        "latency": lat,
        "soak": soaked,
        "ratio_to_ceiling": ratio,
        "summary": (
            f"ingest {best['ingest_per_s']:,.0f} msg/s ({ratio:.0%} of mosquitto_sub "
            f"{ceil['received_per_s']:,.0f}); p99 {lat['p99_ms']:.0f} ms at "
            f"{lat['rate_per_s']:,.0f} msg/s"
        ),
        "target_met": target,
    }
