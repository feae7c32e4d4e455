"""The service runtime: health endpoints and graceful SIGTERM through ``citysense run``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from citysense.settings import Settings
from citysense.stack import free_port

CITYSENSE = str(Path(sys.executable).with_name("citysense"))


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  (loopback only)
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.integration
def test_run_serves_health_and_exits_zero_on_sigterm(tmp_path: Path, settings: Settings) -> None:
    port = free_port()
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env.update(
        CITYSENSE_HTTP_PORT=str(port),
        CITYSENSE_PUBLISH_PORT=str(api_port),
        CITYSENSE_STACK_DIR=str(tmp_path),
        CITYSENSE_MQTT_URL=settings.mqtt.url.get_secret_value(),
        CITYSENSE_MQTT_CLIENT_ID=f"run-{port}",
        CITYSENSE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        CITYSENSE_KAFKA_IDEMPOTENCE="false",
        CITYSENSE_DATABASE_URL=settings.database.url.get_secret_value(),
        CITYSENSE_SINK_GROUP_ID=f"run-sink-{port}",
        CITYSENSE_AGGREGATE_GROUP_ID=f"run-aggregate-{port}",
    )
    proc = subprocess.Popen(
        [CITYSENSE, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, "health server did not start"
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                time.sleep(0.1)
        assert status == 200
        assert json.loads(body) == {"status": "alive"}
        # Not ready while the stages start (migrations, connections), then ready.
        while (ready := _get(f"http://127.0.0.1:{port}/readyz"))[0] != 200:
            assert time.monotonic() < deadline + 30, ready
            time.sleep(0.2)
        assert json.loads(ready[1])["ready"] is True
        assert set(json.loads(ready[1])["checks"]) == {
            "ingest",
            "aggregate",
            "sink-timescale",
            "publish",
        }
        # The publication API answers on its own port, and its metrics are in the stage's.
        api = f"http://127.0.0.1:{api_port}/api/explore/v2.1/catalog/datasets/bruit-horaire"
        status, body = _get(f"{api}/records?limit=1")
        assert status == 200, body
        assert "total_count" in json.loads(body)
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert b"process_resident_memory_bytes" in body
        assert b"citysense_ingest_received_messages_total" in body
        assert b"citysense_sink_" in body
        assert b"citysense_aggregate_records_total" in body
        assert b"citysense_publish_requests_total" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _out, err = proc.communicate()
    # Structured JSON logs: every stderr line is one JSON object.
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    messages = [entry.get("message") for entry in lines]
    assert "publication API listening" in messages
    assert "component stopped" in messages


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("CITYSENSE_HTTP_PORT", "not-a-port", "http.port"),
        ("CITYSENSE_KAFKA_BOOTSTRAP", "localhost", "kafka.bootstrap"),
        ("CITYSENSE_MQTT_URL", "http://127.0.0.1:1", "mqtt.url"),
    ],
)
def test_bad_setting_fails_at_start_naming_the_field(
    tmp_path: Path, variable: str, value: str, field: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env.update({variable: value, "CITYSENSE_STACK_DIR": str(tmp_path)})
    result = subprocess.run(
        [CITYSENSE, "run"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert field in result.stderr
    assert "Traceback" not in result.stderr
