"""The shared lifecycle and runtime: supervised tasks, undo on a failed start, probes, deadlines.

The components here are small test doubles of a stage (no service is faked: they own nothing
but tasks); the stages' own lifecycles against the real services are tested in their packages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import urllib.error
import urllib.request

import pytest

from citysense.errors import StartupError
from citysense.runtime import Lifecycle, StageFailedError, run_components
from citysense.runtime import run as runtime_run
from citysense.settings import HttpSettings
from citysense.stack import free_port


async def _forever() -> None:
    await asyncio.Event().wait()


async def _boom() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("injected")


async def _returns() -> None:
    await asyncio.sleep(0)


async def _settle(lifecycle: Lifecycle) -> None:
    """Let done callbacks run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_task_that_raises_fails_the_stage_with_its_reason() -> None:
    lifecycle = Lifecycle("demo")
    lifecycle.spawn(_boom(), name="demo-worker")
    with pytest.raises(StageFailedError, match=r"demo: task demo-worker failed: RuntimeError: inj"):
        await asyncio.wait_for(lifecycle.wait_failed(), 5)
    assert lifecycle.failed
    assert isinstance(lifecycle.error, RuntimeError)
    await lifecycle.close()


async def test_a_loop_task_that_returns_fails_the_stage_a_finite_one_does_not() -> None:
    finite = Lifecycle("finite")
    finite.spawn(_returns(), name="one-job", finite=True)
    looping = Lifecycle("looping")
    looping.spawn(_returns(), name="loop")
    await _settle(looping)
    assert finite.failure is None
    assert looping.failure == "task loop ended unexpectedly"
    await finite.close()
    await looping.close()


async def test_a_task_cancelled_by_someone_else_fails_the_stage() -> None:
    lifecycle = Lifecycle("demo")
    task = lifecycle.spawn(_forever(), name="victim")
    await asyncio.sleep(0)
    task.cancel()
    await _settle(lifecycle)
    assert lifecycle.failure == "task victim was cancelled"
    await lifecycle.close()


async def test_ends_on_purpose_or_while_stopping_are_not_failures() -> None:
    lifecycle = Lifecycle("demo")
    owned = lifecycle.spawn(_forever(), name="owned")
    await lifecycle.cancel(owned)
    assert owned.cancelled()
    lifecycle.spawn(_forever(), name="left-running")
    draining = lifecycle.spawn(_boom(), name="draining")
    lifecycle.begin_stop()
    await _settle(lifecycle)
    assert draining.done()
    await lifecycle.close()
    assert lifecycle.failure is None


async def test_the_first_reason_is_kept() -> None:
    lifecycle = Lifecycle("demo")
    lifecycle.fail("first")
    lifecycle.fail("second")
    assert lifecycle.failure == "first"


async def test_a_failed_start_undoes_its_steps_newest_first_even_when_one_undo_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lifecycle = Lifecycle("demo")
    undone: list[str] = []

    def undo(name: str, fail: bool = False):
        async def step() -> None:
            undone.append(name)
            if fail:
                raise OSError("socket already gone")

        return step

    spawned: list[asyncio.Task[None]] = []

    async def start() -> None:
        async with lifecycle.starting():
            lifecycle.started("producer", undo("producer"))
            lifecycle.started("batcher", undo("batcher", fail=True))
            spawned.append(lifecycle.spawn(_forever(), name="flusher"))
            lifecycle.started("listener", undo("listener"))
            raise ConnectionError("third step")

    with pytest.raises(ConnectionError, match="third step"):
        await start()
    assert undone == ["listener", "batcher", "producer"]
    assert spawned[0].cancelled()
    assert lifecycle.failure is None
    assert any("could not stop cleanly" in r.getMessage() for r in caplog.records)
    await lifecycle.close()  # twice is harmless
    assert undone == ["listener", "batcher", "producer"]


class _Component:
    """A stage double: one background task in a Lifecycle; ``stop`` may wait for the test."""

    def __init__(self, name: str, job=_forever, release: asyncio.Event | None = None) -> None:
        self.name = name
        self.lifecycle = Lifecycle(name)
        self._job = job
        self.release = release
        self.stopping = asyncio.Event()
        self.stopped = False
        self.started = asyncio.Event()

    async def start(self) -> None:
        self.lifecycle.spawn(self._job(), name=f"{self.name}-task")
        self.started.set()

    async def stop(self) -> None:
        self.stopping.set()
        self.lifecycle.begin_stop()
        if self.release is not None:
            await self.release.wait()
        await self.lifecycle.close()
        self.stopped = True

    def ready(self) -> bool:
        return self.started.is_set() and not self.lifecycle.failed

    async def wait_failed(self) -> None:
        await self.lifecycle.wait_failed()


