"""The public display page: ``/`` and its three static files under ``/static/``.

Plain HTML, JavaScript and CSS shipped in the package (no build step, no CDN: the page works on
a screen with no Internet access beyond this server). The page reads the records API for its
first values and follows the live feed (``/api/live/...``) with ``EventSource``.

Only the files listed here are served (no path from the request reaches the file system), with a
Content-Security-Policy that allows nothing but this origin: no inline script, so even a value
that slipped into the page's markup could not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from sinks.opendata._state import ApiError

__all__ = ["PAGE_FILES", "router"]

router = APIRouter(tags=["Display page"])


@dataclass(frozen=True, slots=True)
class _File:
    media_type: str
    body: bytes


def _load(name: str, media_type: str) -> _File:
    return _File(media_type, (resources.files("sinks.opendata") / "static" / name).read_bytes())


#: The page's files by name, read once at import (a few kilobytes).
PAGE_FILES: dict[str, _File] = {
    "index.html": _load("index.html", "text/html; charset=utf-8"),
    "app.js": _load("app.js", "text/javascript; charset=utf-8"),
    "style.css": _load("style.css", "text/css; charset=utf-8"),
}

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Screens reload the page rarely; a new version is picked up at the next load.
    "Cache-Control": "no-cache",
}


def _response(name: str) -> Response:
    file = PAGE_FILES[name]
    return Response(file.body, media_type=file.media_type, headers=_HEADERS)


@router.get("/", summary="The public display page (live values per site)", include_in_schema=False)
async def page() -> Response:
    return _response("index.html")


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> Response:
    if name not in PAGE_FILES or name == "index.html":
        raise ApiError(404, "NotFound", f"No static file named {name!r}.")
    return _response(name)
