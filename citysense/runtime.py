"""The service runtime every stage shares: lifecycles, health server, signals, ordered shutdown.

A stage is a list of :class:`Component` objects (explicit ``start``/``stop``, a ``ready`` check,
``wait_failed``). Each component keeps its start steps and background tasks in a
:class:`Lifecycle`: a start that fails part way undoes what it had done, newest first; every
background task has a done callback, and a task that ends while the stage runs (an exception, a
cancellation, or a return from a loop meant to run until stop) marks the stage failed with the
reason. That is the aiokafka / python-telegram-bot rule: a task's failure fails the work waiting
on it, nothing dies silently.

``run_components`` starts the components in order, serves ``/metrics``, ``/healthz`` and
``/readyz``, waits for SIGTERM/SIGINT or a component's failure, then stops them in reverse order
within ``shutdown_deadline_s``: intake first, sinks last, the drain order of
docs/architecture.md#delivery-guarantees (rule 7). A failure makes ``/healthz`` and ``/readyz``
answer 503 naming it while the stage shuts down, and the exit status 1. A start that fails
shuts down what had started, then raises: the CLI reports a
:class:`~citysense.errors.StartupError` as one line (exit 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

import uvloop
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from citysense.errors import StartupError
from citysense.settings import HttpSettings, Settings

__all__ = [
    "AfterSinkPrepared",
    "Component",
    "HealthServer",
    "Lifecycle",
    "StageFailedError",
    "expect_shutdown",
    "run",
    "run_components",
    "run_stage",
]

log = logging.getLogger("citysense.runtime")

T = TypeVar("T")

#: Longest wait for one undo step of a stop (closing a client, leaving a group): on loopback or
#: a LAN they take milliseconds; one stuck on a silent broker is abandoned (see Lifecycle.close).
UNDO_TIMEOUT_S = 2.0


class Component(Protocol):
    """A long-lived part of a stage."""

    name: str

    async def start(self) -> None:
        """Connect and start the background work; on failure, release what was acquired."""

    async def stop(self) -> None:
        """Drain and release; safe to call twice, and after a failed start."""

    def ready(self) -> bool:
        """True while every dependency this component needs is reachable."""

    async def wait_failed(self) -> None:
        """Returns (or raises) only when the component has failed beyond recovery."""


class _Preparing(Protocol):
    async def wait_prepared(self) -> None: ...


class AfterSinkPrepared:
    """``component``, started only once ``sink`` has prepared the database it reads.

    In one process (``citysense run``) the publication API starts right after the sink, whose
    migrations run in its background task: on a fresh database the API's views would not exist
    yet when it checks them. Everything else is ``component``'s own.
    """

    def __init__(self, component: Component, sink: _Preparing) -> None:
        self._component = component
        self._sink = sink
        self.name = component.name

    async def start(self) -> None:
        log.info("waiting for the database to be prepared", extra={"component": self.name})
        await self._sink.wait_prepared()
        await self._component.start()

    async def stop(self) -> None:
        await self._component.stop()

    def ready(self) -> bool:
        return self._component.ready()

    async def wait_failed(self) -> None:
        await self._component.wait_failed()


class StageFailedError(Exception):
    """Raised by :meth:`Lifecycle.wait_failed`; the message is the reason."""


class Lifecycle:
    """Start steps, background tasks and the failure flag of one component.

    - ``started(what, undo)`` after each start step; ``close()`` runs the undos newest first
      (``async with lifecycle.starting():`` around ``start()`` runs them when it raises);
    - ``spawn(coro, name=...)`` for every background task: its done callback calls
      :meth:`fail` when the task raises, is cancelled, or returns (``finite=True``: a return is
      its normal end) while the component is not stopping; ``cancel(task)`` ends one on purpose;
    - ``failure`` holds the first reason; ``wait_failed()`` raises it as
      :class:`StageFailedError`.

    Once the runtime shuts the process down (:func:`expect_shutdown`), a cancelled task is no
    longer a failure in any lifecycle: the shutdown itself cancels what its deadline cut short
    and what is left running after it, including the tasks of components whose own ``stop``
    never ran. A task that raises is still one.
    """

    #: Every lifecycle still referenced, so the runtime's shutdown can reach them all (the
    #: :class:`Component` protocol does not expose them).
    _live: ClassVar[weakref.WeakSet[Lifecycle]] = weakref.WeakSet()

    def __init__(self, name: str, *, undo_timeout_s: float = UNDO_TIMEOUT_S) -> None:
        #: The component's name, as in its ``name`` attribute and the health checks.
        self.name = name
        self._undo_timeout_s = undo_timeout_s
        self.failure: str | None = None
        self.error: BaseException | None = None
        self._undo: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failed = asyncio.Event()
        self._stopping = False
        #: The process is shutting down: a cancellation is the shutdown's, not a failure.
        self._shutting_down = False
        Lifecycle._live.add(self)

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def stopping(self) -> bool:
        return self._stopping

    # --- start steps ---------------------------------------------------------------------------

    def started(self, what: str, undo: Callable[[], Awaitable[object]]) -> None:
        """``what`` is started; ``undo`` stops it (run by :meth:`close`, newest first)."""
        self._undo.append((what, undo))

    @contextlib.asynccontextmanager
    async def starting(self) -> AsyncIterator[None]:
        """Around a ``start()``: if it raises, undo what it had started, then re-raise."""
        try:
            yield
        except BaseException:
            await self.close()
            raise

    # --- tasks ---------------------------------------------------------------------------------

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, name: str, finite: bool = False
    ) -> asyncio.Task[T]:
        """Start a background task whose unexpected end fails the stage.

        ``finite``: the task does one job and returning is its normal end (a reconnect, one
        write); otherwise it runs until the stage stops and a return is a failure too.
        """
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, finite))
        return task

    async def cancel(self, task: asyncio.Task[Any] | None) -> None:
        """Cancel ``task`` on purpose (its owner stops it) and wait for it; not a failure."""
        if task is None:
            return
        self._tasks.discard(task)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def _task_done(self, task: asyncio.Task[Any], finite: bool) -> None:
        if task not in self._tasks:
            return  # cancelled on purpose (see ``cancel``)
        self._tasks.discard(task)
        if task.cancelled():
            if not (self._stopping or self._shutting_down):
                self.fail(f"task {task.get_name()} was cancelled")
            return
        error = task.exception()  # retrieved in every case: asyncio warns otherwise
        if error is not None:
            if self._stopping:
                log.error(
                    "task failed while stopping",
                    extra={"component": self.name, "task": task.get_name(), "error": repr(error)},
                )
            else:
                self.fail(f"task {task.get_name()} failed: {_describe(error)}", error)
        elif not finite and not self._stopping:
            self.fail(f"task {task.get_name()} ended unexpectedly")

    def fail(self, reason: str, error: BaseException | None = None) -> None:
        """Mark the stage failed (the first reason is kept); the runtime then shuts it down."""
        if self.failure is not None:
            return
        self.failure = reason
        self.error = error
        log.error("stage failed", extra={"component": self.name, "reason": reason}, exc_info=error)
        self._failed.set()

    async def wait_failed(self) -> None:
        """Raise :class:`StageFailedError` once the stage has failed."""
        await self._failed.wait()
        raise StageFailedError(f"{self.name}: {self.failure}") from self.error

    # --- stop ----------------------------------------------------------------------------------

    def begin_stop(self) -> None:
        """From now on a task ending is expected (the component is draining or stopping)."""
        self._stopping = True

    def expect_cancellation(self) -> None:
        """From now on a cancelled task is the process's shutdown at work, not a failure."""
        self._shutting_down = True

    async def close(self) -> None:
        """Cancel the tasks still running, then undo the start steps, newest first.

        Safe to call twice. An undo that raises, or takes longer than ``undo_timeout_s``, is
        logged and the others still run: a stop must release everything it can, within the
        shutdown deadline (aiokafka's ``consumer.stop()`` waits without end for a group
        coordinator whose broker went silent).
        """
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        this = asyncio.current_task()
        while self._undo:
            what, undo = self._undo.pop()
            try:
                async with asyncio.timeout(self._undo_timeout_s):
                    await undo()
            except asyncio.CancelledError as exc:
                if this is not None and this.cancelling():
                    raise  # the stop itself is cancelled (the shutdown deadline)
                # Not ours: aiokafka's consumer.stop() lets out the CancelledError of the
                # fetch it cancels when its broker is gone. The other undos must still run.
                log.warning(
                    "could not stop cleanly",
                    extra={"component": self.name, "what": what, "error": _describe(exc)},
                )
            except Exception as exc:
                log.warning(
                    "could not stop cleanly",
                    extra={"component": self.name, "what": what, "error": _describe(exc)},
                )