class _FailingStart(_Component):
    async def start(self) -> None:
        raise StartupError("database x: wrong password or user; check database.url")


def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_a_dying_task_makes_probes_503_and_the_exit_status_1() -> None:
    port = free_port()
    release = asyncio.Event()
    dying = _Component("dying", job=_boom)
    # Listed last, stopped first: its stop holds the shutdown while the test reads the probes.
    holder = _Component("holder", release=release)
    run = asyncio.create_task(
        run_components(
            [dying, holder], HttpSettings(port=port), shutdown_deadline_s=30, stop_event=None
        )
    )
    await asyncio.wait_for(holder.stopping.wait(), 10)
    healthz = await asyncio.to_thread(_get, port, "/healthz")
    readyz = await asyncio.to_thread(_get, port, "/readyz")
    release.set()
    status = await asyncio.wait_for(run, 10)
    assert healthz[0] == 503
    assert healthz[1]["status"] == "failed"
    failed = healthz[1]["failed"]
    assert isinstance(failed, dict)
    assert "dying-task failed: RuntimeError: injected" in failed["dying"]
    assert readyz[0] == 503
    assert readyz[1]["ready"] is False
    assert readyz[1]["failed"] == failed
    assert status == 1
    assert dying.stopped
    assert holder.stopped


async def test_a_signal_stops_cleanly_with_status_0_and_probes_say_stopping() -> None:
    port = free_port()
    release = asyncio.Event()
    stop = asyncio.Event()
    component = _Component("calm", release=release)
    run = asyncio.create_task(
        run_components(
            [component], HttpSettings(port=port), shutdown_deadline_s=30, stop_event=stop
        )
    )
    await asyncio.wait_for(component.started.wait(), 10)
    before = await asyncio.to_thread(_get, port, "/readyz")
    stop.set()
    await asyncio.wait_for(component.stopping.wait(), 10)
    during = await asyncio.to_thread(_get, port, "/readyz")
    alive = await asyncio.to_thread(_get, port, "/healthz")
    release.set()
    assert await asyncio.wait_for(run, 10) == 0
    assert before == (200, {"ready": True, "checks": {"calm": True}})
    assert during[0] == 503
    assert during[1]["stopping"] is True
    assert alive == (200, {"status": "alive"})


async def test_a_stop_that_hangs_is_abandoned_at_the_deadline_with_status_1() -> None:
    stop = asyncio.Event()
    never = asyncio.Event()
    component = _Component("stuck", release=never)
    run = asyncio.create_task(
        run_components([component], HttpSettings(port=0), shutdown_deadline_s=0.5, stop_event=stop)
    )
    await asyncio.wait_for(component.started.wait(), 10)
    stop.set()
    assert await asyncio.wait_for(run, 10) == 1


async def test_a_failed_start_stops_the_started_components_in_reverse_and_raises() -> None:
    first, second = _Component("first"), _Component("second")
    order: list[str] = []
    for component in (first, second):
        original = component.stop

        async def stop(original=original, name=component.name) -> None:
            order.append(name)
            await original()

        component.stop = stop  # type: ignore[method-assign]
    failing = _FailingStart("third")
    with pytest.raises(StartupError, match="wrong password"):
        await run_components([first, second, failing], HttpSettings(port=0), shutdown_deadline_s=5)
    assert order == ["second", "first"]
    assert first.stopped
    assert second.stopped


async def test_a_metrics_port_in_use_is_one_line_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        component = _Component("never-started")
        with pytest.raises(StartupError) as raised:
            await run_components([component], HttpSettings(port=port), shutdown_deadline_s=5)
    assert str(raised.value) == (
        f"metrics port {port} is in use; set CITYSENSE_HTTP_PORT or http.port"
    )
    assert not component.started.is_set()


def test_each_stage_has_its_own_default_port_unless_one_is_set() -> None:
    default = HttpSettings()
    ports = {stage: default.port_for(stage) for stage in ("run", "ingest", "aggregate", "sink")}
    assert ports == {"run": 28080, "ingest": 28081, "aggregate": 28082, "sink": 28083}
    assert HttpSettings(port=9000).port_for("sink") == 9000


