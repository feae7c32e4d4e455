"""The sink's lifecycle on the real stack: each background task dying, each start step failing.

Failures are injected by replacing one coroutine of the real service (``monkeypatch``). That
resources are released is read from the outside: the database's ``pg_stat_activity`` (no
connection of the sink's pool left) and the event loop (no task of the sink or of its Kafka
clients left).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from citysense.clients import kafka_consumer
from citysense.errors import StartupError
from citysense.runtime import StageFailedError
from citysense.settings import DatabaseSettings, KafkaSettings, Settings
from citysense.stack import free_port
from sinks.timescale import SinkSettings, TimescaleSink
from sinks.timescale import _service as service_module
from tests.sinks._helpers import (
    framed,
    fresh_database,
    noise_record,
    produce,
    scalar,
    unique,
    wait_until,
    with_database,
)

pytestmark = pytest.mark.integration


def _config(topic: str) -> SinkSettings:
    return SinkSettings(
        group_id=unique("sink-lifecycle"),
        topics=(topic,),
        dead_letter_topic=unique("test.deadletter"),
        batch_max_records=100,
        batch_max_wait_s=0.1,
        retry_initial_s=0.1,
        retry_max_s=1.0,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )


def _raising(message: str) -> Callable[..., Any]:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(message)

    return broken


async def _sink_connections(admin_url: str) -> int:
    return int(
        await scalar(
            admin_url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'citysense-sink'",
        )
    )


@contextlib.asynccontextmanager
async def _no_leaks(admin_url: str) -> AsyncIterator[None]:
    """Every task started inside is finished afterwards, and the pool's connections closed."""
    before = {t for t in asyncio.all_tasks() if not t.done()}
    yield
    for _ in range(10):  # let the last done callbacks run
        await asyncio.sleep(0)
    left = {t.get_name() for t in asyncio.all_tasks() if not t.done()} - {
        t.get_name() for t in before
    }
    assert left == set()
    await wait_until(lambda: _none(admin_url), 10, "the sink's database connections to close")


async def _none(admin_url: str) -> bool:
    return await _sink_connections(admin_url) == 0


# --- a background task dies ----------------------------------------------------------------


async def test_a_dying_consume_task_fails_the_stage_and_stop_releases_everything(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TimescaleSink, "_fetch", _raising("injected fetch fault"))
    admin = settings.database.url.get_secret_value()
    async with fresh_database(settings) as db, _no_leaks(admin):
        sink = TimescaleSink(db, _config(unique("test.noise")))
        await sink.start()
        try:
            with pytest.raises(
                StageFailedError, match="sink-timescale-consume failed: RuntimeError: injected"
            ):
                await asyncio.wait_for(sink.wait_failed(), 30)
            assert sink.failure is not None
            assert not sink.ready()
        finally:
            await sink.stop()


async def test_a_dying_write_task_fails_the_stage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "write_rows", _raising("injected write fault"))
    topic = unique("test.noise")
    await produce(settings, topic, framed("NoiseMeasurement", [noise_record("w", 0)]))
    admin = settings.database.url.get_secret_value()
    async with fresh_database(settings) as db, _no_leaks(admin):
        sink = TimescaleSink(db, _config(topic))
        await sink.start()
        try:
            with pytest.raises(
                StageFailedError, match="sink-timescale-write failed: RuntimeError: injected"
            ):
                await asyncio.wait_for(sink.wait_failed(), 60)
            assert not sink.ready()
        finally:
            await sink.stop()


async def test_a_dying_retention_task_fails_the_stage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server has TimescaleDB's Apache part only: the sink runs retention itself.
    monkeypatch.setattr(service_module, "drop_old_chunks", _raising("injected retention fault"))
    admin = settings.database.url.get_secret_value()
    async with fresh_database(settings) as db, _no_leaks(admin):
        sink = TimescaleSink(db, _config(unique("test.noise")))
        await sink.start()
        try:
            with pytest.raises(
                StageFailedError, match="sink-retention failed: RuntimeError: injected"
            ):
                await asyncio.wait_for(sink.wait_failed(), 60)
        finally:
            await sink.stop()


# --- a start step fails --------------------------------------------------------------------


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_a_wrong_database_password_is_a_startup_error_without_the_password(
    settings: Settings,
) -> None:
    admin = settings.database.url.get_secret_value()
    wrong = "wrong-password-123"
    db = settings.model_copy(
        update={"database": DatabaseSettings(url=_with_password(admin, wrong))}
    )
    async with _no_leaks(admin):
        sink = TimescaleSink(db, _config(unique("test.noise")))
        with pytest.raises(StartupError) as raised:
            await sink.start()
        await sink.stop()
    message = str(raised.value)
    assert "wrong password or user" in message
    assert "CITYSENSE_DATABASE_URL or database.url" in message
    assert wrong not in message


async def test_a_missing_database_is_a_startup_error(settings: Settings) -> None:
    admin = settings.database.url.get_secret_value()
    db = settings.model_copy(
        update={"database": DatabaseSettings(url=with_database(admin, unique("absent")))}
    )
    async with _no_leaks(admin):
        sink = TimescaleSink(db, _config(unique("test.noise")))
        with pytest.raises(StartupError, match="the database does not exist"):
            await sink.start()


async def test_kafka_unreachable_at_start_is_a_startup_error(settings: Settings) -> None:
    admin = settings.database.url.get_secret_value()
    db = settings.model_copy(
        update={"kafka": KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", idempotence=False)}
    )
    async with _no_leaks(admin):
        sink = TimescaleSink(db, _config(unique("test.noise")))
        with pytest.raises(StartupError, match=r"Kafka at 127\.0\.0\.1:\d+ is unreachable"):
            await sink.start()


async def test_a_consumer_that_cannot_start_closes_the_pool_and_the_producer(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}")

    def unreachable_consumer(_kafka: KafkaSettings, *topics: str, **options: Any) -> Any:
        return kafka_consumer(dead, *topics, **options)

    monkeypatch.setattr(service_module, "kafka_consumer", unreachable_consumer)
    admin = settings.database.url.get_secret_value()
    async with fresh_database(settings) as db, _no_leaks(admin):
        sink = TimescaleSink(db, _config(unique("test.noise")))
        with pytest.raises(Exception, match="Unable to bootstrap"):
            await sink.start()
        assert not sink.ready()
