"""``citysense stack`` through the installed console script, on its own ports and directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from citysense.stack import free_port, port_open
from citysense.stack._process import pid_alive, read_pid

pytestmark = pytest.mark.integration

CITYSENSE = str(Path(sys.executable).with_name("citysense"))


@pytest.fixture
def cli_env() -> Iterator[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="citysense-cli-"))
    root.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    env.update(
        CITYSENSE_STACK_DIR=str(root / "stack"),
        CITYSENSE_STACK_MQTT_PORT=str(free_port()),
        CITYSENSE_STACK_KAFKA_PORT=str(free_port()),
        CITYSENSE_STACK_POSTGRES_PORT=str(free_port()),
        CITYSENSE_STACK_PROMETHEUS_PORT=str(free_port()),
        CITYSENSE_HTTP_PORT=str(free_port()),
    )
    try:
        yield env
    finally:
        subprocess.run([CITYSENSE, "stack", "down"], env=env, check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CITYSENSE, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_stack_up_is_idempotent_and_down_leaves_no_process(cli_env: dict[str, str]) -> None:
    first = _cli(cli_env, "stack", "up")
    assert first.returncode == 0, first.stderr
    assert "started mosquitto, kafka, postgres, prometheus" in first.stdout

    status = _cli(cli_env, "stack", "status")
    assert status.returncode == 0, status.stdout
    stack_dir = Path(cli_env["CITYSENSE_STACK_DIR"])
    pids = {
        name: read_pid(stack_dir / f"{name}.pid")
        for name in ("mosquitto", "kafka", "postgres", "prometheus")
    }
    assert all(pid_alive(pid) for pid in pids.values())

    second = _cli(cli_env, "stack", "up")
    assert second.returncode == 0, second.stderr
    assert "no change" in second.stdout
    assert {n: read_pid(stack_dir / f"{n}.pid") for n in pids} == pids

    env_lines = dict(
        line.split("=", 1) for line in _cli(cli_env, "stack", "env").stdout.splitlines()
    )
    for key in (
        "CITYSENSE_MQTT_URL",
        "CITYSENSE_KAFKA_BOOTSTRAP",
        "CITYSENSE_DATABASE_URL",
        "CITYSENSE_PROMETHEUS_URL",
    ):
        assert key in env_lines
    assert env_lines["CITYSENSE_KAFKA_BOOTSTRAP"].endswith(cli_env["CITYSENSE_STACK_KAFKA_PORT"])

    # The settings of any later command pick the stack up, with secrets masked when printed.
    shown = _cli(cli_env, "settings")
    assert shown.returncode == 0, shown.stderr
    password = env_lines["CITYSENSE_DATABASE_URL"].split(":")[2].split("@")[0]
    assert password not in shown.stdout
    assert cli_env["CITYSENSE_STACK_POSTGRES_PORT"] in shown.stdout

    down = _cli(cli_env, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids.values())
    for key in ("MQTT", "KAFKA", "POSTGRES", "PROMETHEUS"):
        assert not port_open(int(cli_env[f"CITYSENSE_STACK_{key}_PORT"]))
    assert _cli(cli_env, "stack", "status").returncode == 1


def test_stack_up_names_a_taken_port(cli_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(cli_env["CITYSENSE_STACK_MQTT_PORT"])))
        blocker.listen()
        result = _cli(cli_env, "stack", "up")
    assert result.returncode == 1
    assert "mosquitto: port" in result.stderr
    assert "Traceback" not in result.stderr
