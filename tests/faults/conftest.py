"""The fault suite's own stack: Mosquitto and PostgreSQL+TimescaleDB from ``temporary_stack``, a
private Tansu that advertises the proxy's address, a fault proxy on every path a stage takes, and
the four stages as separate processes. One stack for the whole module: the scenarios run in
sequence on it, each with its own load, and each checks what it sent.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from citysense.registry import Registry, load_registry, scenario_path
from citysense.settings import KafkaSettings, MqttSettings, Settings
from citysense.stack import Stack, free_port, temporary_stack
from tests._lifecycle import clean_env
from tests._proxy import FaultProxy, proxied_kafka
from tests._stages import StageProcess
from tests.faults._checks import measurement_rows
from tests.faults._tap import KafkaTap

STAGES = ("sink", "publish", "aggregate", "ingest")  # start order; drain order is reversed
#: Per-process memory bound (RSS), the figure docs/faults.md states.
MEMORY_BOUND_BYTES = 768 * 1024 * 1024


def partition_seconds() -> float:
    """The length of each partition: the issue's 60 s unless CITYSENSE_FAULTS_PARTITION_S says
    otherwise (a developer's quick run; CI runs the 60 s)."""
    return float(os.environ.get("CITYSENSE_FAULTS_PARTITION_S", "60"))


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@dataclass
class Pipeline:
    stack: Stack
    settings: Settings
    kafka: KafkaSettings
    registry: Registry
    stages: dict[str, StageProcess]
    #: "kafka" (every stage and the tap), "mqtt:ingest", "pg:sink", "pg:publish".
    proxies: dict[str, FaultProxy]
    tap: KafkaTap
    #: Holds the password: kept out of the repr pytest prints with a failure.
    database_url: str = field(repr=False)

    def stored_rows(self) -> set[tuple[str, int]]:
        return measurement_rows(self.database_url)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql).fetchall()


class _RssSampler(threading.Thread):
    def __init__(self, stages: dict[str, StageProcess]) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.stages = stages
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            for stage in self.stages.values():
                stage.sample_rss()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    logs = tmp_path_factory.mktemp("faults")
    with (
        temporary_stack("citysense-faults-", only=("mosquitto", "postgres")) as stack,
        proxied_kafka() as (kafka, kafka_proxy),
    ):
        env = stack.env()
        proxies: dict[str, FaultProxy] = {"kafka": kafka_proxy}
        stages: dict[str, StageProcess] = {}
        sampler: _RssSampler | None = None
        tap: KafkaTap | None = None
        try:
            mqtt_target = urlsplit(env["CITYSENSE_MQTT_URL"]).port
            pg_target = urlsplit(env["CITYSENSE_DATABASE_URL"]).port
            assert mqtt_target is not None
            assert pg_target is not None
            proxies["mqtt:ingest"] = FaultProxy(free_port(), mqtt_target, "mqtt:ingest")
            proxies["pg:sink"] = FaultProxy(free_port(), pg_target, "pg:sink")
            proxies["pg:publish"] = FaultProxy(free_port(), pg_target, "pg:publish")
            for name, proxy in proxies.items():
                if name != "kafka":
                    proxy.start()
            common = {
                "CITYSENSE_KAFKA_BOOTSTRAP": kafka.bootstrap,
                "CITYSENSE_KAFKA_IDEMPOTENCE": "false",
                "CITYSENSE_STACK_DIR": str(logs / "no-stack"),
                "CITYSENSE_LOG_FORMAT": "json",
                "CITYSENSE_SHUTDOWN_DEADLINE_S": "30",
            }
            per_stage = {
                "ingest": {
                    "CITYSENSE_MQTT_URL": _with_port(
                        env["CITYSENSE_MQTT_URL"], proxies["mqtt:ingest"].listen_port
                    ),
                    "CITYSENSE_MQTT_CLIENT_ID": "faults-ingest",
                    "CITYSENSE_INGEST_RETRY_BACKOFF_MAX_S": "1",
                },
                "aggregate": {"CITYSENSE_AGGREGATE_COMMIT_INTERVAL_S": "1"},
                "sink": {
                    "CITYSENSE_DATABASE_URL": _with_port(
                        env["CITYSENSE_DATABASE_URL"], proxies["pg:sink"].listen_port
                    ),
                    "CITYSENSE_SINK_BATCH_MAX_WAIT_S": "0.2",
                    "CITYSENSE_SINK_RETRY_MAX_S": "2",
                },
                "publish": {
                    "CITYSENSE_DATABASE_URL": _with_port(
                        env["CITYSENSE_DATABASE_URL"], proxies["pg:publish"].listen_port
                    ),
                },
            }
            for stage in STAGES:
                port = free_port()
                port_key = "CITYSENSE_PUBLISH_PORT" if stage == "publish" else "CITYSENSE_HTTP_PORT"
                stage_env = clean_env(**common, **per_stage[stage], **{port_key: str(port)})
                stages[stage] = StageProcess(stage, stage_env, port, logs / f"{stage}.log")
            for stage in STAGES:
                stages[stage].start()
                stages[stage].wait_ready()
            sampler = _RssSampler(stages)
            sampler.start()
            tap = KafkaTap(kafka)
            tap.start()
            settings = Settings(
                mqtt=MqttSettings(url=env["CITYSENSE_MQTT_URL"]),
                kafka=kafka,
            )
            yield Pipeline(
                stack=stack,
                settings=settings,
                kafka=kafka,
                registry=load_registry(scenario_path("nation")),
                stages=stages,
                proxies=proxies,
                tap=tap,
                database_url=env["CITYSENSE_DATABASE_URL"],
            )
        finally:
            if tap is not None:
                tap.stop()
            if sampler is not None:
                sampler.stopped.set()
            for stage in reversed(STAGES):
                if stage in stages and stages[stage].running():
                    stages[stage].terminate()
            for name, proxy in proxies.items():
                if name != "kafka":
                    proxy.stop()
