"""Fixtures for the database suite.

A dedicated database and user per run on the machine's PostgreSQL and MariaDB,
an ``nx-27017`` process for MongoDB (behind a SCRAM front where a test needs a
password), and a KV v2 mount of each test's own in the session OpenBao
holding the ``postgres``, ``mysql`` and ``mongodb`` secrets, so that tests that
rotate a secret touch no other test.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.databases.helpers import DatabaseAccounts
from tests.support.databases import (
    MySQLDatabase,
    PostgresDatabase,
    PrivatePostgres,
    sweep_database_leftovers,
)
from tests.support.mongo import NxMongoServer, ScramFront
from tests.support.vault import VaultTestServer


@pytest.fixture(scope="session", autouse=True)
def database_leftovers_swept() -> None:
    """What an interrupted run left on the SQL servers goes before this run starts."""
    sweep_database_leftovers()


@pytest.fixture(scope="session")
def postgres_account() -> Iterator[PostgresDatabase]:
    """A role and database of our own on the machine's PostgreSQL."""
    account = PostgresDatabase()
    account.create()
    yield account
    account.drop()


@pytest.fixture(scope="session")
def mysql_account() -> Iterator[MySQLDatabase]:
    """A user and database of our own on the machine's MariaDB."""
    account = MySQLDatabase()
    account.create()
    yield account
    account.drop()


@pytest.fixture(scope="session")
def nx_mongo() -> Iterator[NxMongoServer]:
    with NxMongoServer() as server:
        yield server


@pytest.fixture(scope="session")
def scram_postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL cluster that checks passwords (the machine's trusts all)."""
    server = PrivatePostgres().start()
    yield server
    server.stop()


@pytest.fixture
def scram_postgres_account(scram_postgres: PrivatePostgres) -> Iterator[PostgresDatabase]:
    account = PostgresDatabase(port=scram_postgres.port, admin_password=scram_postgres.password)
    account.create()
    yield account
    account.drop()


@pytest.fixture
def mongo_front(nx_mongo: NxMongoServer) -> Iterator[ScramFront]:
    """nx-27017 behind SCRAM-SHA-256 login as a user of this test's own."""
    user = f"qs_{uuid.uuid4().hex[:8]}"
    with ScramFront(nx_mongo.port, user, "mp-" + secrets.token_hex(12)) as front:
        yield front


@pytest.fixture
def accounts(
    vault_server: VaultTestServer,
    postgres_account: PostgresDatabase,
    mysql_account: MySQLDatabase,
) -> DatabaseAccounts:
    """This test's own Vault mount, holding the three database secrets."""
    mount = f"db-{uuid.uuid4().hex[:8]}"
    vault_server.enable_kv_v2(mount)
    accounts = DatabaseAccounts(vault_server, mount, f"qs_{uuid.uuid4().hex[:8]}")
    accounts.publish("postgres", postgres_account.db.secret())
    accounts.publish("mysql", mysql_account.db.secret())
    # nx-27017 has no authentication: the secret has no user (a real MongoDB's would).
    accounts.publish("mongodb", {"user": "", "password": "", "database": accounts.mongo_db})
    return accounts


@pytest.fixture
def db_settings(
    vault_server: VaultTestServer, accounts: DatabaseAccounts, nx_mongo: NxMongoServer
) -> dict[str, Any]:
    """Settings of an app that reads its database credentials from Vault.

    The Vault cache is on (60 s, as in production): rotation must not wait for it.
    """
    return dict(
        vault_addr=vault_server.url,
        vault_token=vault_server.root_token,
        vault_mount=accounts.mount,
        vault_cache_ttl_seconds=60,
        postgres_host="127.0.0.1",
        postgres_port=5432,
        mysql_host="127.0.0.1",
        mysql_port=3306,
        mongodb_host="127.0.0.1",
        mongodb_port=nx_mongo.port,
        circuit_failure_threshold=50,
    )
