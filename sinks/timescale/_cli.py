"""Command functions for ``citysense sink`` and ``citysense db migrate|status``.

Plain functions taking :class:`~citysense.settings.Settings` and returning an exit status, for the
CLI to register.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from citysense.clients import check_database, connect_database
from citysense.registry import Registry
from citysense.settings import Settings, mask_url
from sinks.timescale._migrations import (
    MigrationError,
    migrate,
    migration_status,
    set_role_passwords,
)
from sinks.timescale._policies import apply_policies
from sinks.timescale._registry import sync_registry
from sinks.timescale._settings import SinkSettings

__all__ = ["db_migrate", "db_status", "run_sink", "sink_settings"]


def sink_settings(settings: Settings) -> SinkSettings:
    """The ``[sink]`` section (``CITYSENSE_SINK_*``)."""
    return settings.sink


def run_sink(settings: Settings, registry: Registry | None = None) -> int:
    """Run the TimescaleDB sink alone until SIGTERM/SIGINT; the exit status (``citysense sink``
    adds logging and the one-line start-up errors). A start that fails raises its error."""
    from citysense.runtime import run_stage
    from sinks.timescale._service import TimescaleSink

    return run_stage(settings, "sink", [TimescaleSink(settings, sink_settings(settings), registry)])


def db_migrate(
    settings: Settings, out: TextIO | None = None, registry: Registry | None = None
) -> int:
    """``citysense db migrate``: migrations, role passwords, storage policies, the registry
    (sites and sensors)."""
    sink = sink_settings(settings)
    out = out or sys.stdout

    async def main() -> int:
        await check_database(settings.database)  # StartupError: one line, not a traceback
        conn = await connect_database(settings.database, autocommit=True)
        try:
            applied = await migrate(conn)
            roles = await set_role_passwords(
                conn,
                None if sink.writer_password is None else sink.writer_password.get_secret_value(),
                None if sink.reader_password is None else sink.reader_password.get_secret_value(),
                None if sink.api_password is None else sink.api_password.get_secret_value(),
            )
            report = await apply_policies(conn, sink)
            synced = None if registry is None else await sync_registry(conn, registry)
        finally:
            await conn.close()
        where = mask_url(settings.database.url.get_secret_value())
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}", file=out)
        for role in roles:
            print(f"password set for role {role}", file=out)
        if synced is not None:
            sites = len(registry.sites) if registry is not None else 0
            print(f"sites table: {synced.sites} of {sites} sites changed", file=out)
            print(
                f"sensors table: {synced.sensors} of {len(registry or ())} sensors changed",
                file=out,
            )
        retention = "policy jobs" if report.retention_by_jobs else "the sink (drop_chunks)"
        print(
            f"{where}: schema up to date ({len(applied)} applied now); licence {report.licence}, "
            f"retention by {retention}, compression {'on' if report.compression else 'off'}",
            file=out,
        )
        return 0

    try:
        return asyncio.run(main())
    except MigrationError as exc:
        print(f"citysense: {exc}", file=sys.stderr)
        return 1


def db_status(settings: Settings, out: TextIO | None = None) -> int:
    """``citysense db status``: one line per migration; exit status 1 when some are pending."""
    out = out or sys.stdout

    async def main() -> int:
        await check_database(settings.database)  # StartupError: one line, not a traceback
        conn = await connect_database(settings.database, autocommit=True)
        try:
            statuses = await migration_status(conn)
        finally:
            await conn.close()
        pending = 0
        for s in statuses:
            if s.applied_at is None:
                pending += 1
                state = "pending"
            else:
                state = f"applied {s.applied_at.isoformat()}"
            if not s.unchanged:
                state += " (file changed since applied!)"
            print(f"{s.version:04d}_{s.name:<24} {state}", file=out)
        return 1 if pending or not all(s.unchanged for s in statuses) else 0

    return asyncio.run(main())
