"""Push each new row of chosen live datasets to an external portal's realtime push API.

The portal's API (OpenDataSoft "Realtime push"): ``POST <base_url>/api/push/1.0/<dataset>/
<resource>/push/?pushkey=<key>`` with one JSON object or an array of them, at most 5 MB a
request, answered ``{"status": "OK"}``; when the portal's dataset declares unique key fields a
push is an upsert. Rows are the dataset's fields as the records API writes them, read in order
from the change feed (:mod:`sinks.opendata._changes`), so a revised aggregate is pushed again
with its new values and replaces the old one on the portal.

Delivery: a batch is at most ``batch_max_rows`` rows and 5 MB, sent when full or
``batch_max_wait_s`` after its first row arrived. A batch is retried unchanged (same rows, same
order) with capped exponential backoff and jitter on a 5xx answer, 429 (``Retry-After``
honoured), a timeout or a connection error, until it is acknowledged; a 4xx answer other than
429 means the portal will never take it, so it is logged, counted and skipped. The position
moves past a batch only once it is acknowledged or skipped: nothing is skipped or reordered by
retries. ``stop()`` pushes what the feed holds at that moment, within a deadline.

Position across restarts: saved after every batch in a small JSON state file (written to a
temporary file and renamed, so a crash leaves the old or the new position, never half of one).
A state file rather than a table: the publication process connects as the read-only API role,
and a second, writing connection only for this would give the public-facing process write
rights. After a crash between the portal's acknowledgement and the save, the last batch is
pushed again, which the portal's upsert on the dataset's key fields absorbs (at-least-once).
Without a state file (``state_path=None``) the position lives in memory and a restart starts
from "now", skipping the rows written while stopped. With no saved position a target also starts
from "now": enabling the push does not send the dataset's whole history.

The push key is a secret: it is sent only as the query parameter and never logged (URLs in log
lines carry no query, and error texts are scrubbed of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import aiohttp
import psycopg
import psycopg_pool
from psycopg_pool import AsyncConnectionPool

from citysense.settings import PushSettings
from sinks.opendata._catalog import Catalog, Dataset, UnknownDatasetError
from sinks.opendata._changes import Change, ChangeFeed, ChangePosition
from sinks.opendata._live_metrics import (
    PUSH_BATCH_ROWS,
    PUSH_POSITION_TXID,
    PUSH_REQUEST_DURATION,
    PUSH_REQUESTS,
    PUSH_ROWS,
    PUSH_SKIPPED_ROWS,
)

__all__ = ["MAX_BODY_BYTES", "PushService", "batch_body", "push_path"]

log = logging.getLogger("citysense.publish.push")

#: The portal's limit per request ("5 MB"), read as 5·10^6 bytes to be safe under either reading.
MAX_BODY_BYTES: Final = 5_000_000
#: A portal resource path: ``<dataset>/<resource>``, identifiers only (it goes into the URL).
_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STATE_VERSION: Final = 1

Outcome = Literal["ok", "rejected", "throttled", "server_error", "timeout", "connection_error"]


def push_path(base_url: str, target: str) -> str:
    """The push URL of a ``<dataset>/<resource>`` target (without the push key)."""
    return f"{base_url.rstrip('/')}/api/push/1.0/{target}/push/"


def batch_body(changes: Sequence[Change], max_bytes: int = MAX_BODY_BYTES) -> tuple[bytes, int]:
    """The JSON array of the longest prefix of ``changes`` within ``max_bytes`` (at least one
    row, even alone over the limit: the caller decides), and how many rows it holds."""
    parts: list[bytes] = []
    size = 2  # the brackets
    for change in changes:
        extra = len(change.json) + (1 if parts else 0)
        if parts and size + extra > max_bytes:
            break
        parts.append(change.json)
        size += extra
    return b"[" + b",".join(parts) + b"]", len(parts)


@dataclass(frozen=True, slots=True)
class _Target:
    dataset: Dataset
    #: The portal's ``<dataset>/<resource>``.
    path: str
    feed: ChangeFeed


class _PositionStore:
    """Each target's last acknowledged position, in memory and (optionally) in a JSON file:
    ``{"version": 1, "targets": {"<dataset id>": {"resource": "<path>", "position": "…"}}}``."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = asyncio.Lock()
        self._targets: dict[str, dict[str, str]] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("version") != _STATE_VERSION or not isinstance(
                    data.get("targets"), dict
                ):
                    raise ValueError("unknown layout")
                for dataset_id, entry in data["targets"].items():
                    ChangePosition.parse(entry["position"])
                    self._targets[str(dataset_id)] = {
                        "resource": str(entry["resource"]),
                        "position": str(entry["position"]),
                    }
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"push state file {path} is unreadable: {exc}") from exc

    def get(self, target: _Target) -> ChangePosition | None:
        entry = self._targets.get(target.dataset.id)
        if entry is None or entry["resource"] != target.path:
            return None
        return ChangePosition.parse(entry["position"])

    async def save(self, target: _Target, position: ChangePosition) -> None:
        async with self._lock:
            self._targets[target.dataset.id] = {"resource": target.path, "position": str(position)}
            if self._path is not None:
                text = json.dumps({"version": _STATE_VERSION, "targets": self._targets}, indent=1)
                await asyncio.to_thread(_write_atomically, self._path, text)
        PUSH_POSITION_TXID.labels(dataset=target.dataset.id).set(position.txid)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class PushService:
    """Follows every dataset of ``settings.targets`` and pushes its new rows to the portal.

    ``pool`` reads the datasets' views (the API role is enough); ``state_path`` keeps positions
    across restarts (module docstring); ``poll_interval_s`` is how often an idle target looks
    for new rows (``publish.live_poll_interval_s``). A target that names an unknown dataset or
    one without a live feed is a ``ValueError`` here, before anything starts.
    """

    def __init__(
        self,
        settings: PushSettings,
        catalog: Catalog,
        pool: AsyncConnectionPool[Any],
        *,
        state_path: Path | None,
        poll_interval_s: float = 1.0,
    ) -> None:
        if not settings.base_url or settings.pushkey is None:
            raise ValueError("the push needs publish.push.base_url and publish.push.pushkey")
        self._settings = settings
        self._base_url = settings.base_url.rstrip("/")
        self._pushkey = settings.pushkey.get_secret_value()
        self._poll_interval_s = poll_interval_s
        self._targets: list[_Target] = []
        for dataset_id, path in settings.targets.items():
            try:
                dataset = catalog.get(dataset_id)
            except UnknownDatasetError:
                raise ValueError(f"push target {dataset_id!r} is not a published dataset") from None
            if not dataset.live:
                raise ValueError(f"push target {dataset_id!r} has no live feed")
            if not _PATH.match(path):
                raise ValueError(
                    f"push target {dataset_id!r}: {path!r} is not '<dataset>/<resource>'"
                )
            self._targets.append(_Target(dataset, path, ChangeFeed(pool, dataset)))
        self._store = _PositionStore(state_path)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PushService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start following every target (safe to call twice). A target without a saved
        position starts from "now" as of this call, so every row committed after ``start()``
        returns is pushed (when the database is unreachable here, from when it is reached)."""
        if self._tasks:
            return
        self._stopping.clear()
        for target in self._targets:
            if self._store.get(target) is None:
                with contextlib.suppress(psycopg.Error, psycopg_pool.PoolTimeout):
                    await self._store.save(target, await target.feed.now())
                    log.info(
                        "push of %s starts with the rows written from now on", target.dataset.id
                    )
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
            headers={"Content-Type": "application/json"},
        )
        self._tasks = [
            asyncio.create_task(self._run_target(t), name=f"push:{t.dataset.id}")
            for t in self._targets
        ]

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Push what is waiting now, then stop; after ``timeout_s`` (the portal down, say),
        stop anyway: what was not acknowledged is pushed at the next start. Safe twice."""
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if pending:
                log.warning(
                    "push stopped before every row was acknowledged: the rest goes at the next "
                    "start"
                )
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run_target(self, target: _Target) -> None:
        """Follow one target; an unexpected failure is logged and the target restarted."""
        failures = 0
        while True:
            try:
                await self._follow(target)
                return
            except Exception:
                failures += 1
                log.exception("push of %s failed unexpectedly; restarting it", target.dataset.id)
                if await self._pause(min(self._settings.retry_max_s, 2.0**failures)):
                    return

    async def _pause(self, seconds: float) -> bool:
        """Sleep, waking early when stopping; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _start_position(self, target: _Target) -> ChangePosition | None:
        position = self._store.get(target)
        delay = self._settings.retry_initial_s
        while position is None:
            try:
                position = await target.feed.now()
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                log.warning("push of %s: database unavailable (%s)", target.dataset.id, exc)
                if await self._pause(delay):
                    return None
                delay = min(delay * 2, self._settings.retry_max_s)
                continue
            log.info("push of %s starts with the rows written from now on", target.dataset.id)
            await self._store.save(target, position)
        return position

    async def _follow(self, target: _Target) -> None:
        position = await self._start_position(target)
        while position is not None:
            batch = await self._collect(target, position)
            if batch is None:
                return
            body, count = batch_body(batch)
            if len(body) > MAX_BODY_BYTES:
                log.error(
                    "push of %s: a row of %d bytes is over the portal's limit; skipped",
                    target.dataset.id,
                    len(body),
                )
                PUSH_SKIPPED_ROWS.labels(dataset=target.dataset.id).inc(count)
            else:
                await self._deliver(target, body, count)
            position = batch[count - 1].position
            await self._store.save(target, position)

    async def _collect(self, target: _Target, position: ChangePosition) -> list[Change] | None:
        """The next batch after ``position``: full, or as many rows as came within
        ``batch_max_wait_s`` of the first; None when stopping with nothing left."""
        first_seen: float | None = None
        delay = self._settings.retry_initial_s
        while True:
            stopping = self._stopping.is_set()
            try:
                changes = await target.feed.read(position, self._settings.batch_max_rows)
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                log.warning("push of %s: database unavailable (%s)", target.dataset.id, exc)
                if await self._pause(delay):
                    return None
                delay = min(delay * 2, self._settings.retry_max_s)
                continue
            if changes:
                now = time.monotonic()
                first_seen = now if first_seen is None else first_seen
                full = len(changes) >= self._settings.batch_max_rows
                if full or stopping or now - first_seen >= self._settings.batch_max_wait_s:
                    return changes
            elif stopping:
                return None
            wait = self._poll_interval_s
            if first_seen is not None:
                wait = min(wait, self._settings.batch_max_wait_s)
            await self._pause(wait)

    async def _deliver(self, target: _Target, body: bytes, count: int) -> None:
        """Send one batch until the portal acknowledges it or refuses it for good (logged and
        counted as skipped); retried as it is in between."""
        dataset_id = target.dataset.id
        delay = self._settings.retry_initial_s
        attempt = 0
        while True:
            attempt += 1
            outcome, retry_after, detail = await self._post(target, body)
            PUSH_REQUESTS.labels(outcome=outcome).inc()
            if outcome == "ok":
                PUSH_ROWS.labels(dataset=dataset_id).inc(count)
                PUSH_BATCH_ROWS.observe(count)
                return
            if outcome == "rejected":
                PUSH_SKIPPED_ROWS.labels(dataset=dataset_id).inc(count)
                log.error(
                    "push of %s to %s refused (%s): %d rows skipped",
                    dataset_id,
                    push_path(self._base_url, target.path),
                    detail,
                    count,
                )
                return
            wait = retry_after if retry_after is not None else delay * random.uniform(0.5, 1.0)
            wait = min(wait, self._settings.retry_max_s)
            log.warning(
                "push of %s to %s failed (%s, attempt %d); retrying in %.1f s",
                dataset_id,
                push_path(self._base_url, target.path),
                detail,
                attempt,
                wait,
            )
            delay = min(delay * 2, self._settings.retry_max_s)
            if self._stopping.is_set():
                # Stopping: a failing portal is tried until stop()'s deadline cancels this.
                await asyncio.sleep(wait)
            else:
                await self._pause(wait)

    async def _post(self, target: _Target, body: bytes) -> tuple[Outcome, float | None, str]:
        """One request: its outcome, the ``Retry-After`` seconds if any, a loggable detail."""
        assert self._session is not None
        started = time.monotonic()
        try:
            async with self._session.post(
                push_path(self._base_url, target.path),
                params={"pushkey": self._pushkey},
                data=body,
                allow_redirects=False,
            ) as response:
                text = (await response.read())[:200].decode("utf-8", "replace")
                status = response.status
                retry_after = _seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            return "timeout", None, f"no answer within {self._settings.timeout_s} s"
        except aiohttp.ClientError as exc:
            return "connection_error", None, self._scrub(f"{type(exc).__name__}: {exc}")
        finally:
            PUSH_REQUEST_DURATION.observe(time.monotonic() - started)
        detail = self._scrub(f"HTTP {status} {text.strip()}".strip())
        if 200 <= status < 300:
            return "ok", None, detail
        if status == 429:
            return "throttled", retry_after, detail
        if status >= 500:
            return "server_error", retry_after, detail
        # 4xx (and redirects, which a POST must not follow): the portal will never take it.
        return "rejected", None, detail

    def _scrub(self, text: str) -> str:
        return text.replace(self._pushkey, "***") if self._pushkey else text


def _seconds(retry_after: str | None) -> float | None:
    """``Retry-After`` in seconds (RFC 9110 §10.2.3), when given as a number of seconds."""
    if retry_after is None:
        return None
    try:
        seconds = float(retry_after)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
