"""The change feed and the live SSE route against the real PostgreSQL+TimescaleDB.

Rows are written the way the sink writes aggregates (insert, then upserts of higher revisions)
into the real migrated hypertables, behind spec-compatible live views (tests/sinks/opendata/
_live_db.py), and read through a role that may read those views and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from citysense.settings import PublishSettings, Settings
from sinks.opendata._changes import (
    Change,
    ChangeFeed,
    ChangeHub,
    ChangePosition,
    Reload,
    SlowSubscriberError,
)
from sinks.opendata._datasets import default_catalog
from tests.sinks.opendata._live_db import (
    LiveDb,
    api_pool,
    live_app,
    publication_for,
    seeded_live_database,
    serve,
)
from tests.sinks.opendata._live_db import (
    hour as _hour,
)

BUILTIN = default_catalog(PublishSettings())
NOISE = BUILTIN.get("bruit-horaire")


# --- positions -----------------------------------------------------------------------------


def test_a_position_round_trips_through_its_text_and_keeps_colons_in_the_key() -> None:
    position = ChangePosition.parse("4242:site:nation|3600|1700000000000000")
    assert position == ChangePosition(4242, "site:nation|3600|1700000000000000")
    assert ChangePosition.parse(str(position)) == position
    assert ChangePosition.parse("7:") == ChangePosition(7, "")


def test_positions_order_by_transaction_then_key_by_code_point() -> None:
    # The database compares keys with COLLATE "C" (bytes of UTF-8 = code points); Python's
    # str order is by code point too, so "Z" < "a" < "é" in both.
    assert ChangePosition(1, "zzz") < ChangePosition(2, "")
    assert ChangePosition(5, "Z") < ChangePosition(5, "a") < ChangePosition(5, "é")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12",
        "abc:k",
        "-1:k",
        " 1:k",
        "1.5:k",
        "٣:k",
        "99999999999999999999:k",
        "1:a\nb",
        "1:\x00",
        f"1:{'k' * 600}",
    ],
)
def test_a_malformed_position_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="position"):
        ChangePosition.parse(text)


# --- the feed over a real database -----------------------------------------------------------


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[LiveDb]:
    async with seeded_live_database(settings) as live_db:
        yield live_db


@pytest.mark.integration
async def test_the_api_role_reads_the_feed_through_the_views_only(db: LiveDb) -> None:
    async with api_pool(db) as pool:
        async with pool.connection() as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("SELECT 1 FROM noise_aggregates LIMIT 1")
        feed = ChangeFeed(pool, NOISE)
        start = await feed.now()
        await db.upsert(None, "noise", "nation-1", 3600, _hour(1), {"laeq_db": 61.5})
        (change,) = await feed.read(start, 100)
    assert change.values == {
        "sensor_id": "nation-1",
        "site_id": "nation",
        "site_name": "Place de la Nation",
        "start_time": _hour(1).isoformat(),
        "end_time": (_hour(1) + timedelta(hours=1)).isoformat(),
        "laeq_db": 61.5,
        "lamax_db": None,
        "l10_db": None,
        "l50_db": None,
        "l90_db": None,
        "coverage": None,
        "sample_count": 60,
        "geo_point_2d": {"lon": 2.3959, "lat": 48.8483},
    }
    assert orjson.loads(change.json) == change.values
    assert not any(name.startswith("_") for name in change.values)
    # The key is the view's: key|window|bucket in epoch microseconds.
    micros = int(_hour(1).timestamp()) * 1_000_000
    assert change.position.key == f"nation-1|3600|{micros}"


@pytest.mark.integration
async def test_a_transaction_committing_out_of_txid_order_is_read_once_in_resumable_order(
    db: LiveDb,
) -> None:
    async with api_pool(db) as pool:
        feed = ChangeFeed(pool, NOISE)
        start = await feed.now()
        async with (
            await psycopg.AsyncConnection.connect(db.owner_url) as t1,
            await psycopg.AsyncConnection.connect(db.owner_url) as t2,
        ):
            # T1 writes first (so it holds the smaller transaction id) but commits last.
            await db.upsert(t1, "noise", "nation-1", 3600, _hour(2), {"laeq_db": 50.0})
            await db.upsert(t2, "noise", "nation-2", 3600, _hour(2), {"laeq_db": 52.0})
            await t2.commit()
            # T2's row is committed and visible, but T1 is still running below it: a reader
            # that took T2's row now would move past T1's row before it becomes visible.
            assert await feed.read(start, 100) == []
            await t1.commit()
        first = await feed.read(start, 100)
        assert [c.values["sensor_id"] for c in first] == ["nation-1", "nation-2"]
        assert first[0].position < first[1].position
        assert first[0].position.txid < first[1].position.txid
        # Resuming from each position gives exactly what follows it, nothing twice.
        assert await feed.read(first[0].position, 100) == first[1:]
        assert await feed.read(first[1].position, 100) == []
        # A higher revision of the same window is a new change, after the others.
        await db.upsert(None, "noise", "nation-1", 3600, _hour(2), {"laeq_db": 55.0}, revision=1)
        (revised,) = await feed.read(first[1].position, 100)
        assert revised.values["sensor_id"] == "nation-1"
        assert revised.values["start_time"] == first[0].values["start_time"]
        assert revised.values["laeq_db"] == 55.0
        assert revised.position.key == first[0].position.key
        assert revised.position > first[1].position
        # An older revision loses the upsert: no write, no change.
        await db.upsert(None, "noise", "nation-1", 3600, _hour(2), {"laeq_db": 1.0})
        assert await feed.read(revised.position, 100) == []


@pytest.mark.integration
async def test_rows_of_one_transaction_page_by_key(db: LiveDb) -> None:
    async with api_pool(db) as pool:
        feed = ChangeFeed(pool, NOISE)
        start = await feed.now()
        async with await psycopg.AsyncConnection.connect(db.owner_url) as conn:
            for i in range(7):
                await db.upsert(conn, "noise", "nation-3", 3600, _hour(10 + i), {"laeq_db": i})
            await conn.commit()
        seen: list[Change] = []
        position = start
        while page := await feed.read(position, 3):
            seen += page
            position = page[-1].position
        assert len({c.position.txid for c in seen}) == 1
        assert [c.position for c in seen] == sorted(c.position for c in seen)
        assert sorted(c.values["laeq_db"] for c in seen) == [0, 1, 2, 3, 4, 5, 6]


async def _take(iterator: AsyncIterator[Any], n: int) -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(30):  # a guard against a hang, not a timing assertion
        while len(out) < n:
            out.append(await anext(iterator))
    return out


@pytest.mark.integration
async def test_one_poller_fans_out_and_a_slow_client_is_cut_off(db: LiveDb) -> None:
    async with api_pool(db) as pool:
        hub = ChangeHub(pool, poll_interval_s=0.05, queue_max=4)
        try:
            fast = await hub.subscribe(NOISE, None)
            slow = await hub.subscribe(NOISE, None)
            assert hub.poller_count() == 1
            assert hub.subscriber_count == 2
            fast_events = aiter(fast)
            got = []
            for i in range(10):  # in step with the fast client, which reads each row
                await db.upsert(None, "noise", "nation-1", 3600, _hour(20 + i), {"laeq_db": i})
                got += await _take(fast_events, 1)
            assert [c.values["laeq_db"] for c in got] == list(range(10))
            # The slow one never read: it gets what fitted in its queue, then is cut off.
            slow_got: list[Change | Reload] = []

            async def drain() -> None:
                iterator = aiter(slow)
                async with asyncio.timeout(30):  # a guard against a hang
                    while True:
                        slow_got.append(await anext(iterator))

            with pytest.raises(SlowSubscriberError):
                await drain()
            assert [c.values["laeq_db"] for c in slow_got if isinstance(c, Change)] == [0, 1, 2, 3]
            slow.close()
            assert hub.subscriber_count == 1
            fast.close()
            assert hub.poller_count() == 0
        finally:
            await hub.aclose()


@pytest.mark.integration
async def test_a_resumed_client_reads_its_backlog_then_live_rows_without_gap_or_duplicate(
    db: LiveDb,
) -> None:
    async with api_pool(db) as pool:
        hub = ChangeHub(pool, poll_interval_s=0.05, backlog_max=50)
        try:
            keeper = await hub.subscribe(NOISE, None)  # keeps the poller running throughout
            first = await hub.subscribe(NOISE, None)
            for i in range(5):
                await db.upsert(None, "noise", "nation-1", 3600, _hour(40 + i), {"laeq_db": i})
            got = await _take(aiter(first), 3)
            resume_at = got[-1].position
            first.close()
            for i in range(5, 8):
                await db.upsert(None, "noise", "nation-1", 3600, _hour(40 + i), {"laeq_db": i})
            # Wait until the shared poller is past every row so far: the resumed client's
            # rows 3..7 then come from its database backlog, and row 8 from the fan-out.
            await _take(aiter(keeper), 8)
            resumed = await hub.subscribe(NOISE, resume_at)
            events = aiter(resumed)
            backlog = await _take(events, 5)
            await db.upsert(None, "noise", "nation-1", 3600, _hour(48), {"laeq_db": 8})
            (live_row,) = await _take(events, 1)
            values = [c.values["laeq_db"] for c in [*backlog, live_row]]
            assert values == [3, 4, 5, 6, 7, 8]
            positions = [c.position for c in [*backlog, live_row]]
            assert positions == sorted(positions)
            assert len(set(positions)) == 6
            assert positions[0] > resume_at
            keeper.close()
            resumed.close()
        finally:
            await hub.aclose()


@pytest.mark.integration
async def test_a_client_too_far_behind_is_told_to_reload_then_follows_live(db: LiveDb) -> None:
    async with api_pool(db) as pool:
        hub = ChangeHub(pool, poll_interval_s=0.05, backlog_max=3)
        try:
            feed = ChangeFeed(pool, NOISE)
            long_ago = await feed.now()
            for i in range(5):
                await db.upsert(None, "noise", "nation-2", 3600, _hour(60 + i), {"laeq_db": i})
            keeper = await hub.subscribe(NOISE, None)
            await db.upsert(None, "noise", "nation-2", 3600, _hour(70), {"laeq_db": 99})
            (marker,) = await _take(aiter(keeper), 1)
            behind = await hub.subscribe(NOISE, long_ago)
            events = aiter(behind)
            (reload,) = await _take(events, 1)
            assert isinstance(reload, Reload)
            # The reload position is where the poller was: every missed row is at or before
            # it, and the client follows live from there.
            assert reload.position == marker.position
            await db.upsert(None, "noise", "nation-2", 3600, _hour(71), {"laeq_db": 100})
            (change,) = await _take(events, 1)
            assert change.values["laeq_db"] == 100
            keeper.close()
            behind.close()
        finally:
            await hub.aclose()


@pytest.mark.integration
async def test_a_position_from_the_future_starts_at_now(db: LiveDb) -> None:
    async with api_pool(db) as pool:
        hub = ChangeHub(pool, poll_interval_s=0.05)
        try:
            future = ChangePosition(2**62, "x")
            subscription = await hub.subscribe(NOISE, future)
            assert subscription.position < future
            await db.upsert(None, "noise", "nation-1", 3600, _hour(80), {"laeq_db": 42.0})
            (change,) = await _take(aiter(subscription), 1)
            assert change.values["laeq_db"] == 42.0
            subscription.close()
        finally:
            await hub.aclose()


# --- the SSE route on a real server ------------------------------------------------------------


class _Sse:
    """A minimal text/event-stream reader (WHATWG HTML, "Interpreting an event stream")."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self) -> dict[str, str]:
        event: dict[str, str] = {}
        data: list[str] = []
        async with asyncio.timeout(30):  # a guard against a hang, not a timing assertion
            async for line in self._lines:
                if line == "":
                    if data or event:
                        event["data"] = "\n".join(data)
                        return event
                    continue
                if line.startswith(":"):
                    continue  # comment: keep-alive ping
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    event[name] = value
        raise AssertionError("the stream ended")

    async def next_rows(self, n: int, event_name: str) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        while len(out) < n:
            event = await self.next()
            if event.get("event") == event_name:
                out.append(event)
        return out


