"""Session fixtures: the real Mosquitto, Tansu and PostgreSQL+TimescaleDB on free loopback ports.

The services start only when a test asks for them, in a temporary directory, through the
project's own ``Stack`` (so the fixtures also exercise it), and stop at the end of the session.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from citysense.settings import DatabaseSettings, KafkaSettings, MqttSettings, Settings
from citysense.stack import Stack, free_port


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    # Not tmp_path_factory: its directories are private to the user, and PostgreSQL, which
    # refuses to run as root, runs as the `postgres` user when the tests run as root.
    root = Path(tempfile.mkdtemp(prefix="citysense-stack-"))
    root.chmod(0o755)
    services = Stack(
        root=root,
        mqtt_port=free_port(),
        kafka_port=free_port(),
        postgres_port=free_port(),
        prometheus_port=free_port(),
        metrics_port=free_port(),
    )
    try:
        services.up()
        yield services
    finally:
        services.down()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    """Settings pointing at the test stack, as ``citysense stack env`` would give them."""
    env = stack.env()
    return Settings(
        mqtt=MqttSettings(url=env["CITYSENSE_MQTT_URL"]),
        kafka=KafkaSettings(bootstrap=env["CITYSENSE_KAFKA_BOOTSTRAP"], idempotence=False),
        database=DatabaseSettings(url=env["CITYSENSE_DATABASE_URL"]),
    )
