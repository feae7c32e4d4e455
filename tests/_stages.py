"""Stages as separate OS processes (``citysense ingest|aggregate|sink|publish``), for the fault
suite and the stages' own kill and outage tests.

Each is started with its settings in the environment, as in production, so ``kill -9`` kills a
real process and SIGTERM runs the real drain. Memory is sampled with psutil while it runs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

__all__ = ["StageProcess"]

CITYSENSE = str(Path(sys.executable).with_name("citysense"))


class StageProcess:
    """One stage; restartable after a kill, with the same settings (and so the same client id,
    consumer group and persistent MQTT session)."""

    def __init__(self, stage: str, env: dict[str, str], port: int, log: Path) -> None:
        self.stage = stage
        self.env = env
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [CITYSENSE, self.stage], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.starts += 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def readyz(self) -> int:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/readyz", timeout=2
            ) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.readyz() != 200:
            if not self.running():
                raise AssertionError(f"{self.stage} exited: {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.stage} not ready after {timeout} s: {self.tail()}")
            time.sleep(0.2)

    def sample_rss(self) -> None:
        """Adds the current resident set size of the process to its peak."""
        if self.proc is None:
            return
        try:
            rss = psutil.Process(self.proc.pid).memory_info().rss
        except psutil.Error:
            return
        self.peak_rss = max(self.peak_rss, rss)

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, no commit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 120) -> int:
        """SIGTERM and the exit status (the runtime exits 1 when the drain ran over its
        deadline, so 0 means it drained in time)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def metrics(self) -> str:
        """The process's Prometheus exposition."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
