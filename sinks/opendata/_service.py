"""``citysense publish``: the publication API served by uvicorn inside the stage's event loop.

A :class:`~citysense.runtime.Component` like the other stages: ``start`` opens the read-only
connection pool, builds the application and starts the server (port in use, database missing or
wrong password fail here, before anything is served); ``stop`` stops accepting, lets requests in
flight finish, then closes the pool. Every connection runs as the API role
(``publish.role``, which can read the ``opendata`` views and nothing else), read-only, with
``publish.statement_timeout_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn
from fastapi import FastAPI
from psycopg import AsyncConnection, sql
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from citysense.clients import check_database
from citysense.errors import StartupError
from citysense.settings import DatabaseSettings, Settings, mask_url
from sinks.opendata._catalog import Catalog
from sinks.opendata._state import Publication
from sinks.opendata._viewcheck import check_views

if TYPE_CHECKING:
    from sinks.opendata._push import PushService

__all__ = ["PublishService"]

log = logging.getLogger("citysense.publish")

#: The database role every API connection takes (created by the sink's migrations).
API_ROLE = "citysense_api"


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the stage's runtime owns SIGTERM and SIGINT and stops
    the server through :meth:`PublishService.stop` (uvicorn's own would end the server on a
    signal and raise it again afterwards)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _json_loads(data: str | bytes) -> Any:
    """orjson's parse, about ten times faster than :func:`json.loads` on a point, with the same
    values (floats correctly rounded by both); what orjson refuses (integers beyond 64 bits) is
    left to :func:`json.loads`."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


class PublishService:
    """The API server as a stage component."""

    name = "publish"

    def __init__(
        self, settings: Settings, catalog: Catalog, *, routers: tuple[Any, ...] = ()
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._routers = routers
        self._pool: AsyncConnectionPool[Any] | None = None
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self.app: FastAPI | None = None
        self._push: PushService | None = None
        #: The bound port (useful when ``publish.port`` is 0).
        self.port: int | None = None

    def _conninfo(self) -> str:
        url = self._settings.publish.database_url or self._settings.database.url
        return url.get_secret_value()

    async def _configure(self, conn: AsyncConnection[Any]) -> None:
        """Each pooled connection: the API role, read-only, the statement timeout, and
        ``jsonb`` (every point of every row) parsed by orjson."""
        publish = self._settings.publish
        set_json_loads(_json_loads, conn)
        async with conn.transaction():
            await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(API_ROLE)))
            await conn.execute("SET default_transaction_read_only = on")
            await conn.execute(
                sql.SQL("SET statement_timeout = {}").format(
                    sql.Literal(publish.statement_timeout_ms)
                )
            )
        await conn.set_autocommit(False)

    async def start(self) -> None:
        publish = self._settings.publish
        await check_database(
            DatabaseSettings(url=SecretStr(self._conninfo())),
            setting=(
                "CITYSENSE_PUBLISH_DATABASE_URL or publish.database_url"
                if publish.database_url is not None
                else "CITYSENSE_DATABASE_URL or database.url"
            ),
        )
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self._conninfo(),
            min_size=1,
            max_size=publish.pool_max,
            open=False,
            configure=self._configure,
            kwargs={"autocommit": True},
            name="publish",
        )
        try:
            await pool.open(wait=True, timeout=15.0)
        except Exception as exc:
            await pool.close()
            where = mask_url(self._conninfo())
            raise StartupError(
                f"publish: cannot use the database at {where} as the {API_ROLE} role "
                f"({type(exc).__name__}); run `citysense db migrate` (it creates the role) or "
                "check CITYSENSE_PUBLISH_DATABASE_URL"
            ) from None
        self._pool = pool
        # A dataset whose fields do not match its view (a datasets_file mistake, a migration not
        # applied) fails the start, not the first reuser's request.
        async with pool.connection() as conn:
            problems = await check_views(conn, self._catalog)
        if problems:
            await self.stop()
            raise StartupError(
                "publish: the datasets do not match the database views: "
                + "; ".join(problems)
                + " (a database not migrated yet: run `citysense db migrate`; a datasets file: "
                "check CITYSENSE_PUBLISH_DATASETS_FILE)"
            )
        public_url = (publish.public_url or f"http://{publish.host}:{publish.port}").rstrip("/")
        from sinks.opendata._app import create_app

        state = Publication(
            settings=publish, catalog=self._catalog, pool=pool, public_url=public_url
        )
        self.app = create_app(state, routers=self._routers)
        # Bound here, not by uvicorn: a port in use is then an error of ours to report (uvicorn
        # would log it and exit the process).
        listener = socket.socket(socket.AF_INET6 if ":" in publish.host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((publish.host, publish.port))
        except OSError as exc:
            listener.close()
            await self.stop()
            raise StartupError(
                f"publish: cannot listen on {publish.host}:{publish.port} ({exc.strerror}); set "
                "CITYSENSE_PUBLISH_PORT or publish.port"
            ) from None
        listener.listen(2048)
        listener.setblocking(False)
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        server = _Server(config)
        self._server = server
        self._serving = asyncio.create_task(server.serve(sockets=[listener]), name="publish-http")
        while not server.started:
            if self._serving.done():
                with contextlib.suppress(BaseException):
                    self._serving.result()
                await self.stop()
                raise RuntimeError("publish: the HTTP server stopped while starting")
            await asyncio.sleep(0.02)
        if publish.push.enabled:
            from sinks.opendata._push import PushService

            try:
                push = PushService(
                    publish.push,
                    self._catalog,
                    pool,
                    state_path=publish.push.state_file,
                    poll_interval_s=publish.live_poll_interval_s,
                )
            except ValueError as exc:
                await self.stop()
                raise StartupError(f"publish.push: {exc}") from None
            await push.start()
            self._push = push
        sockets = [s for srv in server.servers for s in srv.sockets]
        self.port = sockets[0].getsockname()[1] if sockets else publish.port
        log.info("publication API listening", extra={"host": publish.host, "port": self.port})

    async def stop(self) -> None:
        if self._push is not None:
            push, self._push = self._push, None
            await push.stop()
        if self.app is not None:
            # Live streams never end by themselves: end them, so the server can drain.
            from sinks.opendata._live import close_change_hub

            await close_change_hub(self.app)
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._serving, 15.0)
        self._server = None
        self._serving = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def ready(self) -> bool:
        return (
            self._serving is not None
            and not self._serving.done()
            and self._pool is not None
            and not self._pool.closed
        )

    async def wait_failed(self) -> None:
        if self._serving is None:
            raise RuntimeError("publication API server not started")
        await asyncio.shield(self._serving)
        raise RuntimeError("publication API server stopped unexpectedly")
