"""What every route of the publication API needs, kept on the application's state.

Routers written in separate modules depend on :func:`publication` to reach the catalogue, the
read-only connection pool and the settings, so the application object is their only coupling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from citysense.settings import PublishSettings
from sinks.opendata._catalog import Catalog

__all__ = ["ApiError", "Publication", "publication"]


@dataclass(frozen=True, slots=True)
class Publication:
    settings: PublishSettings
    catalog: Catalog
    #: Connections as the read-only API role; each statement has the configured timeout.
    pool: AsyncConnectionPool[Any]
    #: Base URL of the API as reusers see it (no trailing slash), for links in documents.
    public_url: str


def publication(request: Request) -> Publication:
    """FastAPI dependency: the running publication's state."""
    state: Publication = request.app.state.publication
    return state


class ApiError(Exception):
    """A client-facing error, answered with the portal's error body:
    ``{"status_code": 400, "message": "...", "error_code": "ODSQLError"}``.

    ``error_code`` values follow the portal: ``ODSQLError`` (query syntax or semantics),
    ``InvalidRESTParameterError`` (a parameter out of range), ``UnknownDatasetError``
    (``NotFound`` for other paths), ``TooManyRequests``, ``QueryTimeout``.
    """

    def __init__(self, status_code: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "status_code": self.status_code,
            "message": self.message,
            "error_code": self.error_code,
        }
