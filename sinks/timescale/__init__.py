"""TimescaleDB sink: Kafka measurement and aggregate topics → hypertables, exactly once.

docs/architecture.md#delivery-guarantees (rules 5, 6) and #storage. Public surface: the component
:class:`TimescaleSink`, its settings :class:`SinkSettings`, the migrations (:func:`migrate`,
:func:`migration_status`) and the CLI entry points (:func:`run_sink`, :func:`db_migrate`,
:func:`db_status`).
"""

from sinks.timescale._cli import db_migrate, db_status, run_sink, sink_settings
from sinks.timescale._migrations import (
    API_ROLE,
    MIGRATIONS,
    READER_ROLE,
    WRITER_ROLE,
    Migration,
    MigrationError,
    MigrationStatus,
    migrate,
    migration_status,
)
from sinks.timescale._service import TimescaleSink
from sinks.timescale._settings import DEFAULT_TOPICS, SinkSettings

__all__ = [
    "API_ROLE",
    "DEFAULT_TOPICS",
    "MIGRATIONS",
    "READER_ROLE",
    "WRITER_ROLE",
    "Migration",
    "MigrationError",
    "MigrationStatus",
    "SinkSettings",
    "TimescaleSink",
    "db_migrate",
    "db_status",
    "migrate",
    "migration_status",
    "run_sink",
    "sink_settings",
]
