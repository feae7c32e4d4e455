"""Helpers of the lifecycle tests: a component that holds the shutdown, probes, faulty CLI runs.

``HoldingComponent`` is listed last in ``run_components``, so it is stopped first: its ``stop``
waits for the test, which reads ``/healthz`` and ``/readyz`` of a stage that has failed and is
shutting down, then lets the shutdown go on. ``run_cli_with_fault`` runs the real ``citysense``
CLI in a subprocess with one coroutine method of a stage replaced by one that raises
(``python -m tests._faulty``), so a background task dies in a real process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class HoldingComponent:
    """A component with no work whose ``stop`` waits until ``release`` is set."""

    name = "holder"

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()
        self._failed = asyncio.Event()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopping.set()
        await self.release.wait()

    def ready(self) -> bool:
        return True

    async def wait_failed(self) -> None:
        await self._failed.wait()


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of ``path`` on the loopback health server."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def probes(port: int) -> tuple[tuple[int, dict[str, Any]], tuple[int, dict[str, Any]]]:
    """``/healthz`` and ``/readyz``, read from a thread (the server runs on this loop)."""
    healthz = await asyncio.to_thread(probe, port, "/healthz")
    readyz = await asyncio.to_thread(probe, port, "/readyz")
    return healthz, readyz


def clean_env(**values: str) -> dict[str, str]:
    """The environment without any CITYSENSE_ setting of the caller's, plus ``values``; the
    repository first on the path so the subprocess runs this checkout's code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(values)
    return env


def run_cli_with_fault(
    fault: str, args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``citysense ARGS`` with ``fault`` (``module:Class.method``) raising when called."""
    return subprocess.run(
        [sys.executable, "-m", "tests._faulty", fault, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def json_logs(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``stderr`` (other lines skipped)."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
