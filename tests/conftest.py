"""Session fixtures: the real Mosquitto, Tansu and PostgreSQL+TimescaleDB on free loopback ports.

The services start only when a test asks for them, in a temporary directory, through the
project's own ``Stack`` (so the fixtures also exercise it), and stop at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from citysense.settings import DatabaseSettings, KafkaSettings, MqttSettings, Settings
from citysense.stack import Stack, temporary_stack

_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test a module through a compiled extension older than its source.

    ``make native`` compiles the hot modules with mypyc next to their sources, and Python imports
    the extension first: after an edit, the tests would silently run the old code.
    """
    stale = [
        str(source.relative_to(_ROOT))
        for source in sorted(_ROOT.glob("*/**/*.py"))
        if ".venv" not in source.parts
        for extension in source.parent.glob(f"{source.stem}.cpython-*.so")
        if extension.stat().st_mtime < source.stat().st_mtime
    ]
    if stale:
        raise pytest.UsageError(
            f"compiled extensions are older than {', '.join(stale)}: run `make native`"
        )


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


@pytest.fixture(params=["1", "0"], ids=["fast-on", "fast-off"])
def lean(request: pytest.FixtureRequest) -> str:
    """``CITYSENSE_LEAN`` for the suites that run in both modes (delivery, kill -9, outages):
    every fast path on, then every one off (the libraries' public paths,
    docs/runtime.md#fast-paths)."""
    value: str = request.param
    return value
