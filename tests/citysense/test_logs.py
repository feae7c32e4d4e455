"""Log lines: console and JSON formatters, and the terminal switch (checked through a real pty)."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from citysense.logs import (
    ConsoleFormatter,
    StageFilter,
    configure_logging,
    logfmt_value,
    partition_summary,
    stage_of,
    use_console,
)
from citysense.stack import free_port

CITYSENSE = str(Path(sys.executable).with_name("citysense"))


def _record(name: str, level: int, message: str, **extra: object) -> logging.LogRecord:
    record = logging.getLogger(name).makeRecord(name, level, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("127.0.0.1:21883", "127.0.0.1:21883"),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("", '""'),
        ("line\nbreak", '"line\\nbreak"'),
        (42, "42"),
        (0.25, "0.25"),
        (True, "true"),
        (None, "null"),
        (["1m", "15m"], '["1m","15m"]'),
        ({"ingest": "task died"}, '{"ingest":"task died"}'),
    ],
)
def test_logfmt_values_are_bare_only_when_unambiguous(value: object, shown: str) -> None:
    assert logfmt_value(value) == shown


def test_the_stage_comes_from_the_logger_else_the_process() -> None:
    assert stage_of("citysense.ingest.mqtt", "run") == "ingest"
    assert stage_of("citysense.sink.timescale", "run") == "sink"
    assert stage_of("citysense.aggregate", "run") == "aggregate"
    assert stage_of("citysense.ingestion", "run") == "run"  # a prefix, not a stage
    assert stage_of("aiokafka.conn", "sink") == "sink"
    assert stage_of("citysense.runtime", "ingest") == "ingest"


def test_a_console_line_is_time_level_stage_message_then_key_values() -> None:
    record = _record(
        "citysense.ingest.kafka",
        logging.WARNING,
        "kafka send failed; retrying",
        topic="city.noise.measurements.v1",
        records=12,
        error="KafkaTimeoutError()",
    )
    StageFilter("run").filter(record)
    line = ConsoleFormatter().format(record)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} WARNING ingest    kafka send failed; retrying "
        r"topic=city\.noise\.measurements\.v1 records=12 error=KafkaTimeoutError\(\)",
        line,
    ), line


def test_a_library_record_names_its_logger_and_a_traceback_follows_the_line() -> None:
    try:
        raise ValueError("bad frame")
    except ValueError:
        record = logging.getLogger("aiokafka.conn").makeRecord(
            "aiokafka.conn", logging.ERROR, __file__, 1, "lost", (), sys.exc_info()
        )
    StageFilter("sink").filter(record)
    first, *rest = ConsoleFormatter().format(record).splitlines()
    assert first.endswith("ERROR   sink      lost logger=aiokafka.conn")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: bad frame"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_picks_console_for_a_terminal_and_json_otherwise() -> None:
    assert use_console("auto", _Terminal())
    assert not use_console("auto", io.StringIO())
    assert use_console("console", io.StringIO())
    assert not use_console("json", _Terminal())


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_stage_and_the_extra_fields() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stage="sink", stream=stream)
    logging.getLogger("citysense.runtime").info("component started", extra={"component": "x"})
    logging.getLogger("citysense.ingest").debug("below the level")
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["stage"] == "sink"
    assert entry["logger"] == "citysense.runtime"
    assert entry["level"] == "INFO"
    assert entry["message"] == "component started"
    assert entry["component"] == "x"


@pytest.mark.usefixtures("restore_logging")
def test_console_format_is_used_on_a_terminal_stream() -> None:
    stream = _Terminal()
    configure_logging("INFO", "auto", stage="aggregate", stream=stream)
    logging.getLogger("citysense.aggregate").info("aggregator starting", extra={"kinds": ["air"]})
    [line] = stream.getvalue().splitlines()
    assert line.endswith('INFO    aggregate aggregator starting kinds=["air"]')


def test_partitions_are_summarised_as_ranges_per_topic() -> None:
    partitions = [("b", 5), ("a", 0), ("a", 1), ("a", 2), ("a", 4), ("b", 0), ("b", 1)]
    assert partition_summary(partitions) == "a:0-2,4 b:0-1,5"
    assert partition_summary([("t", 3)]) == "t:3"


def _ingest_env(http_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")}
    # Nothing listens on the Kafka port: the stage logs its start, then stops with one line.
    env.update(
        CITYSENSE_HTTP_PORT=str(http_port),
        CITYSENSE_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        CITYSENSE_STACK_DIR=os.devnull,
    )
    return env


def test_a_real_terminal_gets_human_lines_and_a_pipe_gets_json() -> None:
    port = free_port()
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [CITYSENSE, "ingest"],
            env=_ingest_env(port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
        )
        os.close(terminal)
        output = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        status = proc.wait(timeout=30)
    finally:
        os.close(controller)
    lines = output.decode().replace("\r\n", "\n").splitlines()
    assert status == 2
    assert re.fullmatch(
        rf"\d\d:\d\d:\d\d\.\d{{3}} INFO    ingest    health server listening port={port}",
        lines[0],
    ), lines
    assert lines[-1].startswith("citysense: Kafka at 127.0.0.1:")
    assert not any(line.startswith("{") for line in lines)

    piped = subprocess.run(
        [CITYSENSE, "ingest"],
        env=_ingest_env(free_port()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 2
    *logs, last = piped.stderr.splitlines()
    entries = [json.loads(line) for line in logs]
    assert entries[0]["message"] == "health server listening"
    assert entries[0]["stage"] == "ingest"
    assert last.startswith("citysense: Kafka at 127.0.0.1:")
