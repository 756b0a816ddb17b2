"""Dynamic PostgreSQL credentials from OpenBao's database engine, against a private
PostgreSQL that checks passwords (the machine's trusts every local login)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pymysql
import pytest

from quartstack.settings import SettingsError, load_settings
from tests.support.app import captured_json_logs, metric_value, running_app
from tests.support.databases import PrivatePostgres
from tests.support.leftovers import unique_name
from tests.support.polling import wait_until
from tests.support.vault import VaultTestServer

QUERY = "/examples/database/postgres/query"


@pytest.fixture(scope="module")
def scram_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().start()
    try:
        yield server
    finally:
        server.stop()


async def _lease_roles(pg: PrivatePostgres) -> set[str]:
    """Login roles the database engine created (its names start with ``v-``)."""
    connection = await asyncpg.connect(
        host="127.0.0.1", port=pg.port, user="postgres", password=pg.password, database="postgres"
    )
    try:
        rows = await connection.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%'")
    finally:
        await connection.close()
    return {row["rolname"] for row in rows}


def _settings(vault: VaultTestServer, pg: PrivatePostgres, role: str) -> dict[str, Any]:
    return dict(
        vault_addr=vault.url,
        vault_token=vault.dynamic_credentials_token(role),
        vault_timeout_seconds=2,
        postgres_host="127.0.0.1",
        postgres_port=pg.port,
        postgres_database="postgres",
        postgres_credentials="dynamic",
        postgres_vault_role=role,
        postgres_pool_min=2,
        circuit_failure_threshold=50,
    )


@pytest.fixture(scope="module")
def mysql_admin() -> Iterator[tuple[str, str]]:
    """An admin of our own on the machine's MariaDB for the database engine to act as."""
    user, password = unique_name(), "pw-" + uuid.uuid4().hex
    _mysql(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
        f"GRANT ALL ON *.* TO '{user}'@'%' WITH GRANT OPTION",
    )
    try:
        yield user, password
    finally:
        _mysql(f"DROP USER '{user}'@'%'")


def _mysql(*statements: str) -> list[tuple[Any, ...]]:
    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    try:
        rows: list[tuple[Any, ...]] = []
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
                rows = list(cursor.fetchall())
        return rows
    finally:
        connection.close()