@contextlib.asynccontextmanager
async def _stream(
    client: httpx.AsyncClient, url: str, last_event_id: str | None = None
) -> AsyncIterator[_Sse]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield _Sse(response)


@pytest.mark.integration
async def test_sse_delivers_new_rows_and_resumes_with_last_event_id(db: LiveDb) -> None:
    async with (
        api_pool(db) as pool,
        serve(live_app(publication_for(pool))) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        url = "/api/live/bruit-horaire"
        async with _stream(client, url) as sse:
            ready = await sse.next()
            assert ready["event"] == "ready"
            assert ready["id"]
            await db.upsert(None, "noise", "nation-1", 3600, _hour(1), {"laeq_db": 58.0})
            await db.upsert(None, "noise", "nation-2", 3600, _hour(1), {"laeq_db": 59.0})
            rows = await sse.next_rows(2, "bruit-horaire")
        assert [orjson.loads(r["data"])["laeq_db"] for r in rows] == [58.0, 59.0]
        assert orjson.loads(rows[0]["data"])["start_time"] == _hour(1).isoformat()
        last_id = rows[-1]["id"]
        assert ChangePosition.parse(rows[0]["id"]) < ChangePosition.parse(last_id)

        # Disconnected: two rows are written (one a revision of a row already received).
        await db.upsert(None, "noise", "nation-3", 3600, _hour(1), {"laeq_db": 60.0})
        await db.upsert(None, "noise", "nation-1", 3600, _hour(1), {"laeq_db": 61.0}, revision=1)
        async with _stream(client, url, last_event_id=last_id) as sse:
            ready = await sse.next()
            assert ready["event"] == "ready"
            assert ready["id"] == last_id
            missed = await sse.next_rows(2, "bruit-horaire")
            await db.upsert(None, "noise", "nation-2", 3600, _hour(0), {"laeq_db": 62.0})
            (live_row,) = await sse.next_rows(1, "bruit-horaire")
        got = [orjson.loads(r["data"]) for r in [*missed, live_row]]
        assert [(r["sensor_id"], r["laeq_db"]) for r in got] == [
            ("nation-3", 60.0),
            ("nation-1", 61.0),
            ("nation-2", 62.0),
        ]
        ids = [ChangePosition.parse(r["id"]) for r in [*missed, live_row]]
        assert ids == sorted(ids)
        assert ids[0] > ChangePosition.parse(last_id)

        # A client that reconnects before any row came resumes from its "ready" id.
        async with _stream(client, url) as sse:
            quiet_id = (await sse.next())["id"]
        await db.upsert(None, "noise", "nation-3", 3600, _hour(0), {"laeq_db": 63.0})
        async with _stream(client, url, last_event_id=quiet_id) as sse:
            await sse.next()
            (row,) = await sse.next_rows(1, "bruit-horaire")
        assert orjson.loads(row["data"])["laeq_db"] == 63.0


@pytest.mark.integration
async def test_sse_refuses_unknown_and_non_live_datasets_and_bad_ids(db: LiveDb) -> None:
    async with (
        api_pool(db) as pool,
        serve(live_app(publication_for(pool))) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        unknown = await client.get("/api/live/nope")
        assert unknown.status_code == 404
        assert unknown.json()["error_code"] == "UnknownDatasetError"
        not_live = await client.get("/api/live/bruit-lden-journalier")
        assert not_live.status_code == 400
        assert "no live feed" in not_live.json()["message"]
        for bad in ("garbage", "1:" + "k" * 600, "-5:x"):
            response = await client.get("/api/live/bruit-horaire", headers={"Last-Event-ID": bad})
            assert response.status_code == 400, bad
            assert response.json()["error_code"] == "InvalidRESTParameterError"


@pytest.mark.integration
async def test_the_publication_stage_serves_the_feed_and_page_and_ends_streams_on_stop(
    db: LiveDb, settings: Settings
) -> None:
    from citysense.settings import DatabaseSettings
    from sinks.opendata import publication_components

    config = settings.model_copy(
        update={
            "database": DatabaseSettings(url=db.owner_url),
            "publish": PublishSettings(port=0, live_poll_interval_s=0.05),
        }
    )
    (service,) = publication_components(config)
    await service.start()
    try:
        base = f"http://127.0.0.1:{service.port}"  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            page = await client.get("/")
            assert page.status_code == 200
            assert "static/app.js" in page.text
            async with _stream(client, "/api/live/bruit-horaire") as sse:
                assert (await sse.next())["event"] == "ready"
                await db.upsert(None, "noise", "nation-1", 3600, _hour(3), {"laeq_db": 44.0})
                (row,) = await sse.next_rows(1, "bruit-horaire")
                assert orjson.loads(row["data"])["laeq_db"] == 44.0
                await service.stop()
                # The stream ends cleanly (a complete response), not cut by a forced exit.
                with pytest.raises(AssertionError, match="the stream ended"):
                    await sse.next()
    finally:
        await service.stop()
