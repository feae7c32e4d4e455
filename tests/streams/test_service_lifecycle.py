"""The aggregator's lifecycle on the real broker: each runner's task dying or returning, a start
step failing; resources read from the event loop (no task of the stage or its clients left)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from citysense.errors import StartupError
from citysense.registry import load_registry, scenario_path
from citysense.runtime import StageFailedError, run_components
from citysense.settings import AggregateSettings, HttpSettings, KafkaSettings, Settings
from citysense.stack import free_port
from streams import AggregateService
from streams import _service as service_module
from streams._rollup_runner import RollupRunner
from tests._lifecycle import HoldingComponent, probes

pytestmark = pytest.mark.integration


def _settings(settings: Settings) -> Settings:
    tag = uuid.uuid4().hex[:8]
    aggregate = AggregateSettings(
        group_id=f"aggregate-lifecycle-{tag}",
        rollup_group_id=f"aggregate-lifecycle-rollup-{tag}",
        kinds=("noise",),
        commit_interval_s=0.2,
    )
    return settings.model_copy(update={"aggregate": aggregate, "shutdown_deadline_s": 15.0})


def _raising(message: str) -> Callable[..., Any]:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(message)

    return broken


@contextlib.asynccontextmanager
async def _no_leaks() -> AsyncIterator[None]:
    before = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
    yield
    for _ in range(10):
        await asyncio.sleep(0)
    left = {t.get_name() for t in asyncio.all_tasks() if not t.done()} - before
    assert left == set()


@pytest.fixture(scope="module")
def registry() -> Any:
    return load_registry(scenario_path("nation"))


async def test_a_dying_window_runner_fails_the_stage(
    settings: Settings, registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs every poll, with or without records.
    monkeypatch.setattr(service_module._WindowRunner, "emit", _raising("injected emit fault"))
    async with _no_leaks():
        service = AggregateService(_settings(settings), registry)
        await service.start()
        try:
            with pytest.raises(
                StageFailedError, match="aggregate-window failed: RuntimeError: injected emit"
            ):
                await asyncio.wait_for(service.wait_failed(), 30)
            assert service.failure is not None
            assert not service.ready()
        finally:
            await service.stop()


async def test_a_rollup_runner_that_returns_fails_the_stage_probes_503_status_1(
    settings: Settings, registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def returns(_self: object) -> None:
        return None

    monkeypatch.setattr(RollupRunner, "run", returns)
    port = free_port()
    async with _no_leaks():
        service = AggregateService(_settings(settings), registry)
        holder = HoldingComponent()
        run = asyncio.create_task(
            run_components([service, holder], HttpSettings(port=port), shutdown_deadline_s=20)
        )
        await asyncio.wait_for(holder.stopping.wait(), 30)
        (health_status, health), (ready_status, ready) = await probes(port)
        holder.release.set()
        status = await asyncio.wait_for(run, 30)
    assert health_status == 503
    assert health["failed"] == {"aggregate": "aggregate: task aggregate-rollup ended unexpectedly"}
    assert ready_status == 503
    assert ready["checks"]["aggregate"] is False
    assert status == 1


async def test_a_consumer_that_cannot_start_closes_what_had_started(
    settings: Settings, registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}")
    from citysense.clients import kafka_consumer as real

    built: list[str | None] = []

    def consumer(kafka: KafkaSettings, *topics: str, group_id: str | None, **options: Any) -> Any:
        built.append(group_id)
        # The window runner's consumer (built first, started last) cannot reach Kafka; the
        # rollup's and the four side groups' can, and are started before it.
        target = dead if len(built) == 1 else kafka
        return real(target, *topics, group_id=group_id, **options)

    monkeypatch.setattr(service_module, "kafka_consumer", consumer)
    async with _no_leaks():
        service = AggregateService(_settings(settings), registry)
        with pytest.raises(Exception, match="Unable to bootstrap"):
            await service.start()
        assert not service.ready()
    assert len(built) == 6  # window, rollup, then the four side groups


async def test_kafka_unreachable_at_start_is_a_startup_error(
    settings: Settings, registry: Any
) -> None:
    config = _settings(settings).model_copy(
        update={"kafka": KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}")}
    )
    async with _no_leaks():
        service = AggregateService(config, registry)
        with pytest.raises(StartupError, match=r"Kafka at 127\.0\.0\.1:\d+ is unreachable"):
            await service.start()
