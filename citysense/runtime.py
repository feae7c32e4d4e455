"""The service runtime every stage shares: event loop, health server, signals, ordered shutdown.

A stage is a list of :class:`Component` objects (explicit ``start``/``stop``, a ``ready`` check).
``run_components`` starts them in order, serves ``/metrics``, ``/healthz`` and ``/readyz``, waits
for SIGTERM/SIGINT (or a component's failure), then stops them in reverse order within the
configured deadline: intake first, sinks last, which is the drain order of
docs/architecture.md#delivery-guarantees, rule 7.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import uvloop
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from citysense.settings import HttpSettings

__all__ = ["Component", "HealthServer", "run", "run_components"]

log = logging.getLogger("citysense.runtime")


class Component(Protocol):
    """A long-lived part of a stage."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Drain and release; safe to call twice, and after a failed start."""

    def ready(self) -> bool:
        """True while every dependency this component needs is reachable."""

    async def wait_failed(self) -> None:
        """Returns (or raises) only when the component has failed beyond recovery."""


class HealthServer:
    """``/metrics`` (Prometheus text), ``/healthz`` (alive), ``/readyz`` (dependencies up)."""

    def __init__(
        self,
        settings: HttpSettings,
        readiness: Callable[[], dict[str, bool]],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._settings = settings
        self._readiness = readiness
        self._registry = registry
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._settings.host, self._settings.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._settings.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = self._readiness()
        ready = all(checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def run_components(
    components: Sequence[Component],
    http: HttpSettings,
    *,
    shutdown_deadline_s: float,
    stop_event: asyncio.Event | None = None,
) -> int:
    """Run ``components`` until a signal or a failure; returns the process exit status."""
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started: list[Component] = []
    health = HealthServer(http, lambda: {c.name: c.ready() for c in components})
    status = 0
    try:
        await health.start()
        log.info("health server listening", extra={"port": health.port})
        for component in components:
            await component.start()
            started.append(component)
            log.info("component started", extra={"component": component.name})
        # Start-up objects (schemas, registry, modules) will live as long as the process: keep
        # them out of every later full collection.
        gc.collect()
        gc.freeze()
        failures = [
            asyncio.create_task(c.wait_failed(), name=f"watch-{c.name}") for c in components
        ]
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        done, _pending = await asyncio.wait(
            [stopper, *failures], return_when=asyncio.FIRST_COMPLETED
        )
        for task in [stopper, *failures]:
            task.cancel()
        for task in done:
            if task is not stopper and not task.cancelled():
                status = 1
                error = task.exception()
                log.error("component failed; shutting down", extra={"error": repr(error)})
    except Exception:
        log.exception("start failed; shutting down")
        status = 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        status = await _shutdown(started, health, shutdown_deadline_s) or status
    return status


async def _shutdown(started: list[Component], health: HealthServer, deadline_s: float) -> int:
    """Stop components in reverse start order within ``deadline_s``; 1 if it ran over."""

    async def stop_all() -> None:
        for component in reversed(started):
            try:
                await component.stop()
                log.info("component stopped", extra={"component": component.name})
            except Exception:
                log.exception("component stop failed", extra={"component": component.name})
        await health.stop()

    try:
        await asyncio.wait_for(stop_all(), deadline_s)
    except TimeoutError:
        log.error("shutdown deadline exceeded", extra={"deadline_s": deadline_s})
        return 1
    return 0


#: Young-generation GC threshold for the stages. The default (700 allocations) makes the
#: collector run every few messages on ingest's hot path; measured here with the nation fleet,
#: ingest handled 5,700 msg/s with the default and 7,800 msg/s at 50,000 (the same as with the
#: collector off), while memory stays bounded because the older generations still run.
GC_YOUNG_THRESHOLD = 50_000


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main`` on uvloop and return its exit status."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(main())
    return 130
