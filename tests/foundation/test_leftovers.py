"""The session-start sweeps remove what an interrupted run left on the machine's
servers, and only that: objects with the suite's name that say they are over an hour
old. Fresh suite objects (a run still going) and other names are kept."""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path

import redis as redis_sync
from tests.rabbitmq.broker import rabbitmqctl, sweep_broker_leftovers
from tests.support.databases import (
    MySQLDatabase,
    PostgresDatabase,
    PrivatePostgres,
    sweep_database_leftovers,
)
from tests.support.leftovers import MAX_AGE, private_dir, stale, sweep_redis_leftovers, unique_name


def _old_name(sep: str = "_") -> str:
    """A suite name created two hours ago."""
    return f"qs{sep}test{sep}{int(time.time() - 2 * MAX_AGE)}{sep}{secrets.token_hex(4)}"


def test_stale_reads_the_creation_time_in_the_name():
    now = time.time()
    old, fresh = _old_name(), unique_name()
    foreign = ["qs_ad7cfcb74c", "quartstack", "qs_test_12_ab", old + "x", "xx" + old]
    assert stale([old, fresh, *foreign], now=now) == [old]
    assert stale([_old_name("-")], "-") and not stale([old], "-")
    assert stale([fresh], now=now + MAX_AGE + 1) == [fresh]


def test_sql_sweep_drops_stale_roles_users_databases_and_private_clusters():
    old_pg, fresh_pg = PostgresDatabase(name=_old_name()), PostgresDatabase()
    old_my, fresh_my = MySQLDatabase(name=_old_name()), MySQLDatabase()
    objects = [old_pg, fresh_pg, old_my, fresh_my]
    fresh_cluster = private_dir("pg")
    stale_cluster = fresh_cluster.parent / f"{_old_name('-')}-pg-abc"
    stale_cluster.mkdir()
    foreign_dir = Path(tempfile.mkdtemp(prefix="qs-pg-"))  # no time in its name: kept
    try:
        for database in objects:
            database.create()
        sweep_database_leftovers()
        roles = old_pg.sql("SELECT rolname FROM pg_roles").split()
        databases = old_pg.sql("SELECT datname FROM pg_database").split()
        assert old_pg.db.user not in roles and old_pg.db.database not in databases
        assert fresh_pg.db.user in roles and fresh_pg.db.database in databases
        users = {str(row[0]) for row in fresh_my.sql("SELECT user FROM mysql.user")}
        schemas = {str(row[0]) for row in fresh_my.sql("SHOW DATABASES")}
        assert old_my.db.user not in users and old_my.db.database not in schemas
        assert fresh_my.db.user in users and fresh_my.db.database in schemas
        assert not stale_cluster.exists()
        assert fresh_cluster.exists() and foreign_dir.exists()
    finally:
        for database in objects:
            database.drop()
        for directory in (fresh_cluster, foreign_dir):
            PrivatePostgres(directory).stop()


def test_broker_sweep_deletes_stale_vhosts_and_users():
    old, fresh = _old_name("-"), unique_name("-")
    try:
        for name in (old, fresh):
            rabbitmqctl("add_vhost", name)
            rabbitmqctl("add_user", name, secrets.token_hex(8))
        sweep_broker_leftovers()
        vhosts = rabbitmqctl("-q", "list_vhosts", "--no-table-headers", "name").split()
        users = rabbitmqctl("-q", "list_users", "--no-table-headers").split()
        assert old not in vhosts and old not in users
        assert fresh in vhosts and fresh in users
    finally:
        for name in (old, fresh):
            rabbitmqctl("delete_user", name, check=False)
            rabbitmqctl("delete_vhost", name, check=False)


def test_redis_sweep_deletes_only_stale_suite_keys():
    old, fresh = _old_name("-"), unique_name("-")
    keys = [old, f"{old}:a", f"{old}:b", fresh, f"{fresh}:a"]
    with redis_sync.Redis(port=6379) as shared:
        try:
            for key in keys:
                shared.set(key, "v")
            sweep_redis_leftovers()
            assert shared.exists(*keys[:3]) == 0
            assert shared.exists(*keys[3:]) == 2
        finally:
            shared.delete(*keys)