def expect_shutdown() -> None:
    """The process is shutting down: a task cancelled from now on, in any lifecycle, is not a
    failure (see :class:`Lifecycle`). Called when the shutdown starts, before any stop."""
    for lifecycle in list(Lifecycle._live):
        lifecycle.expect_cancellation()


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


class HealthServer:
    """``/metrics`` (Prometheus text), ``/healthz`` (alive), ``/readyz`` (dependencies up).

    ``/healthz`` answers 503 once a component has failed, ``/readyz`` 503 while a component is
    not ready, has failed, or the stage is stopping; both bodies name the failures.
    """

    def __init__(
        self,
        host: str,
        port: int,
        readiness: Callable[[], dict[str, bool]],
        failures: Callable[[], dict[str, str]] = dict,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._host = host
        self._wanted_port = port
        self._readiness = readiness
        self._failures = failures
        self._registry = registry
        self._runner: web.AppRunner | None = None
        self.stopping = False
        #: The bound port (useful when the configured one is 0).
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._wanted_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(_bind_error(self._host, self._wanted_port, exc)) from exc
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._wanted_port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        failed = self._failures()
        if failed:
            return web.json_response({"status": "failed", "failed": failed}, status=503)
        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = self._readiness()
        failed = self._failures()
        ready = all(checks.values()) and not failed and not self.stopping
        body: dict[str, object] = {"ready": ready, "checks": checks}
        if failed:
            body["failed"] = failed
        if self.stopping:
            body["stopping"] = True
        return web.json_response(body, status=200 if ready else 503)


def _bind_error(host: str, port: int, exc: OSError) -> str:
    """One line saying why the metrics server cannot listen and which setting to change."""
    change_port = "set CITYSENSE_HTTP_PORT or http.port"
    if exc.errno == errno.EADDRINUSE:
        return f"metrics port {port} is in use; {change_port}"
    if exc.errno == errno.EACCES:
        return f"metrics port {port} needs privileges; {change_port} (above 1023)"
    reason = exc.strerror or str(exc)
    return (
        f"cannot serve metrics on {host}:{port} ({reason}); set CITYSENSE_HTTP_HOST or "
        f"http.host, CITYSENSE_HTTP_PORT or http.port"
    )


async def run_components(
    components: Sequence[Component],
    http: HttpSettings | None,
    *,
    shutdown_deadline_s: float,
    stage: str = "run",
    stop_event: asyncio.Event | None = None,
) -> int:
    """Run ``components`` until a signal or a failure; returns the process exit status.

    ``http``: where to serve /metrics, /healthz and /readyz (the port of ``stage`` unless one is
    configured); None when a component serves them itself. Returns 0 after a signal and a clean
    shutdown, 1 after a component's failure or a shutdown that ran over its deadline. A start
    that fails stops what had started, in reverse order, then raises its error.
    """
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started: list[Component] = []
    failures: dict[str, str] = {}
    health = None
    if http is not None:
        health = HealthServer(
            http.host,
            http.port_for(stage),
            lambda: {c.name: c.ready() for c in components},
            lambda: failures,
        )
    status = 0
    start_error: Exception | None = None
    watches: dict[asyncio.Task[str], Component] = {}
    #: Components whose stop has begun: their watch ending from then on is their stop (the
    #: publication API's ``wait_failed`` returns when its server stops), not a failure.
    stopping: set[str] = set()

    def watched(watch: asyncio.Task[str], component: Component) -> None:
        if not watch.cancelled() and component.name not in stopping:
            failures.setdefault(component.name, watch.result())

    try:
        if health is not None:
            await health.start()
            log.info("health server listening", extra={"port": health.port})
        for component in components:
            await component.start()  # a start that raises has released what it acquired
            started.append(component)
            log.info("component started", extra={"component": component.name})
        # Start-up objects (schemas, registry, modules) will live as long as the process: keep
        # them out of every later full collection.
        gc.collect()
        gc.freeze()
        watches = {
            asyncio.create_task(_failure_of(c), name=f"watch-{c.name}"): c for c in components
        }
        for watch, component in watches.items():
            watch.add_done_callback(lambda w, c=component: watched(w, c))  # type: ignore[misc]
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        await asyncio.wait([stopper, *watches], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        await asyncio.sleep(0)  # the done callbacks of the watches that ended
        if failures:
            log.error("shutting down after a failure", extra={"failed": failures})
    except Exception as exc:
        start_error = exc
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if health is not None:
            health.stopping = True
        # From here on a cancelled task is the shutdown's doing (its deadline, or the leftovers
        # cancelled after it), whether or not its component's stop ran: not a failure.
        expect_shutdown()
        if not await _shutdown(started, health, shutdown_deadline_s, stopping):
            status = 1
        # The watches stay on through the shutdown: a task dying on its own while the others
        # stop is still a failure (a component's own stop is not: see ``stopping``).
        for _ in range(3):  # a failure's watch ends a few loop turns after it
            await asyncio.sleep(0)
        if failures:
            status = 1
        for watch in watches:
            watch.cancel()
    if start_error is not None:
        raise start_error
    return status


async def _failure_of(component: Component) -> str:
    """Wait for ``component`` to fail; the reason."""
    try:
        await component.wait_failed()
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return "failed"


async def _shutdown(
    started: list[Component],
    health: HealthServer | None,
    deadline_s: float,
    begun: set[str] | None = None,
) -> bool:
    """Stop components in reverse start order within ``deadline_s``; False if it ran over.

    The stop is abandoned at the deadline (not awaited further), so a stop stuck on a dead
    connection cannot hold the process.
    """

    async def stop_all() -> None:
        this = asyncio.current_task()
        assert this is not None
        for component in reversed(started):
            if begun is not None:
                begun.add(component.name)  # from now on its watch ending is its stop
            try:
                await component.stop()
                log.info("component stopped", extra={"component": component.name})
            except asyncio.CancelledError as exc:
                if this.cancelling():
                    raise  # the deadline: the shutdown is abandoned
                # A stop that let a cancelled task's CancelledError out (aiokafka raises it
                # from a closed connection): the later components must still be stopped.
                log.error(
                    "component stop failed",
                    extra={"component": component.name, "error": _describe(exc)},
                )
            except Exception as exc:
                log.error(
                    "component stop failed",
                    extra={"component": component.name, "error": _describe(exc)},
                )

    stopping = asyncio.create_task(stop_all(), name="shutdown")
    done, _ = await asyncio.wait({stopping}, timeout=deadline_s)
    if not done:
        stopping.cancel()
        await asyncio.wait({stopping}, timeout=1.0)
        log.error("shutdown deadline exceeded", extra={"deadline_s": deadline_s})
    if health is not None:
        await health.stop()
    return bool(done)


#: Young-generation GC threshold for the stages. The default (700 allocations) makes the
#: collector run every few messages on ingest's hot path; measured here with the nation fleet,
#: ingest handled 5,700 msg/s with the default and 7,800 msg/s at 50,000 (the same as with the
#: collector off), while memory stays bounded because the older generations still run.
GC_YOUNG_THRESHOLD = 50_000
#: After ``main`` returned, how long tasks still running get to finish once cancelled.
_LEFTOVER_GRACE_S = 2.0


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main`` on uvloop and return its exit status.

    Unlike ``asyncio.run``, tasks left running afterwards get a bounded grace once cancelled
    (one that ignores its cancellation cannot hold the process).
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main())
    except KeyboardInterrupt:
        return 130
    finally:
        try:
            expect_shutdown()  # what is cancelled now is cancelled by the shutdown
            leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=_LEFTOVER_GRACE_S))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def run_stage(
    settings: Settings, stage: str, components: Sequence[Component], *, health: bool = True
) -> int:
    """Run ``components`` as ``stage`` (its metrics port, the shutdown deadline) on uvloop; the
    exit status. A start that fails raises its error (see :func:`run_components`). ``health``
    False: a component serves /metrics, /healthz and /readyz itself (the publication API)."""

    async def main() -> int:
        return await run_components(
            components,
            settings.http if health else None,
            stage=stage,
            shutdown_deadline_s=settings.shutdown_deadline_s,
        )

    return run(main)
