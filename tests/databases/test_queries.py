"""The example queries, health checks and pool metrics, against the real servers,
with credentials from the session OpenBao."""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg
from pymongo import AsyncMongoClient

from quartstack.integrations.postgres import PostgresPool
from tests.databases.helpers import QUERY
from tests.support.app import metric_value, running_app
from tests.support.polling import wait_until


async def test_postgres_query_runs_over_the_pool_as_the_vault_user(db_settings, postgres_account):
    async with running_app(**db_settings) as (_, client):
        response = await client.get(QUERY.format("postgres"))
        assert response.status_code == 200
        body = await response.get_json()
        assert set(body) == {"database", "query", "result"}
        assert body["database"] == "PostgreSQL"
        assert body["query"] == "SELECT current_timestamp"
        assert datetime.fromisoformat(body["result"]).tzinfo is not None
        # Server side: the pool's sessions are the Vault user's, in its own database.
        sessions = postgres_account.sql(
            "SELECT usename || ' ' || datname FROM pg_stat_activity "
            "WHERE application_name = 'quartstack' AND usename = "
            f"'{postgres_account.db.user}'"
        )
        assert f"{postgres_account.db.user} {postgres_account.db.database}" in sessions


async def test_mysql_query_runs_over_the_pool_as_the_vault_user(db_settings, mysql_account):
    async with running_app(**db_settings) as (_, client):
        response = await client.get(QUERY.format("mysql"))
        assert response.status_code == 200
        body = await response.get_json()
        assert set(body) == {"database", "query", "result"}
        assert body["database"] == "MySQL"
        assert body["query"] == "SELECT NOW()"
        datetime.fromisoformat(body["result"])
        rows = mysql_account.sql(
            f"SELECT db FROM information_schema.processlist WHERE user = '{mysql_account.db.user}'"
        )
        assert (mysql_account.db.database,) in rows


async def test_mongodb_query_lists_the_collections_of_the_vault_database(
    db_settings, accounts, nx_mongo
):
    direct: AsyncMongoClient[dict[str, object]] = AsyncMongoClient("127.0.0.1", nx_mongo.port)
    try:
        async with running_app(**db_settings) as (_, client):
            empty = await client.get(QUERY.format("mongodb"))
            assert empty.status_code == 200
            assert await empty.get_json() == {
                "database": "MongoDB",
                "collections": [],
                "count": 0,
            }
            await direct[accounts.mongo_db]["users"].insert_one({"n": 1})
            await direct[accounts.mongo_db]["orders"].insert_one({"n": 1})
            await direct["some_other_db"]["elsewhere"].insert_one({"n": 1})
            body = await (await client.get(QUERY.format("mongodb"))).get_json()
            assert body == {"database": "MongoDB", "collections": ["orders", "users"], "count": 2}
    finally:
        await direct.drop_database(accounts.mongo_db)
        await direct.drop_database("some_other_db")
        await direct.close()


async def test_mongodb_logs_in_with_the_vault_credentials_when_they_have_a_user(
    db_settings, accounts, mongo_front
):
    accounts.publish(
        "mongodb",
        {"user": mongo_front.user, "password": mongo_front.password, "database": "qs_auth"},
    )
    settings = dict(db_settings, mongodb_port=mongo_front.port)
    async with running_app(**settings) as (_, client):
        response = await client.get(QUERY.format("mongodb"))
        assert response.status_code == 200
        assert (await response.get_json())["database"] == "MongoDB"
        health = await client.get("/health/mongodb")
        assert health.status_code == 200
    assert mongo_front.authenticated_peak >= 1  # the server saw a SCRAM login
    assert mongo_front.failed_logins == 0


async def test_health_reports_each_server_version(db_settings, postgres_account, mysql_account):
    pg_version = postgres_account.sql("SELECT version()")  # the full string
    my_version = str(mysql_account.sql("SELECT VERSION()")[0][0])
    async with running_app(**db_settings) as (_, client):
        for name, version in (("postgres", pg_version), ("mysql", my_version)):
            response = await client.get(f"/health/{name}")
            assert response.status_code == 200
            body = await response.get_json()
            assert (body["status"], body["version"]) == ("healthy", version)
        mongo = await client.get("/health/mongodb")
        assert mongo.status_code == 200
        body = await mongo.get_json()
        assert (body["status"], body["version"]) == ("healthy", "7.0.0")  # nx-27017's
        everything = await (await client.get("/health/all")).get_json()
        for name in ("postgres", "mysql", "mongodb"):
            assert everything["services"][name]["status"] == "healthy"


