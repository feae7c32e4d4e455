"""The publication API as one FastAPI application.

Read-only by construction: every route is a GET (CORS open for GET from any origin, as open data
is meant to be embedded), every query runs as the API database role, which can read the
``opendata`` views and nothing else, under a statement timeout. A client (by address) making more
than ``publish.rate_limit`` requests is answered 429 with ``Retry-After``. Errors use the portal's
body, ``{"status_code": …, "message": …, "error_code": …}``, for every path: a malformed query is
a 400 naming the clause and the position, never an SQL error and never a 500.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from limits import parse as parse_limit
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from citysense import __version__
from sinks.opendata import _metrics as metrics
from sinks.opendata._odsql import ODSQLError
from sinks.opendata._query import InvalidParameterError
from sinks.opendata._state import ApiError, Publication

__all__ = ["create_app"]

log = logging.getLogger("citysense.publish")

_DESCRIPTION = """
Open data of the city's sensors, compatible with the OpenDataSoft Explore API v2.1 (records,
exports, ODSQL `select`/`where`/`group_by`/`order_by`) and its older v1 search API, with a
DCAT-AP catalogue, NGSI-LD entities (FIWARE Smart Data Models), a server-sent-events live feed
and a public display page at `/`.
"""


def _error(status_code: int, error_code: str, message: str) -> JSONResponse:
    return JSONResponse(ApiError(status_code, error_code, message).body(), status_code=status_code)


def create_app(state: Publication, *, routers: tuple[Any, ...] = ()) -> FastAPI:
    """The application over ``state``; ``routers`` are extra ``APIRouter`` objects to include."""
    from sinks.opendata import _live, _routes_explore, _routes_linked, _routes_page, _routes_v1

    app = FastAPI(
        title="citysense open data",
        version=__version__,
        description=_DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.publication = state
    app.include_router(_routes_linked.router)
    app.include_router(_routes_explore.router)
    app.include_router(_routes_v1.router)
    app.include_router(_live.router)
    for router in routers:
        app.include_router(router)
    app.include_router(_routes_page.router)
    _add_error_handlers(app)
    _add_rate_limit(app, state.settings.rate_limit)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET"],
        allow_headers=["*"],
        expose_headers=["Content-Disposition", "Retry-After"],
    )

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        stats = state.pool.get_stats()
        ready = not state.pool.closed and stats.get("pool_size", 0) > 0
        return JSONResponse(
            {"ready": ready, "checks": {"database": ready}}, status_code=200 if ready else 503
        )

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(ODSQLError)
    async def odsql_error(_request: Request, exc: ODSQLError) -> JSONResponse:
        return _error(400, "ODSQLError", str(exc))

    @app.exception_handler(InvalidParameterError)
    async def parameter_error(_request: Request, exc: InvalidParameterError) -> JSONResponse:
        return _error(400, "InvalidRESTParameterError", str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "query")
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(
            400,
            "InvalidRESTParameterError",
            "Invalid value for API parameter " + "; ".join(problems),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def timeout(_request: Request, _exc: Exception) -> JSONResponse:
        metrics.QUERY_TIMEOUTS.inc()
        response = _error(
            503,
            "QueryTimeout",
            "The query ran longer than the server allows; narrow it with where or limit.",
        )
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(psycopg.OperationalError)
    async def database_down(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", extra={"error": type(exc).__name__})
        response = _error(503, "ServiceUnavailable", "The database is not reachable; retry later.")
        response.headers["Retry-After"] = "5"
        return response


def _add_rate_limit(app: FastAPI, rate: str) -> None:
    """A moving-window limit per client address (``limits``, in memory: one API process)."""
    item = parse_limit(rate)
    limiter = MovingWindowRateLimiter(MemoryStorage())

    @app.middleware("http")
    async def rate_limit(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        client = request.client.host if request.client else "unknown"
        if request.url.path not in ("/metrics", "/healthz", "/readyz") and not await limiter.hit(
            item, client
        ):
            reset, _remaining = await limiter.get_window_stats(item, client)
            metrics.REQUESTS.labels(route="rate_limited", status="429").inc()
            response: Response = _error(
                429,
                "TooManyRequests",
                f"Too many requests: at most {rate} per client; retry later.",
            )
            response.headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
            return response
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.REQUESTS.labels(route=path, status=str(response.status_code)).inc()
        metrics.DURATION.labels(route=path).observe(time.perf_counter() - started)
        return response
