"""The change feed of a live dataset: its new and revised rows, in an order a reader can resume.

Every live view of the ``opendata`` schema has two hidden columns: ``_change_txid`` (``xid8``,
the transaction that last wrote the aggregate row, set by a trigger to ``pg_current_xact_id()``)
and ``_change_key`` (text, unique per row of the view). A row's position is the pair; the SSE
event id and the push's saved position are ``"<txid>:<key>"``.

Why the feed reads only rows below ``pg_snapshot_xmin(pg_current_snapshot())``: transaction ids
are handed out when a transaction first writes, not when it commits, so a row with a smaller id
can become visible after rows with larger ones (a long sink batch). A reader that moved its
position past rows it could see would skip such a row for ever. The snapshot's ``xmin`` is the
oldest transaction still running when the statement's snapshot was taken (PostgreSQL manual,
"Transaction ID and Snapshot Information Functions"): every transaction below it has finished,
so its rows are visible now or never, and no row can later appear behind a position below it.
A revision of an aggregate row is written by a newer transaction, so the row moves forward and is
read again: a new event with the same key fields and new values.

Two consequences worth knowing: ``xmin`` is cluster-wide, so a long write transaction anywhere
on the server holds every feed back until it ends (rows are late, never lost); and a row revised
twice before a reader reaches it is read once, with its newest values.

One :class:`ChangeHub` per process runs at most one poller per dataset, whatever the number of
clients; each client has a bounded queue and is cut off when it fills (it reconnects with its last
position and reads what it missed from the database), so a slow client costs the server nothing
beyond its queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Final

import orjson
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from sinks.opendata._catalog import Dataset
from sinks.opendata._format import json_value
from sinks.opendata._live_metrics import (
    LIVE_CHANGES,
    LIVE_DISCONNECTS,
    LIVE_POLL_ERRORS,
    LIVE_SUBSCRIBERS,
)

__all__ = [
    "Change",
    "ChangeFeed",
    "ChangeHub",
    "ChangePosition",
    "Reload",
    "SlowSubscriberError",
    "Subscription",
    "TooManySubscribersError",
]

log = logging.getLogger("citysense.publish.live")

#: Largest transaction id an ``xid8`` position may carry (PostgreSQL's ``xid8`` is unsigned
#: 64-bit; ids beyond ``int8`` would need two billion transactions a second for a century).
_MAX_TXID: Final = 2**63 - 1
#: Longest key accepted in a position sent by a client (keys of the views are ~40 characters).
_MAX_KEY_CHARS: Final = 512


@dataclass(frozen=True, order=True, slots=True)
class ChangePosition:
    """A place in a dataset's change order: after every row whose ``(txid, key)`` is at most
    this one. Ordered as the database orders rows: by ``txid``, then ``key`` compared by code
    point (``COLLATE "C"``: UTF-8 byte order is code point order, so Python's ``str`` order
    agrees with the database's)."""

    txid: int
    key: str

    @classmethod
    def parse(cls, text: str) -> ChangePosition:
        """``"<txid>:<key>"`` (an SSE event id) back into a position; ``ValueError`` says why
        a text is not one."""
        txid_text, colon, key = text.partition(":")
        if not colon:
            raise ValueError("a position is '<transaction id>:<key>'")
        if not (txid_text.isascii() and txid_text.isdigit()) or len(txid_text) > 19:
            raise ValueError("the transaction id of a position is a non-negative integer")
        txid = int(txid_text)
        if txid > _MAX_TXID:
            raise ValueError("the transaction id of a position is out of range")
        if len(key) > _MAX_KEY_CHARS or any(c in key for c in "\x00\r\n"):
            raise ValueError("the key of a position is too long or holds a control character")
        return cls(txid, key)

    def __str__(self) -> str:
        return f"{self.txid}:{self.key}"


@dataclass(frozen=True, slots=True)
class Change:
    """One new or revised row of a dataset, at its position."""

    position: ChangePosition
    #: The dataset's fields (never the hidden ``_`` columns) as the records API writes them
    #: with its default time zone (UTC): datetimes ISO 8601 with offset, points {"lon", "lat"}.
    values: dict[str, Any]
    #: ``values`` as a JSON object, serialised once for every client and the push.
    json: bytes


@dataclass(frozen=True, slots=True)
class Reload:
    """A resuming client was too far behind: it should reload the records, then follow the
    feed from ``position`` (which every row it did not get is at or before)."""

    position: ChangePosition


class SlowSubscriberError(Exception):
    """The client did not keep up with the feed: its queue filled up and it was cut off."""


class TooManySubscribersError(Exception):
    """The process already serves its maximum number of live clients."""


class ChangeFeed:
    """Reads a live dataset's view by position (no state: the poller and the push keep theirs).

    Every read is one statement, so the rows and the ``xmin`` bound come from one snapshot.
    """

    def __init__(self, pool: AsyncConnectionPool[Any], dataset: Dataset) -> None:
        if not dataset.live:
            raise ValueError(f"dataset {dataset.id} has no live feed")
        self.dataset = dataset
        self._pool = pool
        self._types = [f.type for f in dataset.fields]
        self._names = [f.name for f in dataset.fields]
        view = sql.Identifier("opendata", dataset.view)
        after = sql.SQL(
            "_change_txid >= %(txid)s::xid8"  # lets the planner use the index on change_txid
            ' AND (_change_txid, _change_key COLLATE "C") > (%(txid)s::xid8, %(key)s)'
            " AND _change_txid < pg_snapshot_xmin(pg_current_snapshot())"
        )
        upto = sql.SQL(
            ' AND (_change_txid, _change_key COLLATE "C") <= (%(upto_txid)s::xid8, %(upto_key)s)'
        )
        select = sql.SQL(
            "SELECT {fields}, _change_txid::text, _change_key FROM {view} WHERE "
        ).format(fields=sql.SQL(", ").join(sql.Identifier(n) for n in self._names), view=view)
        order = sql.SQL(' ORDER BY _change_txid, _change_key COLLATE "C" LIMIT %(limit)s')
        self._read = select + after + order
        self._read_upto = select + after + upto + order
        self._count_upto = sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {view} WHERE {after}{upto} LIMIT %(limit)s) AS r"
        ).format(view=view, after=after, upto=upto)

    async def now(self) -> ChangePosition:
        """The position before every row that is not yet readable: a reader starting here
        gets only rows written from now on (and rows of transactions still running)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
            row = await cursor.fetchone()
        assert row is not None
        return ChangePosition(int(row[0]), "")

    async def read(
        self, after: ChangePosition, limit: int, upto: ChangePosition | None = None
    ) -> list[Change]:
        """At most ``limit`` readable rows after ``after`` (and at most ``upto``), in order."""
        params: dict[str, Any] = {"txid": str(after.txid), "key": after.key, "limit": limit}
        query = self._read
        if upto is not None:
            params |= {"upto_txid": str(upto.txid), "upto_key": upto.key}
            query = self._read_upto
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, params)
            rows = await cursor.fetchall()
        return [self._change(row) for row in rows]

    async def count_between(self, after: ChangePosition, upto: ChangePosition, cap: int) -> int:
        """How many rows lie in ``(after, upto]``, counting no further than ``cap`` (so a client
        far behind costs a bounded scan, not a count of the whole history)."""
        params = {
            "txid": str(after.txid),
            "key": after.key,
            "upto_txid": str(upto.txid),
            "upto_key": upto.key,
            "limit": cap,
        }
        async with self._pool.connection() as conn:
            cursor = await conn.execute(self._count_upto, params)
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    def _change(self, row: tuple[Any, ...]) -> Change:
        *fields, txid, key = row
        values = {
            name: json_value(value, kind, UTC)
            for name, kind, value in zip(self._names, self._types, fields, strict=True)
        }
        return Change(ChangePosition(int(txid), key), values, orjson.dumps(values))


_OVERFLOW: Final = object()
_CLOSED: Final = object()


class Subscription:
    """One client's changes: its backlog from the database when it resumed, then the shared
    poller's fan-out, each change once and in order.

    Iterate it for :class:`Change` and :class:`Reload` items; :attr:`position` is the position
    of the last item handed out (its start position before the first). Iteration ends when the
    hub closes and raises :class:`SlowSubscriberError` when the client fell too far behind.
    """

    def __init__(
        self,
        hub: ChangeHub,
        poller: _Poller,
        position: ChangePosition,
        backlog_upto: ChangePosition | None,
    ) -> None:
        self._hub = hub
        self._poller = poller
        self.position = position
        self._backlog_upto = backlog_upto
        # One slot more than the limit, for the overflow marker.
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=hub.queue_max + 1)
        self._closed = False
        self._released = False

    @property
    def dataset(self) -> Dataset:
        return self._poller.feed.dataset

    @property
    def backlog_max(self) -> int:
        return self._hub.backlog_max

    def _offer(self, item: object) -> bool:
        """Queue ``item`` for the client; False when the client is cut off (queue full)."""
        if self._closed:
            return False
        if self._queue.qsize() >= self._hub.queue_max:
            self._queue.put_nowait(_OVERFLOW)
            self._closed = True
            return False
        self._queue.put_nowait(item)
        return True

    def _end(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_CLOSED)

    async def __aiter__(self) -> AsyncIterator[Change | Reload]:
        if self._backlog_upto is not None:
            async for backlog_item in self._backlog(self._backlog_upto):
                yield backlog_item
            self._backlog_upto = None
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                return
            if item is _OVERFLOW:
                LIVE_DISCONNECTS.labels(reason="slow").inc()
                raise SlowSubscriberError(
                    f"more than {self._hub.queue_max} changes of {self.dataset.id} waiting"
                )
            assert isinstance(item, Change)
            # A change at or before the client's position came in its backlog (or the client
            # resumed from further on than the poller): never twice.
            if item.position > self.position:
                self.position = item.position
                yield item

    async def _backlog(self, upto: ChangePosition) -> AsyncIterator[Change | Reload]:
        """The rows between the client's position and the poller's at subscription, which the
        fan-out will not bring; more than ``backlog_max`` of them → reload instead."""
        feed = self._poller.feed
        limit = self._hub.backlog_max
        if await feed.count_between(self.position, upto, limit + 1) > limit:
            LIVE_DISCONNECTS.labels(reason="backlog").inc()
            self.position = upto
            yield Reload(upto)
            return
        while True:
            changes = await feed.read(self.position, self._hub.page_rows, upto=upto)
            for change in changes:
                self.position = change.position
                yield change
            if len(changes) < self._hub.page_rows:
                return

    def close(self) -> None:
        """Stop receiving; the dataset's poller stops with its last client. Safe twice.

        Synchronous so that it also runs from a ``finally`` of a cancelled response."""
        self._closed = True
        self._hub._unsubscribe(self)


@dataclass(eq=False)
class _Poller:
    """The one reader of a dataset's view, fanning each change out to every subscriber."""

    feed: ChangeFeed
    interval_s: float
    page_rows: int
    position: ChangePosition
    subscribers: set[Subscription] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"live-poll:{self.feed.dataset.id}")

    def stop(self) -> asyncio.Task[None] | None:
        """Cancel the polling task (if running); returns it, for a caller that waits."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
        return task

    async def _run(self) -> None:
        dataset_id = self.feed.dataset.id
        failures = 0
        while True:
            try:
                await self.poll()
                failures = 0
            except Exception as exc:  # a poll failure must not end the feed: log, retry
                failures += 1
                LIVE_POLL_ERRORS.labels(dataset=dataset_id).inc()
                if failures == 1 or failures % 60 == 0:
                    log.warning(
                        "live feed of %s: poll failed (%s: %s), retrying",
                        dataset_id,
                        type(exc).__name__,
                        exc,
                    )
            await asyncio.sleep(self.interval_s * min(2 ** min(failures, 5), 30))

    async def poll(self) -> None:
        """Read every readable row after the poller's position and hand it to each client."""
        counter = LIVE_CHANGES.labels(dataset=self.feed.dataset.id)
        while True:
            async with self.lock:
                changes = await self.feed.read(self.position, self.page_rows)
                for change in changes:
                    for subscriber in list(self.subscribers):
                        if not subscriber._offer(change):
                            self.subscribers.discard(subscriber)
                if changes:
                    self.position = changes[-1].position
                    counter.inc(len(changes))
            if len(changes) < self.page_rows:
                return


