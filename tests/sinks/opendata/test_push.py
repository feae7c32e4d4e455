"""The realtime push against a real loopback receiver that fails on purpose, and the real
database behind spec-compatible live views."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from pydantic import SecretStr

from citysense.settings import PublishSettings, PushSettings, Settings
from sinks.opendata._changes import Change, ChangePosition
from sinks.opendata._datasets import default_catalog
from sinks.opendata._push import MAX_BODY_BYTES, PushService, batch_body, push_path
from tests.sinks._helpers import wait_until
from tests.sinks.opendata._live_db import (
    LiveDb,
    api_pool,
    hour,
    seeded_live_database,
)

CATALOG = default_catalog(PublishSettings())
PUSHKEY = "pk-0123456789abcdef-secret"
TARGET = "noise-portal/live-resource"


# --- pure parts ----------------------------------------------------------------------------


def _change(i: int, size: int) -> Change:
    values = {"i": i, "pad": "x" * size}
    return Change(ChangePosition(i, ""), values, orjson.dumps(values))


def test_a_batch_body_is_a_json_array_within_the_byte_limit() -> None:
    changes = [_change(i, 80) for i in range(10)]
    one = len(changes[0].json)
    body, count = batch_body(changes, max_bytes=2 + 3 * one + 2)  # brackets, 3 rows, 2 commas
    assert count == 3
    assert len(body) == 2 + 3 * one + 2
    assert [row["i"] for row in orjson.loads(body)] == [0, 1, 2]
    body, count = batch_body(changes, max_bytes=2 + 3 * one + 1)
    assert count == 2
    # A row alone over the limit still makes a batch of one: the service skips it.
    body, count = batch_body([_change(0, 100)], max_bytes=10)
    assert count == 1
    assert len(body) > 10
    assert MAX_BODY_BYTES == 5_000_000


def test_the_push_url_follows_the_portal() -> None:
    assert push_path("https://data.example.org/", "ds/res") == (
        "https://data.example.org/api/push/1.0/ds/res/push/"
    )


def _settings(base_url: str, **overrides: Any) -> PushSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "base_url": base_url,
        "pushkey": SecretStr(PUSHKEY),
        "targets": {"bruit-horaire": TARGET},
        "batch_max_rows": 3,
        "batch_max_wait_s": 0.2,
        "retry_initial_s": 0.05,
        "retry_max_s": 0.3,
        "timeout_s": 0.5,
    }
    return PushSettings(**(values | overrides))


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"nope": "a/b"}, "not a published dataset"),
        ({"bruit-lden-journalier": "a/b"}, "no live feed"),
        ({"bruit-horaire": "a/b?x=1"}, "is not '<dataset>/<resource>'"),
        ({"bruit-horaire": "../admin"}, "is not '<dataset>/<resource>'"),
    ],
)
def test_a_bad_target_is_refused_before_starting(targets: dict[str, str], message: str) -> None:
    settings = _settings("http://127.0.0.1:9", targets=targets)
    with pytest.raises(ValueError, match=message):
        PushService(settings, CATALOG, pool=None, state_path=None)  # type: ignore[arg-type]


def test_an_unreadable_state_file_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "push.json"
    state.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"push state file .* is unreadable"):
        PushService(
            _settings("http://127.0.0.1:9"),
            CATALOG,
            pool=None,  # type: ignore[arg-type]
            state_path=state,
        )


# --- a receiver that fails on purpose ------------------------------------------------------------

#: What the receiver does with the request of a given index: an HTTP status, "timeout" (keeps
#: the request past the client's timeout after taking its rows, like a portal whose answer was
#: lost), "reset" (drops the connection without an answer).
Plan = Callable[[int, list[dict[str, Any]]], int | str]


@dataclass
class Receiver:
    plan: Plan
    requests: list[tuple[int | str, str, list[dict[str, Any]]]] = field(default_factory=list)
    #: Upserted rows by key (sensor_id, start_time), as the portal stores them.
    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: Keys in the order they were first stored.
    first_seen: list[tuple[str, str]] = field(default_factory=list)

    def store(self, batch: list[dict[str, Any]]) -> None:
        for row in batch:
            key = (row["sensor_id"], row["start_time"])
            if key not in self.rows:
                self.first_seen.append(key)
            self.rows[key] = row

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("pushkey") != PUSHKEY:
            return web.json_response({"error": "bad key"}, status=403)
        batch = orjson.loads(await request.read())
        action = self.plan(len(self.requests), batch)
        self.requests.append((action, request.path, batch))
        if action == "timeout":
            self.store(batch)
            await asyncio.sleep(3)
            return web.json_response({"status": "OK"})
        if action == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()  # never reaches the client: the connection is gone
        assert isinstance(action, int)
        if action == 200:
            self.store(batch)
            return web.json_response({"status": "OK"})
        headers = {"Retry-After": "0.1"} if action == 429 else {}
        return web.json_response({"error": "planned"}, status=action, headers=headers)


@contextlib.asynccontextmanager
async def receiving(plan: Plan) -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver(plan)
    app = web.Application()
    app.router.add_post("/api/push/1.0/{dataset}/{resource}/push/", receiver.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[LiveDb]:
    async with seeded_live_database(settings) as live_db:
        yield live_db


async def _write(db: LiveDb, sensor: str, i: int, laeq: float, revision: int = 0) -> None:
    await db.upsert(None, "noise", sensor, 3600, hour(i), {"laeq_db": laeq}, revision=revision)


@pytest.mark.integration
async def test_every_row_arrives_in_order_through_errors_timeouts_and_resets(
    db: LiveDb, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failures: dict[int, int | str] = {0: 500, 1: "timeout", 2: "reset", 4: 429, 5: 503}
    before = {
        outcome: _metric("citysense_publish_push_requests_total", outcome=outcome)
        for outcome in ("ok", "server_error", "timeout", "connection_error", "throttled")
    }
    caplog.set_level(logging.INFO, logger="citysense.publish.push")
    state = tmp_path / "push-state.json"
    expected: dict[tuple[str, str], float] = {}
    order: list[tuple[str, str]] = []

    async def write(sensor: str, i: int, laeq: float, revision: int = 0) -> None:
        await _write(db, sensor, i, laeq, revision)
        key = (sensor, hour(i).isoformat())
        if key not in expected:
            order.append(key)
        expected[key] = laeq

    async with (
        receiving(lambda n, _batch: failures.get(n, 200)) as (receiver, base),
        api_pool(db) as pool,
    ):
        service = PushService(_settings(base), CATALOG, pool, state_path=state)
        await service.start()
        for i in range(10):
            await write(f"nation-{i % 3 + 1}", i, 50.0 + i)

        async def first_batch_sent() -> bool:
            return bool(receiver.requests)

        # Once the first row was read, its revision is a new change, pushed again after the
        # others (a row revised before the push read it would be pushed once, revised).
        await wait_until(first_batch_sent, 30, "the first request")
        await write("nation-1", 0, 70.0, revision=1)

        async def all_arrived() -> bool:
            return {k: r["laeq_db"] for k, r in receiver.rows.items()} == expected

        await wait_until(all_arrived, 60, "every row at the receiver")
        await service.stop()

    # Rows were first stored in the order they were written; the revision came last.
    assert receiver.first_seen == order
    assert receiver.requests[-1][2][-1]["laeq_db"] == 70.0
    # A failed batch is sent again unchanged: same rows, same order.
    for index, (action, _path, batch) in enumerate(receiver.requests[:-1]):
        if action != 200:
            assert receiver.requests[index + 1][2] == batch
    # Every request went to the target's path, with at most batch_max_rows rows.
    assert {path for _a, path, _b in receiver.requests} == {f"/api/push/1.0/{TARGET}/push/"}
    assert max(len(batch) for _a, _p, batch in receiver.requests) <= 3
    # Rows are the dataset's fields only, as the records API writes them.
    row = receiver.rows[order[0]]
    assert set(row) == {f.name for f in CATALOG.get("bruit-horaire").fields}
    assert row["geo_point_2d"] == {"lon": 2.3959, "lat": 48.8483}
    after = {
        outcome: _metric("citysense_publish_push_requests_total", outcome=outcome) - value
        for outcome, value in before.items()
    }
    assert after["server_error"] == 2
    assert after["timeout"] == 1
    assert after["connection_error"] == 1
    assert after["throttled"] == 1
    assert after["ok"] == sum(1 for action, _p, _b in receiver.requests if action == 200)
    # The failures were logged, without the push key.
    assert "retrying" in caplog.text
    assert PUSHKEY not in caplog.text
    # The position saved is the last row's.
    saved = json.loads(state.read_text(encoding="utf-8"))["targets"]["bruit-horaire"]
    assert saved["resource"] == TARGET
    last = ChangePosition.parse(saved["position"])
    assert last.key.startswith("nation-1|3600|")


@pytest.mark.integration
async def test_a_restart_resumes_from_the_saved_position(db: LiveDb, tmp_path: Path) -> None:
    state = tmp_path / "push-state.json"
    async with receiving(lambda _n, _b: 200) as (receiver, base), api_pool(db) as pool:
        settings = _settings(base)
        async with PushService(settings, CATALOG, pool, state_path=state):
            await _write(db, "nation-1", 1, 51.0)

            async def first_arrived() -> bool:
                return len(receiver.rows) == 1

            await wait_until(first_arrived, 30, "the first row")
        # Written while the push is stopped: a start from "now" would never send it.
        await _write(db, "nation-2", 2, 52.0)
        async with PushService(settings, CATALOG, pool, state_path=state):

            async def second_arrived() -> bool:
                return len(receiver.rows) == 2

            await wait_until(second_arrived, 30, "the row written while stopped")
    assert [batch for _a, _p, batch in receiver.requests][1] == [
        receiver.rows[("nation-2", hour(2).isoformat())]
    ]


@pytest.mark.integration
async def test_a_batch_the_portal_refuses_is_skipped_and_counted(db: LiveDb) -> None:
    def plan(_n: int, batch: list[dict[str, Any]]) -> int:
        return 400 if any(row["laeq_db"] == 66.6 for row in batch) else 200

    skipped = _metric("citysense_publish_push_skipped_rows_total", dataset="bruit-horaire")
    async with receiving(plan) as (receiver, base), api_pool(db) as pool:
        settings = _settings(base, batch_max_rows=1)
        async with PushService(settings, CATALOG, pool, state_path=None):
            await _write(db, "nation-1", 1, 51.0)
            await _write(db, "nation-2", 1, 66.6)
            await _write(db, "nation-3", 1, 53.0)

            async def good_ones_arrived() -> bool:
                return len(receiver.rows) == 2

            await wait_until(good_ones_arrived, 30, "the two accepted rows")
    assert sorted(r["laeq_db"] for r in receiver.rows.values()) == [51.0, 53.0]
    assert [action for action, _p, _b in receiver.requests] == [200, 400, 200]
    after = _metric("citysense_publish_push_skipped_rows_total", dataset="bruit-horaire")
    assert after - skipped == 1


@pytest.mark.integration
async def test_stop_pushes_the_rows_waiting_for_their_batch(db: LiveDb) -> None:
    async with receiving(lambda _n, _b: 200) as (receiver, base), api_pool(db) as pool:
        # A batch would wait a minute for more rows; stopping sends it at once.
        settings = _settings(base, batch_max_rows=1000, batch_max_wait_s=60)
        service = PushService(settings, CATALOG, pool, state_path=None)
        await service.start()
        for i in range(3):
            await _write(db, "nation-1", i, 40.0 + i)
        await service.stop()
        assert sorted(r["laeq_db"] for r in receiver.rows.values()) == [40.0, 41.0, 42.0]
        assert len(receiver.requests) == 1


@pytest.mark.integration
async def test_the_publish_stage_runs_the_push_when_enabled(db: LiveDb, tmp_path: Path) -> None:
    from citysense.settings import DatabaseSettings
    from sinks.opendata import publication_components

    async with receiving(lambda _n, _b: 200) as (receiver, base):
        push = _settings(base, batch_max_rows=1, state_file=tmp_path / "push-state.json")
        config = Settings(
            database=DatabaseSettings(url=db.owner_url),
            publish=PublishSettings(port=0, push=push),
        )
        (stage,) = publication_components(config)
        await stage.start()
        try:
            await _write(db, "nation-1", 7, 47.5)

            async def arrived() -> bool:
                return len(receiver.rows) == 1

            await wait_until(arrived, 30, "the row pushed by the stage")
        finally:
            await stage.stop()
    assert [r["laeq_db"] for r in receiver.rows.values()] == [47.5]
    assert (tmp_path / "push-state.json").is_file()  # its position, for the next start
