"""The simulator against the real Mosquitto: its summary matches what a subscriber received."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from citysense.clients import mqtt_client
from citysense.registry import scenario_path
from citysense.settings import Settings
from simulators import SimulationSpec, run_simulation

pytestmark = pytest.mark.integration

SUBSCRIPTIONS = [
    "sensors/+/up",
    "gateways/+/sensors/+/up",
    "application/+/device/+/event/up",
    "v3/+/devices/+/up",
]


class _Counter:
    def __init__(self, settings: Settings) -> None:
        self.count = 0
        self.ready = threading.Event()
        self.client, host, port = mqtt_client(settings.mqtt, f"count-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *_a: c.subscribe([(t, 1) for t in SUBSCRIPTIONS])
        self.client.on_subscribe = lambda *_a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def _on_message(self, *_args: object) -> None:
        self.count += 1

    def wait_for(self, expected: int, timeout: float = 30) -> None:
        import time

        deadline = time.monotonic() + timeout
        while self.count < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # nothing more should arrive

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_summary_matches_what_a_subscriber_received(settings: Settings) -> None:
    counter = _Counter(settings)
    try:
        summary = run_simulation(
            SimulationSpec(
                registry_path=scenario_path("nation"),
                mqtt=settings.mqtt,
                seed=5,
                rate=2000,
                messages=3000,
                bad_ratio=0.1,
                late_ratio=0.1,
            )
        )
        counter.wait_for(summary["sent"])
    finally:
        counter.close()
    assert summary["sent"] == 3000
    assert counter.count == summary["sent"]
    assert 200 < summary["malformed"] < 400
    assert sum(summary["by_kind"].values()) == summary["sent"] - summary["malformed"]


def test_cli_simulate_with_processes_prints_a_json_summary(settings: Settings) -> None:
    counter = _Counter(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env["CITYSENSE_MQTT_URL"] = settings.mqtt.url.get_secret_value()
    env["CITYSENSE_STACK_DIR"] = "/nonexistent"
    try:
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("citysense")),
                "simulate",
                "--scenario",
                "nation",
                "--messages",
                "2001",
                "--rate",
                "0",
                "--processes",
                "2",
                "--seed",
                "9",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        counter.wait_for(summary["sent"])
    finally:
        counter.close()
    assert set(summary) == {"sent", "malformed", "late", "by_kind", "rate"}
    assert summary["sent"] == 2001
    assert counter.count == 2001
    assert summary["rate"] > 0


def test_cli_simulate_needs_a_bound() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("citysense")), "simulate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "CITYSENSE_STACK_DIR": "/nonexistent"},
    )
    assert result.returncode == 2
    assert "--duration" in result.stderr


def test_scenario_file_is_shipped() -> None:
    assert scenario_path("nation").is_file()


def test_the_journal_names_every_acknowledged_message(settings: Settings) -> None:
    """The publisher's journal, the fault suite's reference: each message once, with its PUBACK."""
    from citysense.registry import load_registry
    from simulators import Fleet, Outgoing, Publisher

    messages = Fleet(load_registry(scenario_path("nation")), seed=9).next_batch(2500)
    journal: list[tuple[Outgoing, bool]] = []
    with Publisher(
        settings.mqtt,
        f"journal-{uuid.uuid4().hex[:8]}",
        max_inflight=200,
        journal=lambda m, a: journal.append((m, a)),
    ) as publisher:
        for first in range(0, len(messages), 100):
            publisher.publish_batch(messages[first : first + 100])
        publisher.wait_acked()
    assert all(acked for _, acked in journal)
    assert sorted(id(m) for m, _ in journal) == sorted(id(m) for m in messages)
