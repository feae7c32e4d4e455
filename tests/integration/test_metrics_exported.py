"""Every metric of the catalogue is exported by a running pipeline, not only defined in the code.

``citysense run`` (every stage in one process) runs on the test stack against a fresh database
while the simulator publishes the reference scenario to Mosquitto, with malformed and late
messages among them; its ``/metrics`` is then scraped. Each catalogue metric must be there
(``# HELP`` and ``# TYPE``), and those this run must have fed must show it (:func:`fed`), among
them the ones fed by hooks (fleet health, Mosquitto's queue depth from ``$SYS``, the end-to-end
latency at the sink's commit, the aggregator's consumer lag).
"""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest

from citysense.ops import collect_metrics, metric_modules
from citysense.settings import Settings
from citysense.stack import free_port
from tests._lifecycle import ROOT, clean_env, probe
from tests.sinks._helpers import fresh_database, wait_until

pytestmark = pytest.mark.integration

CITYSENSE = str(Path(sys.executable).with_name("citysense"))

#: Metrics this run must have fed: the simulator's LoRaWAN uplinks (RSSI/SNR), malformed
#: messages (dead letters), rows committed (latency), the aggregator reading its topics.
#: Histograms are checked through their ``_count`` series.
MUST_BE_FED = (
    "citysense_ingest_received_messages_total",
    "citysense_ingest_decoded_messages_total",
    "citysense_ingest_dead_letters_total",
    "citysense_ingest_produced_records_total",
    "citysense_ingest_decode_seconds",
    "citysense_ingest_latency_seconds",
    "citysense_ingest_kafka_produce_seconds",
    "citysense_ingest_mqtt_connected",
    "citysense_ingest_broker_stored_messages",
    "citysense_ingest_broker_stored_bytes",
    "citysense_fleet_sensors",
    "citysense_fleet_silent_sensors",
    "citysense_fleet_low_battery_sensors",
    "citysense_fleet_rssi_dbm",
    "citysense_fleet_snr_db",
    "citysense_aggregate_records_total",
    "citysense_aggregate_consumer_lag_records",
    "citysense_aggregate_watermark_delay_seconds",
    "citysense_aggregate_open_windows",
    "citysense_aggregate_ready",
    "citysense_sink_records_total",
    "citysense_sink_rows_written_total",
    "citysense_sink_batch_duration_seconds",
    "citysense_sink_commit_duration_seconds",
    "citysense_sink_consumer_lag_records",
    "citysense_sink_end_to_end_latency_seconds",
    "citysense_sink_ready",
)


def catalogue() -> dict[str, str]:
    """Name → type of every catalogue metric."""
    return {spec.name: spec.type for spec in collect_metrics(metric_modules(ROOT))}


