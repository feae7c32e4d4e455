"""Session fixtures: the real Mosquitto, Tansu and PostgreSQL+TimescaleDB on free loopback ports.

The services start only when a test asks for them, in a temporary directory, through the
project's own ``Stack`` (so the fixtures also exercise it), and stop at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from citysense.settings import DatabaseSettings, KafkaSettings, MqttSettings, Settings
from citysense.stack import Stack, temporary_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with temporary_stack("citysense-stack-") as services:
        yield services


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    """Settings pointing at the test stack, as ``citysense stack env`` would give them."""
    env = stack.env()
    return Settings(
        mqtt=MqttSettings(url=env["CITYSENSE_MQTT_URL"]),
        kafka=KafkaSettings(bootstrap=env["CITYSENSE_KAFKA_BOOTSTRAP"], idempotence=False),
        database=DatabaseSettings(url=env["CITYSENSE_DATABASE_URL"]),
    )
