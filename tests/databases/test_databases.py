"""PostgreSQL, MySQL (MariaDB) and MongoDB (nx-27017) through the app, against real servers."""

from __future__ import annotations

import asyncio
import time

from tests.support.app import captured_json_logs, metric_value, running_app
from tests.support.databases import PostgresDatabase
from tests.support.net import HangingServer, free_port
from tests.support.vault import VaultTestServer

PROBLEM = "application/problem+json"


async def test_example_queries_and_health(settings, postgres_db, mysql_db):
    async with running_app(**settings) as (_, c):
        pg = await (await c.get("/examples/database/postgres/query")).get_json()
        assert pg["database"] == "PostgreSQL" and pg["query"] == "SELECT current_timestamp"
        assert pg["result"].startswith("20")
        my = await (await c.get("/examples/database/mysql/query")).get_json()
        assert my["database"] == "MySQL" and my["query"] == "SELECT NOW()"
        assert my["result"].startswith("20")
        mongo = await (await c.get("/examples/database/mongodb/query")).get_json()
        assert mongo == {"database": "MongoDB", "collections": [], "count": 0}
        for name, prefix in [("postgres", "15"), ("mysql", "10.11"), ("mongodb", "7.0")]:
            health = await c.get(f"/health/{name}")
            assert health.status_code == 200
            body = await health.get_json()
            assert body["status"] == "healthy" and body["version"].startswith(prefix)
        assert postgres_db.connection_count() >= 1  # the pool logged in as the Vault user
        assert mysql_db.connection_ids()
        assert metric_value("backend_pool_connections", service="postgres", state="max") == 10


async def test_mongodb_lists_created_collections(settings, mongo):
    from pymongo import AsyncMongoClient

    direct: AsyncMongoClient = AsyncMongoClient("127.0.0.1", mongo.port)
    await direct["qs_test"]["orders"].insert_one({"n": 1})
    await direct["qs_test"]["users"].insert_one({"n": 1})
    async with running_app(**settings) as (_, c):
        body = await (await c.get("/examples/database/mongodb/query")).get_json()
        assert body == {"database": "MongoDB", "collections": ["orders", "users"], "count": 2}
    await direct.drop_database("qs_test")
    await direct.close()


async def test_unreachable_database_is_503_and_opens_circuit(settings):
    unreachable = dict(
        settings,
        postgres_port=free_port(),
        circuit_failure_threshold=3,
        circuit_recovery_seconds=60,
        backend_timeout_seconds=2,
    )
    async with running_app(**unreachable) as (_, c):
        kinds = []
        for _ in range(5):
            started = time.monotonic()
            response = await c.get("/examples/database/postgres/query")
            assert time.monotonic() - started < 6  # bounded by the timeout, never a hang
            assert response.status_code == 503
            assert response.content_type == PROBLEM
            assert response.headers["Retry-After"]
            kinds.append((await response.get_json())["type"])
        assert kinds[0] == "/problems/backend-unavailable"
        assert kinds[-1] == "/problems/circuit-open"
        assert metric_value("circuit_breaker_state", service="postgres") == 2
        assert (await c.get("/health/")).status_code == 200
        assert (await c.get("/examples/database/mysql/query")).status_code == 200
        assert (await c.get("/examples/database/mongodb/query")).status_code == 200
        assert (await c.get("/health/postgres")).status_code == 503


async def test_hanging_database_is_504(settings):
    with HangingServer() as hanging:
        for name in ("postgres", "mysql"):
            hung = dict(settings, backend_timeout_seconds=1, **{f"{name}_port": hanging.port})
            async with running_app(**hung) as (_, c):
                started = time.monotonic()
                response = await c.get(f"/examples/database/{name}/query")
                assert time.monotonic() - started < 5
                assert response.status_code == 504, name
                assert response.content_type == PROBLEM
                assert (await response.get_json())["type"] == "/problems/backend-timeout"
                assert (await c.get("/health/")).status_code == 200


async def test_database_down_at_startup_connects_later(settings, postgres_db):
    from tests.support.net import TcpProxy

    with TcpProxy(5432) as proxy:
        proxy.set_mode("refuse")
        async with running_app(**dict(settings, postgres_port=proxy.port)) as (_, c):
            assert (await c.get("/health/startup")).status_code == 200
            assert (await c.get("/examples/database/postgres/query")).status_code == 503
            proxy.set_mode("pass")
            assert (await c.get("/examples/database/postgres/query")).status_code == 200


async def test_mysql_password_rotation_rebuilds_pool_once(settings, mysql_db, db_vault):
    old = mysql_db.db.password
    with captured_json_logs() as logs:
        async with running_app(**settings) as (_, c):
            assert (await c.get("/examples/database/mysql/query")).status_code == 200
            mysql_db.change_password("rotated-" + old)
            db_vault.write_secret("mysql", mysql_db.db.secret())
            mysql_db.terminate_connections()
            statuses = [
                (await c.get("/examples/database/mysql/query")).status_code for _ in range(5)
            ]
            assert statuses == [200] * 5
    text = logs.getvalue()
    assert text.count("pool rebuilt with fresh credentials") == 1
    assert old not in text and mysql_db.db.password not in text


async def test_postgres_password_rotation_with_scram(private_postgres):
    database = PostgresDatabase(
        port=private_postgres.port, admin_password=private_postgres.password
    )
    database.create()
    with VaultTestServer() as vault:
        vault.write_secret("postgres", database.db.secret())
        settings = dict(
            vault_addr=vault.url,
            vault_token=vault.root_token,
            postgres_host="127.0.0.1",
            postgres_port=private_postgres.port,
            vault_cache_ttl_seconds=60,
        )
        with captured_json_logs() as logs:
            async with running_app(**settings) as (_, c):
                assert (await c.get("/examples/database/postgres/query")).status_code == 200
                old = database.db.password
                database.change_password("rotated-" + old)
                vault.write_secret("postgres", database.db.secret())
                database.terminate_connections()
                results = await asyncio.gather(
                    *(c.get("/examples/database/postgres/query") for _ in range(20))
                )
                assert [r.status_code for r in results] == [200] * 20
        text = logs.getvalue()
        assert text.count("pool rebuilt with fresh credentials") == 1
        assert old not in text and database.db.password not in text


async def test_200_concurrent_requests_stay_within_pool(settings, postgres_db, mysql_db):
    bounded = dict(settings, postgres_pool_max=5, mysql_pool_max=5, rate_limit_enabled=False)
    async with running_app(**bounded) as (_, c):
        for name, database in (("postgres", postgres_db), ("mysql", mysql_db)):
            peak = 0

            async def watch(database=database) -> None:
                nonlocal peak
                while True:
                    count = await asyncio.to_thread(
                        lambda: (
                            database.connection_count()
                            if hasattr(database, "connection_count")
                            else len(database.connection_ids())
                        )
                    )
                    peak = max(peak, count)
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch())
            responses = await asyncio.gather(
                *(c.get(f"/examples/database/{name}/query") for _ in range(200))
            )
            watcher.cancel()
            assert [r.status_code for r in responses] == [200] * 200, name
            assert 1 <= peak <= 5, (name, peak)
            in_use = metric_value("backend_pool_connections", service=name, state="in_use")
            assert in_use == 0
