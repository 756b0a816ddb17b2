from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import (
    Database,
    MongoStandIn,
    MySQLDatabase,
    PostgresDatabase,
    PrivatePostgres,
)
from tests.support.vault import VaultTestServer


@pytest.fixture(scope="module")
def db_vault() -> Iterator[VaultTestServer]:
    """A Vault stand-in of this module's own: tests here rotate the database secrets."""
    with VaultTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def postgres_db(db_vault) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase()
    database.create()
    db_vault.write_secret("postgres", database.db.secret())
    yield database
    database.drop()


@pytest.fixture(scope="module")
def mysql_db(db_vault) -> Iterator[MySQLDatabase]:
    database = MySQLDatabase()
    database.create()
    db_vault.write_secret("mysql", database.db.secret())
    yield database
    database.drop()


@pytest.fixture(scope="module")
def mongo(db_vault) -> Iterator[MongoStandIn]:
    server = MongoStandIn().start()
    # nx-27017 has no SCRAM: the Vault secret carries no user (a real MongoDB would).
    db_vault.write_secret("mongodb", {"user": "", "password": "", "database": "qs_test"})
    yield server
    server.stop()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().start()
    yield server
    server.stop()


@pytest.fixture
def settings(db_vault, postgres_db, mysql_db, mongo) -> dict[str, object]:
    return dict(
        vault_addr=db_vault.url,
        vault_token=db_vault.root_token,
        postgres_host="127.0.0.1",
        mysql_host="127.0.0.1",
        mongodb_host="127.0.0.1",
        mongodb_port=mongo.port,
        vault_cache_ttl_seconds=0,
    )


__all__ = ["Database"]