class Engine:
    """One database behind Vault's database engine, as the rollover test needs it."""

    def __init__(self, backend: str, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self.request = request

    def setup(self, vault: VaultTestServer, role: str, ttl: int, max_ttl: int) -> dict[str, Any]:
        """Configure the engine; return the app's settings for this backend."""
        if self.backend == "postgres":
            pg: PrivatePostgres = self.request.getfixturevalue("scram_postgres")
            vault.enable_postgres_engine(
                port=pg.port, admin_password=pg.password, role=role, ttl=ttl, max_ttl=max_ttl
            )
            return _settings(vault, pg, role)
        admin, password = self.request.getfixturevalue("mysql_admin")
        vault.enable_mysql_engine(
            admin_user=admin, admin_password=password, role=role, ttl=ttl, max_ttl=max_ttl
        )
        return dict(
            vault_addr=vault.url,
            vault_token=vault.dynamic_credentials_token(role),
            vault_timeout_seconds=2,
            mysql_host="127.0.0.1",
            mysql_port=3306,
            mysql_database="test",
            mysql_credentials="dynamic",
            mysql_vault_role=role,
            mysql_pool_min=2,
            circuit_failure_threshold=50,
        )

    async def users(self, seen: set[str]) -> set[str]:
        """Database users the engine created that exist now: on the private PostgreSQL
        all of them; on the shared MariaDB (the engine names its users like the suite's
        own, ``qs_test_<epoch>_<hex>``, so a sweep finds an interrupted run's) those of
        ``seen``, the users this test's app was given."""
        if self.backend == "postgres":
            return await _lease_roles(self.request.getfixturevalue("scram_postgres"))
        rows = _mysql("SELECT user FROM mysql.user WHERE user LIKE 'qs\\_test\\_%'")
        return {str(row[0]) for row in rows} & seen


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_requests_stay_2xx_across_two_rollovers_and_leases_are_revoked(
    vault: VaultTestServer, backend: str, request: pytest.FixtureRequest
):
    engine = Engine(backend, request)
    role = f"qs-{uuid.uuid4().hex[:6]}"
    settings = engine.setup(vault, role, ttl=3, max_ttl=6)
    query = f"/examples/database/{backend}/query"

    def rotations() -> float:
        return metric_value("vault_lease_rotations_total", service=backend, result="rotated")

    rotated = rotations()
    renewed = metric_value("vault_lease_renewals_total", service=backend, result="renewed")
    statuses: list[int] = []
    with captured_json_logs() as logs:
        async with running_app(**settings) as (app, c):
            assert (await c.get("/health/startup")).status_code == 200
            vault.request_counts(reset=True)
            users: set[str] = set()

            async def worker() -> None:
                deadline = time.monotonic() + 40
                while rotations() < rotated + 2:
                    assert time.monotonic() < deadline, "fewer than two rollovers"
                    response = await c.get(query)
                    statuses.append(response.status_code)
                    keeper = app.extensions["quartstack.credentials"]._keepers[backend]
                    if keeper.current is not None:
                        users.add(keeper.current.user)
                    await asyncio.sleep(0.02)

            await asyncio.gather(*(worker() for _ in range(4)))
            users.add(app.extensions["quartstack.credentials"]._keepers[backend].current.user)
            seconds_left = metric_value("vault_lease_seconds_remaining", service=backend)
            assert 0 < seconds_left <= 3
            counts = vault.request_counts()
            # old leases are revoked once their pools closed (the last one just now)
            deadline = time.monotonic() + 10
            while len(live := await engine.users(users)) > 1:
                assert time.monotonic() < deadline, (live, users)
                await asyncio.sleep(0.1)
            current = app.extensions["quartstack.credentials"]._keepers[backend].current.user
            assert live == {current}, (live, users)
        gone = await engine.users(users)
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert len(users) >= 3
    assert gone == set()  # revoked on shutdown (the token was given: not revoked with it)
    assert counts.get("/v1/sys/leases/renew", 0) >= 2
    assert counts.get(f"/v1/database/creds/{role}", 0) >= 2
    renewals = metric_value("vault_lease_renewals_total", service=backend, result="renewed")
    assert renewals > renewed
    text = logs.getvalue()
    assert "dynamic credentials rotated" in text
    assert "dynamic credentials revoked" in text


async def test_vault_outage_shorter_than_the_lease_fails_no_request(
    vault: VaultTestServer, scram_postgres: PrivatePostgres
):
    """Vault unreachable across a renewal: the credentials in use stay, requests stay 2xx,
    and the renewal succeeds once Vault is back (no rotation was needed)."""
    role = f"qs-{uuid.uuid4().hex[:6]}"
    ttl = 8
    vault.enable_postgres_engine(
        port=scram_postgres.port,
        admin_password=scram_postgres.password,
        role=role,
        ttl=ttl,
        max_ttl=120,
    )
    failed = metric_value("vault_lease_renewals_total", service="postgres", result="failed")
    renewed = metric_value("vault_lease_renewals_total", service="postgres", result="renewed")
    rotated = metric_value("vault_lease_rotations_total", service="postgres", result="rotated")
    statuses: list[int] = []
    async with running_app(**_settings(vault, scram_postgres, role)) as (app, c):
        assert (await c.get(QUERY)).status_code == 200
        keeper = app.extensions["quartstack.credentials"]._keepers["postgres"]
        user = keeper.current.user
        vault.set_failure(503)  # whatever fronts Vault answers 503 (Vault unreachable)
        try:
            deadline = time.monotonic() + ttl
            while (
                metric_value("vault_lease_renewals_total", service="postgres", result="failed")
                == failed
            ):
                assert time.monotonic() < deadline, "no renewal was attempted during the outage"
                statuses.append((await c.get(QUERY)).status_code)
                await asyncio.sleep(0.05)
            assert keeper.current.seconds_left > 0
        finally:
            vault.set_failure(None)
        deadline = time.monotonic() + ttl
        while (
            metric_value("vault_lease_renewals_total", service="postgres", result="renewed")
            == renewed
        ):
            assert time.monotonic() < deadline, "no renewal after Vault came back"
            statuses.append((await c.get(QUERY)).status_code)
            await asyncio.sleep(0.05)
        assert keeper.current.user == user
    assert statuses and set(statuses) == {200}
    assert metric_value("vault_lease_rotations_total", service="postgres", result="rotated") == (
        rotated
    )


def test_dynamic_credentials_without_vault_are_a_settings_error():
    with pytest.raises(SettingsError, match="POSTGRES_CREDENTIALS=dynamic needs VAULT_ADDR"):
        load_settings(postgres_credentials="dynamic")
    with pytest.raises(SettingsError, match="MYSQL_CREDENTIALS"):
        load_settings(mysql_credentials="vault")
    assert load_settings(mysql_credentials="dynamic", vault_addr="http://v").mysql_credentials


async def test_a_new_vault_login_moves_to_credentials_of_the_new_token(
    vault: VaultTestServer, scram_postgres: PrivatePostgres, tmp_path
):
    """Vault revokes a token's leases when the token ends: after each re-login (AppRole
    token at its max TTL) the pool moves to credentials issued under the new token."""
    role = f"qs-{uuid.uuid4().hex[:6]}"
    vault.enable_postgres_engine(
        port=scram_postgres.port,
        admin_password=scram_postgres.password,
        role=role,
        ttl=60,
        max_ttl=600,
    )
    role_dir = vault.approle_dir(
        tmp_path / "approle",
        f"app-{uuid.uuid4().hex[:8]}",
        token_ttl=3,
        token_max_ttl=5,
        token_policies=[vault.dynamic_credentials_policy(role)],
    )
    settings = _settings(vault, scram_postgres, role)
    del settings["vault_token"]
    settings["vault_approle_dir"] = str(role_dir)

    def rotations() -> float:
        return metric_value("vault_lease_rotations_total", service="postgres", result="rotated")

    rotated = rotations()
    statuses: list[int] = []
    async with running_app(**settings) as (app, c):
        keeper = app.extensions["quartstack.credentials"]._keepers
        deadline = time.monotonic() + 30
        while rotations() < rotated + 2:
            assert time.monotonic() < deadline, "no rotation after the re-logins"
            statuses.append((await c.get(QUERY)).status_code)
            await asyncio.sleep(0.05)
        assert keeper["postgres"].current.generation == app.extensions["vault"].generation
        for _ in range(20):  # and the new credentials work
            statuses.append((await c.get(QUERY)).status_code)

        async def only_the_current_lease() -> bool:  # the old one goes once its pool closed
            return len(await _lease_roles(scram_postgres)) == 1

        await wait_until(only_the_current_lease, interval=0.1, what="the old lease's revocation")
    assert set(statuses) == {200}, sorted(set(statuses))
    assert await _lease_roles(scram_postgres) == set()


MANAGEMENT = "http://127.0.0.1:15672"


@pytest.fixture(scope="module")
def rabbitmq_management() -> Iterator[str]:
    """The broker's management API, which Vault's rabbitmq engine needs. Enabling a
    plugin is machine-wide: the plugin is disabled again if it was off before."""
    enabled = subprocess.run(
        ["rabbitmq-plugins", "list", "-E", "-m"], capture_output=True, text=True, check=True
    ).stdout.split()
    was_on = "rabbitmq_management" in enabled
    if not was_on:
        subprocess.run(["rabbitmq-plugins", "enable", "rabbitmq_management"], check=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(MANAGEMENT + "/api/overview", auth=BROKER_ADMIN).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the management API did not come up"
            time.sleep(0.2)
        yield MANAGEMENT
    finally:
        if not was_on:
            subprocess.run(["rabbitmq-plugins", "disable", "rabbitmq_management"], check=True)


BROKER_ADMIN = ("guest", "guest")


def _broker_users(seen: set[str]) -> set[str]:
    """The users of ``seen`` that exist on the broker now (the engine names its users
    like the suite's own, ``qs-test-<epoch>-<hex>``; other tests create such users)."""
    response = httpx.get(MANAGEMENT + "/api/users", auth=BROKER_ADMIN)
    response.raise_for_status()
    return {user["name"] for user in response.json()} & seen


async def test_rabbitmq_publishes_stay_2xx_across_two_rollovers_and_users_are_revoked(
    vault: VaultTestServer, rabbitmq_management: str
):
    role = f"qs-{uuid.uuid4().hex[:6]}"
    vault.enable_rabbitmq_engine(
        management_url=rabbitmq_management,
        admin_user=BROKER_ADMIN[0],
        admin_password=BROKER_ADMIN[1],
        role=role,
        # Rotation starts when a renewal can no longer give a full TTL: with 6/12 s that is
        # about 4 s before the old user's deletion, room for a new connection and the
        # drain of the publishes in flight even on a slow, loaded host (3/6 s left 2 s,
        # and one CI run saw a publish on the old connection when the broker dropped it).
        ttl=6,
        max_ttl=12,
    )
    queue = f"qs-dyn-{uuid.uuid4().hex[:8]}"
    settings = dict(
        vault_addr=vault.url,
        vault_token=vault.dynamic_credentials_token(role, mount="rabbitmq"),
        vault_timeout_seconds=2,
        rabbitmq_host="127.0.0.1",
        rabbitmq_port=5672,
        rabbitmq_credentials="dynamic",
        rabbitmq_vault_role=role,
        circuit_failure_threshold=50,
    )

    def rotations() -> float:
        return metric_value("vault_lease_rotations_total", service="rabbitmq", result="rotated")

    rotated = rotations()
    statuses: list[int] = []
    users: set[str] = set()
    try:
        async with running_app(**settings) as (app, c):
            keeper = app.extensions["quartstack.credentials"]

            async def worker() -> None:
                deadline = time.monotonic() + 60
                while rotations() < rotated + 2:
                    assert time.monotonic() < deadline, "fewer than two rollovers"
                    response = await c.post(
                        f"/examples/messaging/publish?queue_name={queue}", json={"n": 1}
                    )
                    statuses.append(response.status_code)
                    current = keeper._keepers["rabbitmq"].current
                    if current is not None:
                        users.add(current.user)
                    await asyncio.sleep(0)

            await asyncio.gather(*(worker() for _ in range(12)))
            users.add(keeper._keepers["rabbitmq"].current.user)
            deadline = time.monotonic() + 10
            while len(live := _broker_users(users)) > 1:
                assert time.monotonic() < deadline, (live, users)
                await asyncio.sleep(0.1)
            assert live == {keeper._keepers["rabbitmq"].current.user}, (live, users)
        assert _broker_users(users) == set()  # revoked on shutdown
        # named so that the broker suite's sweep removes what an interrupted run left
        assert all(re.fullmatch(r"qs-test-\d{10}-[0-9a-f]{8}", user) for user in users), users
    finally:
        httpx.delete(f"{MANAGEMENT}/api/queues/%2F/{queue}", auth=BROKER_ADMIN)
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert len(users) >= 3