def test_lifecycle_logs_name_the_component(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    Lifecycle("sink-timescale").fail("task x failed")
    [record] = caplog.records
    assert record.component == "sink-timescale"  # type: ignore[attr-defined]
    assert record.reason == "task x failed"  # type: ignore[attr-defined]


# --- shutdown: what the shutdown cancels is not a failure, what dies on its own still is ------


async def test_an_undo_that_lets_out_a_cancellation_does_not_skip_the_others() -> None:
    # aiokafka's consumer.stop() does this when its broker is gone.
    lifecycle = Lifecycle("demo")
    undone: list[str] = []

    async def producer() -> None:
        undone.append("producer")

    async def consumer() -> None:
        undone.append("consumer")
        raise asyncio.CancelledError

    lifecycle.started("producer", producer)
    lifecycle.started("consumer", consumer)
    await lifecycle.close()
    assert undone == ["consumer", "producer"]


class _CancelledStop(_Component):
    async def stop(self) -> None:
        await super().stop()
        raise asyncio.CancelledError  # a stop whose inner cancellation escaped


async def test_a_stop_that_lets_out_a_cancellation_does_not_end_the_shutdown() -> None:
    stop = asyncio.Event()
    last, first = _Component("stops-last"), _CancelledStop("stops-first")
    run = asyncio.create_task(
        run_components([last, first], HttpSettings(port=0), shutdown_deadline_s=10, stop_event=stop)
    )
    await asyncio.wait_for(first.started.wait(), 10)
    stop.set()
    assert await asyncio.wait_for(run, 10) == 0
    assert last.stopped
    assert last.lifecycle.failure is None


def test_tasks_left_by_a_shutdown_past_its_deadline_are_cancelled_without_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()
    components: list[_Component] = []

    async def main() -> int:
        stop = asyncio.Event()
        # Listed first, stopped last: the stuck stop before it means its stop never runs.
        components.append(_Component("never-stopped"))
        components.append(_Component("stuck", release=never))
        stop.set()
        return await run_components(
            components, HttpSettings(port=0), shutdown_deadline_s=0.5, stop_event=stop
        )

    assert runtime_run(main) == 1  # the deadline was exceeded
    never_stopped = components[0]
    assert not never_stopped.stopped
    assert never_stopped.lifecycle.failure is None
    assert not [r for r in caplog.records if r.getMessage() == "stage failed"]


async def test_a_task_dying_on_its_own_during_the_shutdown_still_exits_1() -> None:
    stop = asyncio.Event()
    release = asyncio.Event()
    dies = asyncio.Event()

    async def dies_when_told() -> None:
        await dies.wait()
        raise RuntimeError("injected while another component stops")

    waiting = _Component("waiting-its-turn", job=dies_when_told)
    holder = _Component("holder", release=release)
    run = asyncio.create_task(
        run_components(
            [waiting, holder], HttpSettings(port=0), shutdown_deadline_s=30, stop_event=stop
        )
    )
    await asyncio.wait_for(holder.started.wait(), 10)
    stop.set()
    await asyncio.wait_for(holder.stopping.wait(), 10)
    dies.set()
    await _settle(waiting.lifecycle)
    release.set()
    assert await asyncio.wait_for(run, 10) == 1
    assert waiting.lifecycle.failure is not None


async def test_an_undo_that_hangs_is_abandoned_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiokafka's consumer.stop() waits without end for a coordinator behind a silent broker.
    lifecycle = Lifecycle("demo", undo_timeout_s=0.2)
    undone: list[str] = []

    async def producer() -> None:
        undone.append("producer")

    async def consumer() -> None:
        undone.append("consumer")
        await asyncio.Event().wait()

    lifecycle.started("producer", producer)
    lifecycle.started("consumer", consumer)
    await asyncio.wait_for(lifecycle.close(), 10)
    assert undone == ["consumer", "producer"]
    assert any(getattr(r, "what", None) == "consumer" for r in caplog.records)


class _EndsWithItsStop(_Component):
    """Like the publication API: ``wait_failed`` returns once its server has stopped."""

    async def wait_failed(self) -> None:
        await self.stopping.wait()


async def test_a_watch_that_ends_with_its_own_stop_is_not_a_failure() -> None:
    stop = asyncio.Event()
    component = _EndsWithItsStop("api")
    run = asyncio.create_task(
        run_components([component], HttpSettings(port=0), shutdown_deadline_s=10, stop_event=stop)
    )
    await asyncio.wait_for(component.started.wait(), 10)
    stop.set()
    assert await asyncio.wait_for(run, 10) == 0
