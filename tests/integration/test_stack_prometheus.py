"""The embedded Prometheus scrapes every stage's metrics port (checked by Prometheus itself)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from citysense.stack import Stack, free_port, prometheus_config

pytestmark = pytest.mark.integration


def test_the_generated_configuration_is_valid_for_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    defaults = {"run": 28080, "ingest": 28081, "aggregate": 28082, "sink": 28083, "publish": 28084}
    for ports in (defaults, {"run": 9000, "ingest": 9000, "publish": 28084}, {}):
        conf = tmp_path / "prometheus.yml"
        conf.write_text(prometheus_config(ports))
        checked = subprocess.run(
            [promtool, "check", "config", str(conf)], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def _active_targets(prometheus_port: int) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{prometheus_port}/api/v1/targets"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 503:  # still starting (loading its rules, replaying its WAL)
            return []
        raise
    targets: list[dict[str, object]] = body["data"]["activeTargets"]
    return targets


def test_prometheus_scrapes_each_stage_and_the_publication_api() -> None:
    root = Path(tempfile.mkdtemp(prefix="citysense-prom-"))
    ports = {stage: free_port() for stage in ("run", "ingest", "aggregate", "sink", "publish")}
    stack = Stack(
        root=root,
        mqtt_port=free_port(),
        kafka_port=free_port(),
        postgres_port=free_port(),
        prometheus_port=free_port(),
        metrics_ports=ports,
    )
    try:
        stack.up(only=["prometheus"])
        deadline = time.monotonic() + 30
        while len(targets := _active_targets(stack.prometheus_port)) < len(ports):
            assert time.monotonic() < deadline, targets
            time.sleep(0.2)
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
    scraped = {
        str(target["scrapeUrl"]): dict(target["labels"])  # type: ignore[call-overload]
        for target in targets
    }
    assert set(scraped) == {f"http://127.0.0.1:{port}/metrics" for port in ports.values()}
    for stage, port in ports.items():
        assert scraped[f"http://127.0.0.1:{port}/metrics"]["stage"] == stage
