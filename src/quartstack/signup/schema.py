"""Versioned SQL migrations shipped in the package, and the schema version check.

A small runner rather than a library: the well-kept tools need what this service
does not otherwise have — Alembic needs SQLAlchemy, yoyo-migrations and pyway a
synchronous DB-API driver (psycopg) next to asyncpg, and the asyncpg-specific ones
are unmaintained. What we need is short: files ``NNNN_name.sql`` applied in order,
each recorded in ``schema_migrations`` with its SHA-256, under a PostgreSQL advisory
lock, through the app's own Postgres client (Vault credentials, breaker, metrics).

All pending migrations run in one transaction (PostgreSQL's DDL is transactional):
a failure leaves the schema as it was. The lock is transaction-scoped, so it is
released at commit or rollback even if the process dies. A statement that cannot
run inside a transaction (``CREATE INDEX CONCURRENTLY``) is not supported.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import asyncpg

from quartstack.integrations.postgres import PostgresPool
from quartstack.resilience import BackendError

#: pg_advisory_xact_lock key of the migration run ("quartstack" in ASCII, truncated).
LOCK_KEY = 0x71756172747374
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The recorded migrations do not match the shipped ones; nothing was applied."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@cache
def shipped_migrations() -> tuple[Migration, ...]:
    """The package's migrations, in version order."""
    found = []
    for entry in resources.files("quartstack.signup.migrations").iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version")
    return tuple(found)


def required_version() -> int:
    """The schema version this code needs: its newest migration."""
    migrations = shipped_migrations()
    return migrations[-1].version if migrations else 0


async def apply_pending(
    connection: asyncpg.Connection, migrations: tuple[Migration, ...]
) -> list[Migration]:
    """Apply what is not recorded yet (in one transaction, under the lock); refuse to
    run if a recorded migration's checksum differs from the shipped file."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await connection.execute(_LEDGER)
        rows = await connection.fetch("SELECT version, checksum FROM schema_migrations")
        recorded = {row["version"]: row["checksum"] for row in rows}
        changed = [m for m in migrations if recorded.get(m.version, m.checksum) != m.checksum]
        if changed:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in changed)
            raise MigrationError(f"applied migrations changed since they ran: {names}")
        pending = [m for m in migrations if m.version not in recorded]
        for migration in pending:
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
    return pending


async def migrate(postgres: PostgresPool, *, timeout: float) -> list[Migration]:
    """Bring the schema up to date over the app's Postgres client."""
    migrations = shipped_migrations()
    try:
        return await postgres.run(
            "migrate",
            lambda connection: apply_pending(connection, migrations),
            timeout=timeout,
        )
    except BackendError as exc:
        if isinstance(exc.__cause__, MigrationError):  # the database is fine; the files are not
            raise exc.__cause__ from None
        raise


async def current_version(postgres: PostgresPool) -> int:
    """The newest applied migration (0 when none ever ran)."""

    async def read(connection: asyncpg.Connection) -> int:
        try:
            value = await connection.fetchval("SELECT max(version) FROM schema_migrations")
        except asyncpg.exceptions.UndefinedTableError:
            return 0
        return int(value or 0)

    return await postgres.run("schema_version", read, idempotent=True)
