"""`citysense publish` as a process: serves the API and its probes, exits 0 on SIGTERM; a port in
use, an unmigrated database or a datasets file that does not match the views is one line, exit 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from citysense.settings import Settings
from citysense.stack import free_port
from tests.sinks._helpers import fresh_database
from tests.sinks.opendata._db import opendata_database

pytestmark = pytest.mark.integration

CITYSENSE = str(Path(sys.executable).with_name("citysense"))


@pytest.fixture(scope="module")
async def migrated(settings: Settings) -> AsyncIterator[str]:
    async with opendata_database(settings) as url:
        yield url


def _env(tmp_path: Path, url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env.update(
        CITYSENSE_STACK_DIR=str(tmp_path),
        CITYSENSE_DATABASE_URL=url,
        CITYSENSE_PUBLISH_PORT=str(port),
        CITYSENSE_LOG_FORMAT="json",
        **extra,
    )
    return env


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  (loopback only)
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_publish_serves_the_api_and_its_probes_and_stops_on_sigterm(
    tmp_path: Path, migrated: str
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [CITYSENSE, "publish"],
        env=_env(tmp_path, migrated, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            assert time.monotonic() < deadline, "the API did not become ready"
            time.sleep(0.1)
        status, body = _get(f"http://127.0.0.1:{port}/api/explore/v2.1/catalog/datasets?limit=100")
        assert status == 200
        assert json.loads(body)["total_count"] >= 9
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert b"citysense_publish_requests_total" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.communicate()


def _fails(env: dict[str, str]) -> str:
    result = subprocess.run(
        [CITYSENSE, "publish"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("citysense:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_a_port_in_use_is_one_line_naming_the_setting(tmp_path: Path, migrated: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _fails(_env(tmp_path, migrated, port))
    assert str(port) in line
    assert "CITYSENSE_PUBLISH_PORT" in line


async def test_an_unmigrated_database_is_one_line(tmp_path: Path, settings: Settings) -> None:
    async with fresh_database(settings) as bare:
        line = _fails(_env(tmp_path, bare.database.url.get_secret_value(), free_port()))
    assert "citysense db migrate" in line


def test_a_datasets_file_that_does_not_match_the_views_is_one_line(
    tmp_path: Path, migrated: str
) -> None:
    datasets = tmp_path / "datasets.toml"
    datasets.write_text(
        """
[[datasets]]
id = "bruit"
view = "noise_hourly"
title = { fr = "Bruit", en = "Noise" }
description = { fr = "Bruit", en = "Noise" }
fields = [
  { name = "sensor_id", type = "text", label = { fr = "Capteur", en = "Sensor" } },
  { name = "loudness", type = "double", label = { fr = "Niveau", en = "Level" } },
]
""",
        encoding="utf-8",
    )
    line = _fails(
        _env(tmp_path, migrated, free_port(), CITYSENSE_PUBLISH_DATASETS_FILE=str(datasets))
    )
    assert "loudness" in line
