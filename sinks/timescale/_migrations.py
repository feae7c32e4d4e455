"""Versioned SQL migrations of the TimescaleDB schema (``migrations/NNNN_<name>.sql``).

Each file is applied once, in version order, in its own transaction, and recorded in
``schema_migrations`` with the SHA-256 of its text. A session advisory lock serialises concurrent
migrators (several sink instances starting together). A recorded migration whose file has since
changed is an error: published migrations are never edited, a new one is added instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any

import psycopg
from psycopg import sql

__all__ = [
    "API_ROLE",
    "MIGRATIONS",
    "Migration",
    "MigrationError",
    "MigrationStatus",
    "migrate",
    "migration_status",
    "set_role_passwords",
]

#: pg_advisory_lock key: the bytes "citysens" as a big-endian bigint.
_LOCK_KEY = int.from_bytes(b"citysens", "big", signed=True)
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
WRITER_ROLE = "citysense_writer"
READER_ROLE = "citysense_reader"
#: The open-data API's role: SELECT on the ``opendata`` views only (migration 0003).
API_ROLE = "citysense_api"


class MigrationError(Exception):
    """The schema cannot be brought to the current version; the message says why."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None
    #: False when the recorded checksum differs from the file's (the file was edited).
    unchanged: bool


def _load() -> tuple[Migration, ...]:
    found: list[Migration] = []
    for resource in files("sinks.timescale").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(resource.name)
        if match is None:
            continue
        found.append(Migration(int(match[1]), match[2], resource.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps, got {versions}")
    return tuple(found)


MIGRATIONS: tuple[Migration, ...] = _load()

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def _applied(conn: psycopg.AsyncConnection[Any]) -> dict[int, tuple[str, str, datetime]]:
    exists = await (
        await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = await (
        await conn.execute("SELECT version, name, checksum, applied_at FROM schema_migrations")
    ).fetchall()
    return {int(v): (str(n), str(c), a) for v, n, c, a in rows}


async def migration_status(conn: psycopg.AsyncConnection[Any]) -> list[MigrationStatus]:
    """Every known migration with when it was applied (None: pending)."""
    applied = await _applied(conn)
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        await conn.rollback()
    return [
        MigrationStatus(
            m.version,
            m.name,
            applied[m.version][2] if m.version in applied else None,
            m.version not in applied or applied[m.version][1] == m.checksum,
        )
        for m in MIGRATIONS
    ]


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[Migration]:
    """Apply the pending migrations; returns those applied now. ``conn`` must be autocommit."""
    if not conn.autocommit:
        raise MigrationError("migrate() needs an autocommit connection")
    await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        applied = await _applied(conn)
        for m in MIGRATIONS:
            if m.version in applied and applied[m.version][1] != m.checksum:
                raise MigrationError(
                    f"migration {m.version:04d}_{m.name} was edited after it was applied "
                    "(checksum differs); add a new migration instead"
                )
        unknown = sorted(set(applied) - {m.version for m in MIGRATIONS})
        if unknown:
            raise MigrationError(
                f"the database has migrations {unknown} this version does not know: "
                "it was migrated by a newer citysense"
            )
        done: list[Migration] = []
        for m in MIGRATIONS:
            if m.version in applied:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(_CREATE_TABLE)
                    await conn.execute(sql.SQL(m.sql))  # our own file, not input
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
            except psycopg.errors.InsufficientPrivilege as exc:
                raise MigrationError(
                    f"migration {m.version:04d}_{m.name} needs the schema owner's rights "
                    f"(run `citysense db migrate` as the owner): {exc}"
                ) from exc
            except psycopg.DatabaseError as exc:
                if isinstance(exc, psycopg.OperationalError):
                    raise
                raise MigrationError(f"migration {m.version:04d}_{m.name} failed: {exc}") from exc
            done.append(m)
        return done
    finally:
        if not conn.closed and not conn.broken:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


async def set_role_passwords(
    conn: psycopg.AsyncConnection[Any],
    writer: str | None,
    reader: str | None,
    api: str | None = None,
) -> list[str]:
    """Give the writer/reader/API roles LOGIN and a password; returns the roles changed.

    The password is SCRAM-hashed by libpq before it is sent (``PQencryptPasswordConn``), so the
    plain text never reaches the server, its statement log or ours.
    """
    changed: list[str] = []
    for role, password in ((WRITER_ROLE, writer), (READER_ROLE, reader), (API_ROLE, api)):
        if password is None:
            continue
        hashed = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
        await conn.execute(
            sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(hashed.decode())
            )
        )
        changed.append(role)
    return changed
