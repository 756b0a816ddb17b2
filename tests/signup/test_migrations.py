"""``quartstack migrate`` on a fresh database of each test's own: applies the shipped
files once, records them, takes the lock, refuses a changed file; readiness tells an
outdated schema."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from quartstack.settings import load_settings
from quartstack.signup.cli import backend_clients
from quartstack.signup.schema import MigrationError, migrate, required_version, shipped_migrations
from tests.signup.helpers import sql
from tests.support.app import running_app
from tests.support.databases import PostgresDatabase
from tests.support.polling import wait_until


@pytest.fixture
def fresh_db() -> Iterator[PostgresDatabase]:
    account = PostgresDatabase()
    account.create()
    try:
        yield account
    finally:
        account.drop()


def env_settings(db: PostgresDatabase) -> dict[str, Any]:
    """Credentials from the environment settings (no Vault): the local-development path."""
    return dict(
        postgres_host=db.db.host,
        postgres_port=db.db.port,
        postgres_user=db.db.user,
        postgres_password=db.db.password,
        postgres_database=db.db.database,
    )


async def run_migrate(db: PostgresDatabase) -> list[str]:
    async with backend_clients(load_settings(**env_settings(db)), rabbitmq=False) as app:
        applied = await migrate(app.extensions["postgres"], timeout=60)
    return [m.name for m in applied]


async def test_applies_every_shipped_migration_once_and_records_it(fresh_db):
    shipped = shipped_migrations()
    assert shipped and required_version() == shipped[-1].version

    assert await run_migrate(fresh_db) == [m.name for m in shipped]
    assert await run_migrate(fresh_db) == []  # idempotent

    rows = await sql(fresh_db, "SELECT version, name, checksum FROM schema_migrations")
    assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
        (m.version, m.name, m.checksum) for m in shipped
    ]
    tables = await sql(fresh_db, "SELECT to_regclass('users') AS u, to_regclass('outbox') AS o")
    assert tables[0]["u"] and tables[0]["o"]


async def test_concurrent_runs_apply_each_migration_once(fresh_db):
    results = await asyncio.gather(*(run_migrate(fresh_db) for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, len(shipped_migrations())]
    count = await sql(fresh_db, "SELECT count(*) AS n FROM schema_migrations")
    assert count[0]["n"] == len(shipped_migrations())


async def test_a_changed_migration_is_refused_and_nothing_runs(fresh_db):
    await run_migrate(fresh_db)
    await sql(fresh_db, "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    await sql(fresh_db, "DELETE FROM schema_migrations WHERE version > 1")
    with pytest.raises(MigrationError, match="changed"):
        await run_migrate(fresh_db)
    rows = await sql(fresh_db, "SELECT checksum FROM schema_migrations")
    assert [r["checksum"] for r in rows] == ["edited"]


def test_the_cli_migrates_and_exits_0_then_refuses_a_changed_file_with_1(fresh_db):
    env = {
        **os.environ,
        **{k.upper(): str(v) for k, v in env_settings(fresh_db).items()},
    }
    command = [sys.executable, "-m", "quartstack", "migrate"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "schema up to date" in done.stderr
    assert fresh_db.db.password not in done.stderr

    fresh_db.sql("UPDATE schema_migrations SET checksum = 'edited'", db=fresh_db.db.database)
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "changed since they ran" in refused.stderr


async def test_readiness_is_503_with_the_reason_until_the_schema_is_migrated(fresh_db):
    settings = {
        **env_settings(fresh_db),
        "required_backends": ["postgres"],
        "readiness_interval_seconds": 0.2,
    }
    async with running_app(**settings) as (_app, client):
        response = await client.get("/health/ready")
        assert response.status_code == 503
        checks = (await response.get_json())["checks"]
        assert checks["postgres"] == "ok"
        assert checks["schema"] == (
            f"schema at version 0, needs {required_version()}: run `quartstack migrate`"
        )

        await run_migrate(fresh_db)

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        # readiness reads the last background round: the next one sees the new schema
        await wait_until(ready, timeout=30, what="readiness after the migration")
        response = await client.get("/health/ready")
        assert (await response.get_json())["checks"]["schema"] == "ok"


async def test_no_schema_check_when_postgres_is_not_required(fresh_db):
    async with running_app(**env_settings(fresh_db)) as (_app, client):
        response = await client.get("/health/ready")
        assert response.status_code == 200
        assert "schema" not in (await response.get_json())["checks"]


async def test_signups_on_an_unmigrated_schema_are_503_not_500(fresh_db):
    async with running_app(**env_settings(fresh_db)) as (_app, client):
        response = await client.post("/users", json={"email": "a@example.com", "name": "A"})
        assert response.status_code == 503, await response.get_data(as_text=True)
        assert (await response.get_json())["type"] == "/problems/backend-unavailable"
        deleted = await client.delete("/users/6f1c1d0e-8a4b-4c1e-9a59-2f1a8c6a7e10")
        assert deleted.status_code == 503
