"""The stages as processes: a dying task exits 1 after a clean shutdown, a start-up error a user
can fix is one line on stderr and exit 2 (a traceback only with ``--debug``)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from citysense.settings import STAGE_HTTP_PORTS, Settings
from citysense.stack import free_port
from tests._lifecycle import ROOT, clean_env, json_logs, run_cli_with_fault

pytestmark = pytest.mark.integration

CITYSENSE = str(Path(sys.executable).with_name("citysense"))


def _stage_env(settings: Settings, tmp_path: Path, **values: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    env = clean_env(
        CITYSENSE_HTTP_PORT=str(free_port()),
        CITYSENSE_STACK_DIR=str(tmp_path),
        CITYSENSE_MQTT_URL=settings.mqtt.url.get_secret_value(),
        CITYSENSE_MQTT_CLIENT_ID=f"cli-{tag}",
        CITYSENSE_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
        CITYSENSE_KAFKA_IDEMPOTENCE="false",
        CITYSENSE_DATABASE_URL=settings.database.url.get_secret_value(),
        CITYSENSE_SINK_GROUP_ID=f"cli-sink-{tag}",
        CITYSENSE_AGGREGATE_GROUP_ID=f"cli-aggregate-{tag}",
        CITYSENSE_AGGREGATE_ROLLUP_GROUP_ID=f"cli-rollup-{tag}",
        CITYSENSE_SHUTDOWN_DEADLINE_S="15",
    )
    env.update(values)
    return env


def _citysense(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CITYSENSE, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


# --- a background task dies: exit 1 after a clean shutdown ---------------------------------


@pytest.mark.parametrize(
    ("stage", "fault", "task"),
    [
        ("ingest", "ingest._mqtt:MqttListener._misc", "mqtt-0-misc"),
        ("sink", "sinks.timescale._service:TimescaleSink._fetch", "sink-timescale-consume"),
        ("aggregate", "streams._service:_WindowRunner.emit", "aggregate-window"),
    ],
)
def test_a_dying_task_shuts_the_stage_down_and_exits_1(
    settings: Settings, tmp_path: Path, stage: str, fault: str, task: str
) -> None:
    result = run_cli_with_fault(fault, [stage], _stage_env(settings, tmp_path))
    assert result.returncode == 1, result.stderr[-3000:]
    logs = json_logs(result.stderr)
    failed = [e for e in logs if e["message"] == "stage failed"]
    assert len(failed) == 1
    assert failed[0]["reason"] == f"task {task} failed: RuntimeError: injected fault"
    assert failed[0]["level"] == "ERROR"
    assert "Traceback" in failed[0]["exc_info"]  # a fault of ours: the traceback is logged
    messages = [e["message"] for e in logs]
    assert "shutting down after a failure" in messages
    assert messages[-1] == "component stopped"  # the shutdown ran to its end
    assert "shutdown deadline exceeded" not in messages


# --- start-up errors a user can fix: one line, exit 2 --------------------------------------


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The last stderr line, checked to be the CLI's one-line error with no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("citysense: ")
    return last


def test_a_metrics_port_in_use_names_the_setting(settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _citysense(["sink"], _stage_env(settings, tmp_path, CITYSENSE_HTTP_PORT=str(port)))
    assert _one_line(result) == (
        f"citysense: metrics port {port} is in use; set CITYSENSE_HTTP_PORT or http.port"
    )
    assert result.stderr.count("\n") == 1  # nothing else was printed: the port comes first


def test_without_a_port_setting_each_stage_uses_its_own(settings: Settings, tmp_path: Path) -> None:
    port = STAGE_HTTP_PORTS["ingest"]
    with socket.socket() as taken:
        # Something else may hold it already: the same for the test.
        with contextlib.suppress(OSError):
            taken.bind(("127.0.0.1", port))
            taken.listen()
        env = _stage_env(settings, tmp_path)
        del env["CITYSENSE_HTTP_PORT"]
        result = _citysense(["ingest"], env)
    assert _one_line(result) == (
        f"citysense: metrics port {port} is in use; set CITYSENSE_HTTP_PORT or http.port"
    )


def test_a_wrong_database_password_is_one_line_without_the_password(
    settings: Settings, tmp_path: Path
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex[:8]}"
    url = _with_password(settings.database.url.get_secret_value(), wrong)
    result = _citysense(["sink"], _stage_env(settings, tmp_path, CITYSENSE_DATABASE_URL=url))
    line = _one_line(result)
    assert "wrong password or user; check CITYSENSE_DATABASE_URL or database.url" in line
    assert ":***@" in line
    assert wrong not in result.stderr


@pytest.mark.parametrize("command", [["sink"], ["db", "migrate"], ["db", "status"]])
def test_a_missing_database_is_one_line(
    settings: Settings, tmp_path: Path, command: list[str]
) -> None:
    parts = urlsplit(settings.database.url.get_secret_value())
    url = urlunsplit(parts._replace(path=f"/absent_{uuid.uuid4().hex[:8]}"))
    result = _citysense(command, _stage_env(settings, tmp_path, CITYSENSE_DATABASE_URL=url))
    assert "the database does not exist" in _one_line(result)


def test_a_wrong_mqtt_password_is_one_line(settings: Settings, tmp_path: Path) -> None:
    wrong = f"wrong-{uuid.uuid4().hex[:8]}"
    url = _with_password(settings.mqtt.url.get_secret_value(), wrong)
    result = _citysense(["ingest"], _stage_env(settings, tmp_path, CITYSENSE_MQTT_URL=url))
    line = _one_line(result)
    assert "refused the connection" in line
    assert "CITYSENSE_MQTT_URL or mqtt.url" in line
    assert wrong not in result.stderr


def test_an_unreachable_kafka_is_one_line_and_debug_adds_the_traceback(
    settings: Settings, tmp_path: Path
) -> None:
    env = _stage_env(settings, tmp_path, CITYSENSE_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    plain = _citysense(["aggregate"], env)
    line = _one_line(plain)
    assert "is unreachable" in line
    assert "check CITYSENSE_KAFKA_BOOTSTRAP or kafka.bootstrap" in line
    debug = _citysense(["--debug", "aggregate"], env)
    assert debug.returncode == 2
    assert "Traceback (most recent call last):" in debug.stderr
    assert debug.stderr.splitlines()[-1] == line
