"""Logs on the standard logging module: short human lines on a terminal, JSON lines otherwise.

On a terminal (``log_format = "auto"`` and stderr a TTY, or ``"console"``) each record is one
line: local time, level, stage, message, then the record's extra fields as ``key=value`` (in the
logfmt style: values with spaces or quotes are quoted, lists and maps are compact JSON)::

    11:34:11.123 INFO    ingest    mqtt connected broker=127.0.0.1:21883 client_id=citysense-ingest

Otherwise (``"auto"`` and stderr redirected, or ``"json"``) each record is one JSON object with
``time``, ``level``, ``logger``, ``stage``, ``message`` and the extra fields, for log collectors.

The stage comes from the logger (``citysense.ingest.*`` is ingest, ``citysense.sink.*`` the sink,
``citysense.aggregate`` the aggregator, ``citysense.publish`` the API), else it is the stage the
process runs (``run`` for all of them in one process).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "ConsoleFormatter",
    "StageFilter",
    "configure_logging",
    "logfmt_value",
    "partition_summary",
    "stage_of",
    "use_console",
]

LogFormat = Literal["auto", "json", "console"]

#: Logger name prefix → the stage its records belong to.
_STAGE_LOGGERS = (
    ("citysense.ingest", "ingest"),
    ("citysense.sink", "sink"),
    ("citysense.aggregate", "aggregate"),
    ("citysense.publish", "publish"),
)

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "stage", "taskName"}
    # uvicorn's copy of its message with terminal colours.
    | {"color_message"}
)


def stage_of(logger_name: str, default: str) -> str:
    """The stage a logger's records belong to; ``default`` for shared and library loggers."""
    for prefix, stage in _STAGE_LOGGERS:
        if logger_name == prefix or logger_name.startswith(prefix + "."):
            return stage
    return default


class StageFilter(logging.Filter):
    """Sets ``record.stage`` (see :func:`stage_of`) for both formatters; filters nothing."""

    def __init__(self, default_stage: str) -> None:
        super().__init__()
        self.default_stage = default_stage

    def filter(self, record: logging.LogRecord) -> bool:
        record.stage = stage_of(record.name, self.default_stage)
        return True


def logfmt_value(value: object) -> str:
    """One value of a ``key=value`` pair, unambiguous for a reader and for ``grep``.

    Bare when it has no space, quote, ``=`` or control character; otherwise a JSON string.
    Lists, tuples and maps are compact JSON; None is ``null``, booleans ``true``/``false``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(str(value))
    if isinstance(value, list | tuple | dict | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return json.dumps(items, separators=(",", ":"), default=str, ensure_ascii=False)
    text = str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL   stage     message key=value ...`` (traceback on the next lines)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created).astimezone()
        stage = getattr(record, "stage", None) or stage_of(record.name, "-")
        parts = [
            f"{moment:%H:%M:%S}.{int(record.msecs):03d}",
            f"{record.levelname:<7}",
            f"{stage:<9}",
            record.getMessage(),
        ]
        if not record.name.startswith("citysense"):
            parts.append(f"logger={record.name}")
        parts.extend(
            f"{key}={logfmt_value(value)}"
            for key, value in record.__dict__.items()
            if key not in _RECORD_FIELDS and not key.startswith("_")
        )
        line = " ".join(parts)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def use_console(log_format: LogFormat, stream: TextIO) -> bool:
    """Human lines for ``console``, and for ``auto`` when ``stream`` is a terminal."""
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())
    return log_format == "console"


def configure_logging(
    level: str = "INFO",
    log_format: LogFormat = "auto",
    *,
    stage: str = "run",
    stream: TextIO | None = None,
) -> None:
    """Route every logger to one handler on ``stream`` (stderr); idempotent.

    ``stage``: the stage this process runs, shown on records of shared and library loggers.
    """
    stream = stream if stream is not None else sys.stderr
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_citysense", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    if use_console(log_format, stream):
        handler.setFormatter(ConsoleFormatter())
    else:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(stage)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    handler.addFilter(StageFilter(stage))
    handler._citysense = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # aiokafka logs every reconnect attempt at ERROR, and every partition of an assignment at
    # INFO; our stages report outages and assignments themselves.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))


def partition_summary(partitions: Iterable[tuple[str, int]]) -> str:
    """Partitions as ranges per topic, for one bounded log field instead of a list of all.

    ``[("city.air.measurements.v1", 0), ("city.air.measurements.v1", 1),
    ("city.air.measurements.v1", 3)]`` gives ``"city.air.measurements.v1:0-1,3"``; topics are
    sorted and separated by a space.
    """
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    parts = []
    for topic in sorted(by_topic):
        numbers = sorted(set(by_topic[topic]))
        ranges: list[str] = []
        first = previous = numbers[0]
        for number in [*numbers[1:], None]:
            if number is not None and number == previous + 1:
                previous = number
                continue
            ranges.append(str(first) if first == previous else f"{first}-{previous}")
            if number is not None:
                first = previous = number
        parts.append(f"{topic}:{','.join(ranges)}")
    return " ".join(parts)
