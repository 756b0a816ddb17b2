"""The example queries, health checks and pool metrics, against the real servers,
with credentials from the Vault test server."""

from __future__ import annotations

import asyncio
from datetime import datetime

from pymongo import AsyncMongoClient

from quartstack.integrations.postgres import PostgresPool
from tests.databases.helpers import QUERY
from tests.support.app import metric_value, running_app


async def test_postgres_query_runs_over_the_pool_as_the_vault_user(
    db_settings, postgres_account
):
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
            "SELECT db FROM information_schema.processlist WHERE user = "
            f"'{mysql_account.db.user}'"
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
    pg_version = postgres_account.sql("SHOW server_version")
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


async def test_pool_gauges_are_current_at_scrape_time(db_settings):
    settings = dict(db_settings, postgres_pool_max=7, mysql_pool_max=6, mongodb_pool_max=5)
    async with running_app(**settings) as (app, client):
        for name in ("postgres", "mysql", "mongodb"):
            assert (await client.get(QUERY.format(name))).status_code == 200
        for name, maximum in (("postgres", 7), ("mysql", 6), ("mongodb", 5)):
            assert metric_value("backend_pool_connections", service=name, state="max") == maximum
            assert metric_value("backend_pool_connections", service=name, state="in_use") == 0
            assert metric_value("backend_pool_connections", service=name, state="idle") >= 1

        postgres: PostgresPool = app.extensions["postgres"]
        slow = asyncio.create_task(postgres.fetchval("slow", "SELECT pg_sleep(0.5)::text"))
        seen = 0.0
        while not slow.done() and seen == 0:
            # /metrics is what Prometheus reads: the gauge must show the borrowed connection.
            text = await (await client.get("/metrics")).get_data(as_text=True)
            seen = max(
                (
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith('backend_pool_connections{service="postgres",state="in_use"}')
                ),
                default=0.0,
            )
            await asyncio.sleep(0.01)
        await slow
        assert seen == 1
        assert metric_value("backend_pool_connections", service="postgres", state="in_use") == 0


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
