"""``GET /api/live/{dataset_id}``: a live dataset's new and revised rows as server-sent events.

The stream follows the WHATWG HTML "Server-sent events" model that browsers' ``EventSource``
implements: each row is one event whose ``event`` is the dataset id, whose ``data`` is the row as
the records API writes it (JSON object of the dataset's fields), and whose ``id`` is the row's
position (``"<txid>:<key>"``, :mod:`sinks.opendata._changes`). A client that reconnects sends the
last id it saw as ``Last-Event-ID`` (browsers do it by themselves) and gets every row it missed,
from the database, then the live rows, each once and in order.

Other events: ``ready`` first, whose ``id`` is the client's start position (so a client that
reconnects before any row arrived still resumes from there, losing nothing); ``reload`` when a
resuming client is more than ``backlog_max`` rows behind (reload the records, then keep
listening: its id is the position to follow from). Comments (``: ping``) keep proxies from
closing an idle stream. A client that does not read its events is cut off; it reconnects and
resumes like any other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
import psycopg
import psycopg_pool
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from sinks.opendata._catalog import Dataset, UnknownDatasetError
from sinks.opendata._changes import (
    ChangeHub,
    ChangePosition,
    Reload,
    SlowSubscriberError,
    Subscription,
    TooManySubscribersError,
)
from sinks.opendata._state import ApiError, Publication, publication

__all__ = ["PING_INTERVAL_S", "change_hub", "close_change_hub", "router"]

router = APIRouter(tags=["Live feed"])

#: Seconds between keep-alive comments: below the 30 to 60 s idle timeouts of common proxies.
PING_INTERVAL_S = 15.0
#: A client that takes longer than this to accept one event is cut off.
_SEND_TIMEOUT_S = 30.0
#: Reconnection delay suggested to clients (the ``retry`` field), milliseconds.
_RETRY_MS = 3000


def change_hub(request: Request) -> ChangeHub:
    """FastAPI dependency: the process's :class:`ChangeHub`, created at its first use on the
    application's state (``app.state.change_hub``); :func:`close_change_hub` stops it."""
    hub: ChangeHub | None = getattr(request.app.state, "change_hub", None)
    if hub is None:
        state = publication(request)
        hub = ChangeHub(state.pool, poll_interval_s=state.settings.live_poll_interval_s)
        request.app.state.change_hub = hub
    return hub


async def close_change_hub(app: FastAPI) -> None:
    """Stop the live feed's pollers and end its streams; for the application's shutdown."""
    hub: ChangeHub | None = getattr(app.state, "change_hub", None)
    if hub is not None:
        app.state.change_hub = None
        await hub.aclose()


def _live_dataset(state: Publication, dataset_id: str) -> Dataset:
    try:
        dataset = state.catalog.get(dataset_id)
    except UnknownDatasetError:
        raise ApiError(404, "UnknownDatasetError", f"Unknown dataset: {dataset_id}") from None
    if not dataset.live:
        raise ApiError(
            400,
            "InvalidRESTParameterError",
            f"Dataset {dataset_id} has no live feed; query its records instead.",
        )
    return dataset


def _position(last_event_id: str | None) -> ChangePosition | None:
    if last_event_id is None or last_event_id.strip() == "":
        return None
    try:
        return ChangePosition.parse(last_event_id.strip())
    except ValueError as exc:
        raise ApiError(
            400,
            "InvalidRESTParameterError",
            f"Invalid Last-Event-ID header: {exc} (send back an id this feed gave).",
        ) from None


class _LiveResponse(EventSourceResponse):
    """An event stream that releases its subscription however it ends (even cancelled before
    its first event, when the stream's generator never started and its ``finally`` never runs)."""

    def __init__(self, subscription: Subscription, content: AsyncIterator[ServerSentEvent]):
        super().__init__(content, ping=PING_INTERVAL_S, send_timeout=_SEND_TIMEOUT_S)
        self._subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._subscription.close()


async def _events(subscription: Subscription) -> AsyncIterator[ServerSentEvent]:
    dataset_id = subscription.dataset.id
    yield ServerSentEvent(
        data=orjson.dumps({"dataset_id": dataset_id}).decode(),
        event="ready",
        id=str(subscription.position),
        retry=_RETRY_MS,
    )
    try:
        async for item in subscription:
            if isinstance(item, Reload):
                message = (
                    f"more than {subscription.backlog_max} rows were missed: reload the "
                    "records, then keep following this feed"
                )
                yield ServerSentEvent(
                    data=orjson.dumps({"dataset_id": dataset_id, "message": message}).decode(),
                    event="reload",
                    id=str(item.position),
                )
            else:
                yield ServerSentEvent(
                    data=item.json.decode(), event=dataset_id, id=str(item.position)
                )
    except SlowSubscriberError:
        return  # the client reconnects with its last id and reads the rest from the database
    finally:
        subscription.close()


@router.get(
    "/api/live/{dataset_id}",
    summary="Follow a live dataset's new rows (server-sent events; resumable with Last-Event-ID)",
    response_class=EventSourceResponse,
)
async def live(
    dataset_id: str,
    state: Annotated[Publication, Depends(publication)],
    hub: Annotated[ChangeHub, Depends(change_hub)],
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    dataset = _live_dataset(state, dataset_id)
    after = _position(last_event_id)
    try:
        subscription = await hub.subscribe(dataset, after)
    except TooManySubscribersError:
        raise ApiError(
            429, "TooManyRequests", "Too many live clients right now; retry later."
        ) from None
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout):
        raise ApiError(
            503, "ServiceUnavailable", "The live feed is unavailable right now; retry later."
        ) from None
    return _LiveResponse(subscription, _events(subscription))