def exported(text: str) -> tuple[dict[str, str], dict[str, list[float]]]:
    """From a Prometheus text exposition: name → declared type (``# TYPE``, which
    prometheus_client writes with a counter's ``_total``), and sample name → its values."""
    declared: dict[str, str] = {}
    samples: dict[str, list[float]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, metric_type = line.split(" ", 3)
            declared[name] = metric_type
        elif line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples.setdefault(series.split("{", 1)[0], []).append(float(value))
    return declared, samples


def fed(metric_type: str, values: list[float]) -> bool:
    """Whether a metric's samples show the run fed it: a counter or a histogram counted
    something (an unlabelled one always has a sample, at 0); a gauge has a value that is not NaN
    (0 is a value: no lag, no silent sensor; the queue-depth gauges are NaN until $SYS speaks)."""
    if metric_type in ("counter", "histogram"):
        return sum(values) > 0
    return any(not math.isnan(v) for v in values)


def missing(text: str, names: dict[str, str], must_be_fed: Iterable[str]) -> dict[str, str]:
    """What ``text`` lacks: catalogue metrics not declared (or declared with another type), and
    metrics of ``must_be_fed`` the run did not feed."""
    declared, samples = exported(text)
    out = {}
    for name, metric_type in names.items():
        if declared.get(name) != metric_type:
            out[name] = f"not declared as a {metric_type} (found {declared.get(name)})"
    for name in must_be_fed:
        metric_type = names.get(name, "")
        series = f"{name}_count" if metric_type == "histogram" else name
        if not fed(metric_type, samples.get(series, [])):
            out.setdefault(name, "not fed")
    return out


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_the_check_names_what_is_missing() -> None:
    """The comparison below can fail: a metric absent, of another type, or not fed."""
    text = (
        "# HELP citysense_a_total A.\n# TYPE citysense_a_total counter\n"
        'citysense_a_total{reason="x"} 1.0\n'
        "# HELP citysense_b_seconds B.\n# TYPE citysense_b_seconds histogram\n"
        'citysense_b_seconds_bucket{le="+Inf"} 0.0\ncitysense_b_seconds_count 0.0\n'
        "# HELP citysense_c C.\n# TYPE citysense_c gauge\n"
        "# HELP citysense_e E.\n# TYPE citysense_e gauge\ncitysense_e NaN\n"
        "# HELP citysense_f F.\n# TYPE citysense_f gauge\ncitysense_f 0.0\n"
    )
    names = {
        "citysense_a_total": "counter",
        "citysense_b_seconds": "histogram",
        "citysense_c": "counter",
        "citysense_d": "gauge",
        "citysense_e": "gauge",
        "citysense_f": "gauge",
    }
    must = ["citysense_a_total", "citysense_b_seconds", "citysense_e", "citysense_f"]
    assert missing(text, names, must) == {
        "citysense_b_seconds": "not fed",
        "citysense_c": "not declared as a counter (found gauge)",
        "citysense_d": "not declared as a gauge (found None)",
        "citysense_e": "not fed",
    }


def test_the_sampled_list_is_in_the_catalogue() -> None:
    assert set(MUST_BE_FED) <= set(catalogue())


async def test_every_catalogue_metric_is_exported_by_a_running_pipeline(
    settings: Settings, tmp_path: Path
) -> None:
    names = catalogue()
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    async with fresh_database(settings) as db:
        # Not migrated: `citysense run` on a fresh database, as `make run` on a fresh machine.
        # The sink migrates in its background task; the publication API waits for it (its
        # views do not exist before).
        url = db.database.url.get_secret_value()
        env = clean_env(
            CITYSENSE_HTTP_PORT=str(port),
            CITYSENSE_PUBLISH_PORT=str(free_port()),
            CITYSENSE_STACK_DIR=str(tmp_path),
            CITYSENSE_MQTT_URL=settings.mqtt.url.get_secret_value(),
            CITYSENSE_MQTT_CLIENT_ID=f"metrics-{tag}",
            CITYSENSE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
            CITYSENSE_KAFKA_IDEMPOTENCE="false",
            CITYSENSE_DATABASE_URL=url,
            CITYSENSE_SINK_GROUP_ID=f"metrics-sink-{tag}",
            CITYSENSE_SINK_BATCH_MAX_WAIT_S="0.2",
            CITYSENSE_AGGREGATE_GROUP_ID=f"metrics-aggregate-{tag}",
            CITYSENSE_AGGREGATE_ROLLUP_GROUP_ID=f"metrics-rollup-{tag}",
            CITYSENSE_INGEST_FLEET_REFRESH_S="1",
            CITYSENSE_SHUTDOWN_DEADLINE_S="15",
            CITYSENSE_LOG_LEVEL="WARNING",
        )
        log_path = tmp_path / "run.log"
        with log_path.open("wb") as log:
            pipeline = subprocess.Popen(  # noqa: ASYNC220 (a long-lived child, stopped below)
                [CITYSENSE, "run"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        try:

            async def ready() -> bool:
                if pipeline.poll() is not None:
                    raise AssertionError(f"citysense run exited:\n{log_path.read_text()}")
                try:
                    status, _ = await asyncio.to_thread(probe, port, "/readyz")
                except OSError:
                    return False
                return status == 200

            await wait_until(ready, 90, "citysense run ready")
            simulator = await asyncio.create_subprocess_exec(
                CITYSENSE,
                *("simulate", "--messages", "600", "--rate", "300", "--seed", "7"),
                *("--bad-ratio", "0.05", "--late-ratio", "0.05"),
                env={**env, "CITYSENSE_MQTT_CLIENT_ID": f"metrics-simulator-{tag}"},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
            assert await asyncio.wait_for(simulator.wait(), 60) == 0

            last: dict[str, str] = {}

            async def all_exported() -> bool:
                nonlocal last
                last = missing(await asyncio.to_thread(scrape, port), names, MUST_BE_FED)
                return not last

            try:
                await wait_until(all_exported, 60, "every catalogue metric on /metrics", 1.0)
            except AssertionError:
                assert last == {}  # names what is missing
                raise
        finally:
            pipeline.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(pipeline.wait, 40)
            except subprocess.TimeoutExpired:
                pipeline.kill()
                raise
        assert code == 0, log_path.read_text()
