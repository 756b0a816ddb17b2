"""Credential rotation: the password changes in the database and in Vault, and the
service follows with one pool rebuild, no failed request and no circuit trip.

The machine's PostgreSQL trusts every login, so PostgreSQL rotation runs against a
private SCRAM cluster; MongoDB's against nx-27017 behind the SCRAM front. The
Vault cache TTL is 60 s throughout: the rebuild must read past it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg
import pymysql
import pytest

from tests.databases.helpers import QUERY, assert_problem, log_messages
from tests.support.app import captured_json_logs, metric_value, running_app
from tests.support.polling import wait_until


@dataclass
class RotatingAccount:
    """One database account whose password a test changes, wherever it lives."""

    name: str
    settings: dict[str, Any]
    secret: dict[str, str]
    server: Any

    def change_server_password(self) -> str:
        new = "rotated-" + secrets.token_hex(12)
        if self.name == "mongodb":
            self.server.set_password(new)
        else:
            self.server.change_password(new)
        return new

    def cut_connections(self) -> None:
        """Make the pool need new logins (as after a database restart)."""
        if self.name == "mongodb":
            self.server.close_connections()
        else:
            self.server.terminate_connections()


@pytest.fixture(params=["postgres", "mysql", "mongodb"])
def rotating(request, db_settings, accounts) -> RotatingAccount:
    name = request.param
    if name == "postgres":
        account = request.getfixturevalue("scram_postgres_account")
        secret = account.db.secret()
        settings = dict(db_settings, postgres_port=account.db.port)
        server: Any = account
    elif name == "mysql":
        server = request.getfixturevalue("mysql_account")
        secret, settings = server.db.secret(), dict(db_settings)
    else:
        server = request.getfixturevalue("mongo_front")
        secret = {"user": server.user, "password": server.password, "database": "qs_rotation"}
        settings = dict(db_settings, mongodb_port=server.port)
    accounts.publish(name, secret)
    # One failure would open the circuit: a rotation must not cost a single one.
    settings.update(circuit_failure_threshold=1, circuit_recovery_seconds=60)
    return RotatingAccount(name, settings, secret, server)


async def test_rotated_password_rebuilds_the_pool_once_and_no_request_fails(
    rotating, accounts, caplog
):
    name, path = rotating.name, QUERY.format(rotating.name)
    caplog.set_level(logging.DEBUG)
    with captured_json_logs() as logs:
        async with running_app(**rotating.settings) as (_, client):
            assert (await client.get(path)).status_code == 200
            failures = metric_value("circuit_breaker_failures_total", service=name)
            old = rotating.secret["password"]
            new = rotating.change_server_password()
            accounts.publish(name, dict(rotating.secret, password=new))
            rotating.cut_connections()

            responses = await asyncio.gather(*(client.get(path) for _ in range(20)))
            assert [r.status_code for r in responses] == [200] * 20
            assert (await client.get(f"/health/{name}")).status_code == 200
            assert metric_value("circuit_breaker_failures_total", service=name) == failures
            assert metric_value("circuit_breaker_state", service=name) == 0
            bodies = [await r.get_data(as_text=True) for r in responses]
    messages = log_messages(logs.getvalue(), name)
    assert messages.count("pool rebuilt with fresh credentials") == 1
    for secret in (old, new):
        for text in [*bodies, logs.getvalue(), caplog.text]:
            assert secret not in text


async def test_password_changed_before_vault_is_updated_recovers_without_a_restart(
    rotating, accounts
):
    """The database already has the new password, Vault not yet: 503 (never 500),
    then the next request after Vault is updated succeeds."""
    name, path = rotating.name, QUERY.format(rotating.name)
    settings = dict(rotating.settings, circuit_failure_threshold=50)
    async with running_app(**settings) as (_, client):
        assert (await client.get(path)).status_code == 200
        new = rotating.change_server_password()
        rotating.cut_connections()
        await assert_problem(await client.get(path), 503, "backend-unavailable", path)
        accounts.publish(name, dict(rotating.secret, password=new))
        assert (await client.get(path)).status_code == 200


class DatabaseLock:
    """A lock held by the test's own admin session, so that an app query waiting for
    it stays in flight exactly as long as the test wants."""

    def __init__(self, name: str, account: Any) -> None:
        self.name = name
        self.account = account
        self._pg: Any = None
        self._mysql: Any = None
        self._mysql_lock = f"qs-{secrets.token_hex(8)}"  # MySQL lock names are server-wide

    @property
    def waiting_query(self) -> str:
        """Waits for the lock, then answers its own session id."""
        if self.name == "postgres":
            return "SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock(4242)) AS wait"
        # GET_LOCK gives up after its timeout: far beyond what the test holds it for.
        return f"SELECT CONNECTION_ID() FROM (SELECT GET_LOCK('{self._mysql_lock}', 600)) AS wait"

    async def acquire(self) -> None:
        db = self.account.db
        if self.name == "postgres":
            self._pg = await asyncpg.connect(
                host="127.0.0.1",
                port=db.port,
                user="postgres",
                password=self.account.admin_password,
                database=db.database,  # advisory locks are per database
            )
            await self._pg.execute("SELECT pg_advisory_lock(4242)")
        else:
            self._mysql = pymysql.connect(host="127.0.0.1", port=db.port, user="root")
            with self._mysql.cursor() as cursor:
                cursor.execute("SELECT GET_LOCK(%s, 5)", (self._mysql_lock,))

    async def release(self) -> None:
        """End the admin session, and with it the lock."""
        pg, self._pg = self._pg, None
        mysql, self._mysql = self._mysql, None
        if pg is not None:
            await pg.close()
        if mysql is not None:
            mysql.close()

    def session_alive(self, session_id: int) -> bool:
        if self.name == "postgres":
            found = self.account.sql(
                f"SELECT count(*) FROM pg_stat_activity WHERE pid = {session_id}"
            )
            return found != "0"
        rows = self.account.sql(
            f"SELECT id FROM information_schema.processlist WHERE id = {session_id}"
        )
        return bool(rows)


@pytest.mark.parametrize("name", ["postgres", "mysql"])
async def test_requests_in_flight_on_the_old_pool_finish_then_it_closes(
    request, db_settings, accounts, name
):
    if name == "postgres":
        account = request.getfixturevalue("scram_postgres_account")
        settings = dict(db_settings, postgres_port=account.db.port)
    else:
        account = request.getfixturevalue("mysql_account")
        settings = dict(db_settings)
    accounts.publish(name, account.db.secret())
    settings.update({f"{name}_pool_min": 1, "circuit_failure_threshold": 1})
    path = QUERY.format(name)
    lock = DatabaseLock(name, account)
    await lock.acquire()
    try:
        with captured_json_logs() as logs:
            async with running_app(**settings) as (app, client):
                backend = app.extensions[name]
                read = backend.scalar
                in_flight = asyncio.create_task(read("wait_for_lock", lock.waiting_query))

                def holds_a_connection() -> bool:  # of the old pool
                    assert not in_flight.done(), in_flight.result()
                    return backend.pool_sizes()[0] > 0

                await wait_until(holds_a_connection, interval=0.005, what="the query in flight")

                account.change_password("rotated-" + secrets.token_hex(12))
                accounts.publish(name, account.db.secret())
                # The old pool has no free connection: these need new logins, are
                # refused, and are served by the rebuilt pool.
                responses = await asyncio.gather(*(client.get(path) for _ in range(5)))
                assert [r.status_code for r in responses] == [200] * 5
                assert not in_flight.done()  # still waiting for the lock, on the old pool

                await lock.release()
                old_session = int(await in_flight)  # it finished normally
                await wait_until(  # then the old pool closes its connection
                    lambda: asyncio.to_thread(lambda: not lock.session_alive(old_session)),
                    interval=0.05,
                    what="the old pool closing its connection",
                )
                assert (await client.get(path)).status_code == 200
    finally:
        await lock.release()
    assert log_messages(logs.getvalue(), name).count("pool rebuilt with fresh credentials") == 1