async def test_pool_gauges_are_current_at_scrape_time(db_settings, postgres_account):
    settings = dict(db_settings, postgres_pool_max=7, mysql_pool_max=6, mongodb_pool_max=5)
    async with running_app(**settings) as (app, client):
        for name in ("postgres", "mysql", "mongodb"):
            assert (await client.get(QUERY.format(name))).status_code == 200
        for name, maximum in (("postgres", 7), ("mysql", 6), ("mongodb", 5)):
            assert metric_value("backend_pool_connections", service=name, state="max") == maximum
            assert metric_value("backend_pool_connections", service=name, state="in_use") == 0
            assert metric_value("backend_pool_connections", service=name, state="idle") >= 1

        # A query waiting for a lock our own session holds borrows one connection for as
        # long as we like; /metrics (what Prometheus reads) must show it, then not.
        postgres: PostgresPool = app.extensions["postgres"]
        db = postgres_account.db
        holder = await asyncpg.connect(
            host="127.0.0.1", port=db.port, user="postgres", database=db.database
        )
        try:
            await holder.execute("SELECT pg_advisory_lock(77)")
            waiting = asyncio.create_task(
                postgres.scalar("wait", "SELECT 'got it' FROM (SELECT pg_advisory_xact_lock(77)) l")
            )
            await wait_until(
                lambda: _scraped_is(client, "postgres", "in_use", 1),
                what="/metrics showing the borrowed connection",
            )
        finally:
            await holder.close()  # ends our session, and its lock
        assert await waiting == "got it"
        assert await scraped(client, "postgres", "in_use") == 0


async def _scraped_is(client, service: str, state: str, value: float) -> bool:
    return await scraped(client, service, state) == value


async def scraped(client, service: str, state: str) -> float:
    """One ``backend_pool_connections`` sample as ``/metrics`` shows it."""
    text = await (await client.get("/metrics")).get_data(as_text=True)
    prefix = f'backend_pool_connections{{service="{service}",state="{state}"}} '
    values = [float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)]
    assert len(values) == 1, values
    return values[0]


async def test_environment_credentials_work_without_vault(postgres_account, mysql_account):
    """Local development: no VAULT_ADDR, credentials from POSTGRES_* / MYSQL_*."""
    pg, my = postgres_account.db, mysql_account.db
    settings = dict(
        postgres_host="127.0.0.1",
        postgres_user=pg.user,
        postgres_password=pg.password,
        postgres_database=pg.database,
        mysql_host="127.0.0.1",
        mysql_user=my.user,
        mysql_password=my.password,
        mysql_database=my.database,
    )
    async with running_app(**settings) as (_, client):
        for name in ("postgres", "mysql"):
            assert (await client.get(QUERY.format(name))).status_code == 200
        assert postgres_account.connection_count() >= 1
        assert mysql_account.connection_ids()


async def test_openapi_documents_the_database_routes(db_settings):
    async with running_app(**db_settings) as (_, client):
        document = await (await client.get("/openapi.json")).get_json()
    for name in ("postgres", "mysql", "mongodb"):
        responses = document["paths"][QUERY.format(name)]["get"]["responses"]
        assert {"200", "503", "504"} <= set(responses)
        assert "ProblemDetails" in str(responses["503"]) and "ProblemDetails" in str(
            responses["504"]
        )


async def test_every_query_is_measured(db_settings):
    async with running_app(**db_settings) as (_, client):
        for name, operation in (
            ("postgres", "query"),
            ("mysql", "query"),
            ("mongodb", "list_collections"),
        ):
            before = metric_value(
                "backend_call_duration_seconds_count", service=name, operation=operation
            )
            for _ in range(3):
                assert (await client.get(QUERY.format(name))).status_code == 200
            after = metric_value(
                "backend_call_duration_seconds_count", service=name, operation=operation
            )
            assert after == before + 3, name


async def test_pools_close_when_the_app_stops(
    db_settings, accounts, postgres_account, mysql_account, mongo_front
):
    accounts.publish(
        "mongodb", {"user": mongo_front.user, "password": mongo_front.password, "database": "qs"}
    )
    settings = dict(db_settings, mongodb_port=mongo_front.port)
    async with running_app(**settings) as (_, client):
        for name in ("postgres", "mysql", "mongodb"):
            assert (await client.get(QUERY.format(name))).status_code == 200
        assert postgres_account.connection_count() >= 1
        assert mysql_account.connection_ids()
        assert mongo_front.authenticated_now >= 1
    await wait_until(  # the servers notice the closed sockets
        lambda: (
            not (
                postgres_account.connection_count()
                or mysql_account.connection_ids()
                or mongo_front.authenticated_now
            )
        ),
        interval=0.05,
        what="every server seeing the pools closed",
    )
