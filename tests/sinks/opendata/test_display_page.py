"""The display page in headless Chromium (Debian's), served with the publication's app by a
real uvicorn over the real database: first values from the records API, then live updates from
the SSE feed. A screenshot goes to ``$CITYSENSE_TEST_ARTIFACTS`` (default
``<repo>/test-artifacts``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from playwright.async_api import ConsoleMessage, Page, async_playwright, expect

from citysense.settings import Settings
from sinks.opendata._routes_page import PAGE_FILES
from sinks.opendata._routes_page import router as page_router
from sinks.opendata._state import ApiError
from tests.sinks.opendata._db import cell, write_cells
from tests.sinks.opendata._live_db import (
    LiveDb,
    api_pool,
    hour,
    live_app,
    publication_for,
    seeded_live_database,
    serve,
)

_ROOT = Path(__file__).resolve().parents[3]
_WAIT_MS = 30_000  # how long the page may take to show a value: a guard, not a timing check
XSS_NAME = '<b>Square</b><img src=x onerror="window.__pwned = 1">'


def _artifacts() -> Path:
    path = Path(os.environ.get("CITYSENSE_TEST_ARTIFACTS") or _ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fr(value: float) -> str:
    """A level as the page writes it: one decimal, French decimal comma."""
    return f"{value:.1f}".replace(".", ",")


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[LiveDb]:
    async with seeded_live_database(settings) as live_db:
        await live_db.add_site("piscine-pailleron", "Piscine Pailleron", 48.8841, 2.3824, 400)
        await live_db.add_site("square", XSS_NAME, 48.85, 2.35)
        await live_db.add_sensor("nation-air", "air", "nation")
        await live_db.add_sensor("square-1", "noise", "square")
        yield live_db


async def test_the_page_routes_serve_only_their_files() -> None:
    app = FastAPI()
    app.include_router(page_router)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://page") as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<html lang="fr">' in page.text
        script = await client.get("/static/app.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert script.content == PAGE_FILES["app.js"].body
        for missing in ("/static/nope.js", "/static/..%2F_live.py", "/static/index.html"):
            response = await client.get(missing)
            assert response.status_code == 404, missing
            assert "import" not in response.text


def test_the_page_loads_nothing_from_elsewhere_and_never_writes_markup_from_data() -> None:
    text = b"".join(f.body for f in PAGE_FILES.values()).decode()
    assert "http://" not in text
    assert "https://" not in text
    assert "innerHTML" not in text
    assert "insertAdjacentHTML" not in text
    assert "document.write" not in text


async def _open(browser_page: Page, url: str, errors: list[str]) -> None:
    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    browser_page.on("console", console)
    browser_page.on("pageerror", lambda exc: errors.append(str(exc)))
    await browser_page.goto(url)


@pytest.mark.integration
async def test_the_page_shows_each_sites_values_and_updates_them_live(db: LiveDb) -> None:
    # Two noise sensors at the site for the newest hour, and an older, louder hour that the
    # page must not show.
    # hour(-2) ended one to two hours before the test (its base is four whole hours before):
    # recent, not stale.
    await db.upsert(None, "noise", "nation-1", 3600, hour(-2), {"laeq_db": 60.0})
    await db.upsert(None, "noise", "nation-2", 3600, hour(-2), {"laeq_db": 66.0})
    await db.upsert(None, "noise", "nation-1", 3600, hour(1), {"laeq_db": 90.0})
    # A site whose newest hour ended four hours ago: shown, dimmed as stale.
    await db.upsert(None, "noise", "square-1", 3600, hour(1), {"laeq_db": 45.0})
    await db.upsert(None, "air", "nation-air", 3600, hour(-2), {"eaqi_band": 3})
    counts = [
        {"line": 1, "direction": "in", "traffic_class": "car", "count": 7},
        {"line": 1, "direction": "out", "traffic_class": "car", "count": 5},
        {"line": 2, "direction": "in", "traffic_class": "bicycle", "count": 4},
        {"line": 2, "direction": "in", "traffic_class": "pedestrian", "count": 0},
    ]
    await db.upsert(None, "traffic", "site:nation", 3600, hour(-2), {}, counts=counts)
    pool_values = {"people_mean": 87.4, "occupancy_pct": 21.85, "affluence": 1}
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    await db.upsert(None, "occupancy", "site:piscine-pailleron", 60, minute, pool_values)

    # Independently of the page's code: the energetic mean of 60 and 66 dB is
    # 10·log10((10^6 + 10^6.6) / 2) ≈ 63.96 dB.
    site_level = 10 * math.log10((10**6.0 + 10**6.6) / 2)
    assert _fr(site_level) == "64,0"

    errors: list[str] = []
    async with (
        api_pool(db) as pool,
        serve(live_app(publication_for(pool))) as base,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1366, "height": 768})
            await _open(page, f"{base}/", errors)
            nation = page.locator('article[data-site="nation"]')
            pool_card = page.locator('article[data-site="piscine-pailleron"]')
            await expect(nation.locator(".site-name")).to_have_text(
                "Place de la Nation", timeout=_WAIT_MS
            )
            await expect(nation.locator(".noise .value")).to_have_text("64,0", timeout=_WAIT_MS)
            band = nation.locator(".air .band")
            await expect(band.locator(".band-fr")).to_have_text("Dégradé", timeout=_WAIT_MS)
            await expect(band.locator(".band-en")).to_have_text("Moderate")
            # The EEA index legend's colour for band 3 ("Moderate"): RGB 240, 230, 65.
            await expect(band).to_have_css("background-color", "rgb(240, 230, 65)")
            car = nation.locator('.counts li[data-mode="car"] .mode-count')
            await expect(car).to_have_text("12", timeout=_WAIT_MS)
            await expect(
                nation.locator('.counts li[data-mode="bicycle"] .mode-count')
            ).to_have_text("4")
            # Zero people counted is a count, shown as 0.
            await expect(
                nation.locator('.counts li[data-mode="pedestrian"] .mode-count')
            ).to_have_text("0")
            await expect(pool_card.locator(".pool .people")).to_have_text("87", timeout=_WAIT_MS)
            await expect(pool_card.locator(".pool .capacity")).to_have_text("400")
            await expect(pool_card.locator(".pool .pct")).to_have_text("22 %")
            await expect(pool_card.locator(".pool .affluence-fr")).to_have_text("Faible")
            # A site without the other kinds shows no empty tiles.
            await expect(pool_card.locator(".noise")).to_be_hidden()
            await expect(page.locator("#status")).to_have_attribute(
                "data-state", "live", timeout=_WAIT_MS
            )
            # Data is text, never markup.
            square = page.locator('article[data-site="square"]')
            await expect(square.locator(".site-name")).to_have_text(XSS_NAME, timeout=_WAIT_MS)
            assert await square.locator(".site-name b, .site-name img").count() == 0
            assert await page.evaluate("window.__pwned") is None
            await expect(square.locator(".noise")).to_have_class(re.compile(r"\bstale\b"))
            await expect(nation.locator(".noise")).not_to_have_class(re.compile(r"\bstale\b"))

            # New rows: a newer hour where only one sensor has reported, a later pool minute.
            await db.upsert(None, "noise", "nation-1", 3600, hour(-3), {"laeq_db": 70.0})
            newer_pool = {"people_mean": 250.2, "occupancy_pct": 62.55, "affluence": 3}
            await db.upsert(
                None,
                "occupancy",
                "site:piscine-pailleron",
                60,
                minute + timedelta(minutes=1),
                newer_pool,
            )
            await expect(nation.locator(".noise .value")).to_have_text("70,0", timeout=_WAIT_MS)
            await expect(pool_card.locator(".pool .people")).to_have_text("250", timeout=_WAIT_MS)
            await expect(pool_card.locator(".pool .affluence-fr")).to_have_text("Soutenue")
            # A revision of the newest counts hour replaces its counts.
            revised = [{"line": 1, "direction": "in", "traffic_class": "car", "count": 20}]
            await db.upsert(
                None, "traffic", "site:nation", 3600, hour(-2), {}, counts=revised, revision=1
            )
            await expect(car).to_have_text("20", timeout=_WAIT_MS)
            await page.screenshot(path=str(_artifacts() / "display-page.png"), full_page=True)

            # On a phone: one column, nothing wider than the screen.
            phone = await browser.new_page(viewport={"width": 390, "height": 844})
            await _open(phone, f"{base}/", errors)
            await expect(phone.locator('article[data-site="nation"] .noise .value')).to_have_text(
                "70,0", timeout=_WAIT_MS
            )
            overflow = await phone.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            wide = await phone.evaluate(
                "[...document.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right"
                " > document.documentElement.clientWidth).map(e => e.tagName + '.' + e.className"
                " + ' ' + e.getBoundingClientRect().right + ' ' + e.textContent.slice(0, 40))"
            )
            assert overflow <= 0, wide
            await phone.screenshot(
                path=str(_artifacts() / "display-page-phone.png"), full_page=True
            )
        finally:
            await browser.close()
    # No script error and no Content-Security-Policy violation (both are console errors).
    assert errors == []


#: A 3 x 3 block of 100 m cells around Châtelet, each with its band (1-6, and a 4 twice).
MAP_BANDS = [[1, 2, 3], [4, 5, 6], [4, 2, 1]]
MAP_NORTH, MAP_EAST = 2_889_400, 3_760_700
#: The EEA index legend's colours of bands 1-6 (as in the page's EAQI table).
EEA_COLOURS = ["#50f0e6", "#50ccaa", "#f0e641", "#ff5050", "#960032", "#7d2181"]


def _map_cell(row: int, column: int) -> str:
    return f"CRS3035RES100mN{MAP_NORTH + 100 * row}E{MAP_EAST + 100 * column}"


@pytest.mark.integration
async def test_the_page_maps_the_newest_hour_of_pm25_cells_and_follows_it_live(
    db: LiveDb,
) -> None:
    newest = hour(-2)
    cells = [
        cell(_map_cell(r, c), newest, 3600, 10.0 * band, band=band)
        for r, bands in enumerate(MAP_BANDS)
        for c, band in enumerate(bands)
    ]
    # An older hour's cell and a quarter hour of the newest: neither is on the hourly map.
    cells.append(cell(_map_cell(5, 5), hour(-1), 3600, 99.0, band=6))
    cells.append(cell(_map_cell(6, 6), newest, 900, 99.0, band=6))
    await write_cells(db.owner_url, cells)
    errors: list[str] = []
    async with (
        api_pool(db) as pool,
        serve(live_app(publication_for(pool))) as base,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1366, "height": 900})
            await _open(page, f"{base}/", errors)
            shapes = page.locator("#map-svg polygon.cell")
            await expect(page.locator("#map")).to_be_visible(timeout=_WAIT_MS)
            await expect(shapes).to_have_count(9, timeout=_WAIT_MS)
            for r, bands in enumerate(MAP_BANDS):
                for c, band in enumerate(bands):
                    shape = page.locator(f'#map-svg polygon[data-cell="{_map_cell(r, c)}"]')
                    await expect(shape).to_have_attribute("fill", EEA_COLOURS[band - 1])
                    await expect(shape).to_have_attribute("data-band", str(band))
            # North is up and east is right: the cell north-east of the block's south-west one
            # is drawn above and to its right.
            south_west = await page.locator(
                f'#map-svg polygon[data-cell="{_map_cell(0, 0)}"]'
            ).bounding_box()
            north_east = await page.locator(
                f'#map-svg polygon[data-cell="{_map_cell(2, 2)}"]'
            ).bounding_box()
            assert south_west is not None
            assert north_east is not None
            assert north_east["x"] > south_west["x"]
            assert north_east["y"] < south_west["y"]
            await expect(page.locator("#map-legend li")).to_have_count(6)
            await expect(page.locator("#map-when")).to_contain_text("9 carreaux")
            await page.locator("#map").screenshot(path=str(_artifacts() / "display-map.png"))

            # Live: a late cell of the same hour joins; a newer hour replaces the map.
            await write_cells(db.owner_url, [cell(_map_cell(3, 3), newest, 3600, 30.0, band=3)])
            await expect(shapes).to_have_count(10, timeout=_WAIT_MS)
            await write_cells(db.owner_url, [cell(_map_cell(0, 0), hour(-3), 3600, 12.0, band=2)])
            await expect(shapes).to_have_count(1, timeout=_WAIT_MS)
            await expect(shapes.first).to_have_attribute("fill", EEA_COLOURS[1])
        finally:
            await browser.close()
    assert errors == []