class ChangeHub:
    """The live feeds of one process: a poller per dataset with clients, their subscriptions.

    ``poll_interval_s`` is ``publish.live_poll_interval_s``; ``queue_max`` bounds the changes
    waiting for one client; ``backlog_max`` bounds what a resuming client reads from the
    database before it is told to reload; ``max_subscribers`` bounds the clients of the process.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        poll_interval_s: float,
        queue_max: int = 1000,
        backlog_max: int = 10_000,
        page_rows: int = 1000,
        max_subscribers: int = 1000,
    ) -> None:
        self._pool = pool
        self.poll_interval_s = poll_interval_s
        self.queue_max = queue_max
        self.backlog_max = backlog_max
        self.page_rows = page_rows
        self.max_subscribers = max_subscribers
        self._pollers: dict[str, _Poller] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return sum(len(p.subscribers) for p in self._pollers.values())

    def poller_count(self) -> int:
        """How many datasets are being polled (one poller each, whatever the clients)."""
        return len(self._pollers)

    async def subscribe(self, dataset: Dataset, after: ChangePosition | None) -> Subscription:
        """Follow ``dataset`` from ``after`` (a client's Last-Event-ID), or from now.

        A position from the future (no transaction that old has finished: not one the feed
        gave) is taken as "now". Raises ``ValueError`` for a dataset without a live feed,
        :class:`TooManySubscribersError` at the process's limit, and the database's errors
        when it cannot be reached.
        """
        if not dataset.live:
            raise ValueError(f"dataset {dataset.id} has no live feed")
        async with self._lock:
            if self._closed:
                raise RuntimeError("the change hub is closed")
            if self.subscriber_count >= self.max_subscribers:
                raise TooManySubscribersError(f"{self.max_subscribers} live clients already")
            poller = self._pollers.get(dataset.id)
            if poller is None:
                feed = ChangeFeed(self._pool, dataset)
                poller = _Poller(feed, self.poll_interval_s, self.page_rows, await feed.now())
            if after is not None and after.txid >= poller.position.txid:
                horizon = await poller.feed.now()
                if after.txid >= horizon.txid:
                    after = None
            async with poller.lock:
                current = poller.position
                if after is None or after >= current:
                    subscription = Subscription(self, poller, after or current, None)
                else:
                    subscription = Subscription(self, poller, after, current)
                poller.subscribers.add(subscription)
            # A new poller, or one whose last client left while this waited for its lock.
            self._pollers[dataset.id] = poller
            poller.start()
            LIVE_SUBSCRIBERS.labels(dataset=dataset.id).inc()
            return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        # No await: runs atomically with respect to subscribe()'s steps, which re-register a
        # poller it found if this removed it meanwhile.
        if subscription._released:
            return
        subscription._released = True
        poller = subscription._poller
        poller.subscribers.discard(subscription)
        LIVE_SUBSCRIBERS.labels(dataset=poller.feed.dataset.id).dec()
        if not poller.subscribers and self._pollers.get(poller.feed.dataset.id) is poller:
            del self._pollers[poller.feed.dataset.id]
            poller.stop()

    async def aclose(self) -> None:
        """Stop every poller and end every subscription (their iteration returns)."""
        async with self._lock:
            self._closed = True
            pollers = list(self._pollers.values())
            self._pollers.clear()
        tasks = [task for poller in pollers if (task := poller.stop()) is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for poller in pollers:
            for subscription in list(poller.subscribers):
                subscription._end()
