"""Databases that are unreachable, hung, down at startup or refusing our credentials:
503/504 problems, the circuit breaker, and nothing leaked. Faults come from our own
listeners and proxies, never from breaking the shared servers."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from tests.databases.helpers import DATABASES, QUERY, assert_problem, log_messages
from tests.support.app import captured_json_logs, metric_value, running_app
from tests.support.net import HangingServer, TcpProxy, free_port

SERVER_PORTS = {"postgres": 5432, "mysql": 3306}


def _other(name: str) -> list[str]:
    return [other for other in DATABASES if other != name]


@pytest.mark.parametrize("name", DATABASES)
async def test_unreachable_database_is_503_then_its_circuit_opens(db_settings, name):
    threshold = 3
    settings = dict(
        db_settings,
        circuit_failure_threshold=threshold,
        circuit_recovery_seconds=60,
        backend_timeout_seconds=2,
        **{f"{name}_port": free_port()},  # nothing listens there
    )
    path = QUERY.format(name)
    async with running_app(**settings) as (_, client):
        opened_before = metric_value("circuit_breaker_opened_total", service=name)
        kinds = []
        for _ in range(threshold + 2):
            async with asyncio.timeout(10):  # bounded by the backend timeout, never a hang
                response = await client.get(path)
            kind = (await response.get_json())["type"].rsplit("/", 1)[1]
            body = await assert_problem(response, 503, kind, path)
            assert int(response.headers["Retry-After"]) >= 1
            assert name in body["detail"]
            kinds.append(kind)
        assert kinds[0] == "backend-unavailable"
        first_open = kinds.index("circuit-open")
        assert first_open <= threshold
        assert set(kinds[first_open:]) == {"circuit-open"}
        assert metric_value("circuit_breaker_state", service=name) == 2
        assert metric_value("circuit_breaker_opened_total", service=name) == opened_before + 1

        # The rest of the service does not care.
        assert (await client.get("/health/")).status_code == 200
        for other in _other(name):
            assert (await client.get(QUERY.format(other))).status_code == 200, other
        health = await client.get(f"/health/{name}")
        assert health.status_code == 503
        health_body = await health.get_json()
        assert health_body["status"] == "unhealthy" and health_body["error"]


@pytest.mark.parametrize("name", DATABASES)
async def test_hanging_database_is_504_within_the_timeout(db_settings, name):
    with HangingServer() as hanging:
        settings = dict(db_settings, backend_timeout_seconds=1, **{f"{name}_port": hanging.port})
        path = QUERY.format(name)
        async with running_app(**settings) as (_, client):
            async with asyncio.timeout(10):
                response, process_health = await asyncio.gather(
                    client.get(path), client.get("/health/")
                )
            body = await assert_problem(response, 504, "backend-timeout", path)
            assert body["detail"] == f"{name} did not answer within 1 s"
            assert process_health.status_code == 200
            for other in _other(name):
                assert (await client.get(QUERY.format(other))).status_code == 200, other
            health = await client.get(f"/health/{name}")
            assert health.status_code == 503
            assert (await health.get_json())["status"] == "unhealthy"


@pytest.mark.parametrize("name", DATABASES)
async def test_database_down_at_startup_is_connected_on_first_use(db_settings, nx_mongo, name):
    target = SERVER_PORTS.get(name, nx_mongo.port)
    with TcpProxy(target) as proxy:
        proxy.set_mode("refuse")
        settings = dict(db_settings, backend_timeout_seconds=2, **{f"{name}_port": proxy.port})
        path = QUERY.format(name)
        with captured_json_logs() as logs:
            async with running_app(**settings) as (_, client):
                startup = await client.get("/health/startup")
                assert startup.status_code == 200  # the service started anyway
                await assert_problem(await client.get(path), 503, "backend-unavailable", path)
                proxy.set_mode("pass")
                # Many first requests at once: one of them creates the pool, once.
                responses = await asyncio.gather(*(client.get(path) for _ in range(20)))
                assert [r.status_code for r in responses] == [200] * 20
        messages = log_messages(logs.getvalue(), name)
        assert "database unavailable at startup; the pool is created on first use" in messages
        assert messages.count("pool created") == 1


def _reject_credentials(name, request, accounts, settings):
    """Point ``name`` at a server that checks passwords, with a wrong one in Vault;
    return the settings and every secret that must not leak."""
    wrong = "wrong-" + uuid.uuid4().hex
    if name == "postgres":
        account = request.getfixturevalue("scram_postgres_account")
        accounts.publish("postgres", dict(account.db.secret(), password=wrong))
        return dict(settings, postgres_port=account.db.port), [wrong, account.db.password]
    if name == "mysql":
        account = request.getfixturevalue("mysql_account")
        accounts.publish("mysql", dict(account.db.secret(), password=wrong))
        return settings, [wrong, account.db.password]
    front = request.getfixturevalue("mongo_front")
    accounts.publish("mongodb", {"user": front.user, "password": wrong, "database": "qs"})
    return dict(settings, mongodb_port=front.port), [wrong, front.password]


@pytest.mark.parametrize("name", DATABASES)
async def test_rejected_credentials_are_503_counted_once_and_never_leaked(
    db_settings, accounts, request, caplog, name
):
    settings, secrets = _reject_credentials(name, request, accounts, db_settings)
    path = QUERY.format(name)
    caplog.set_level(logging.DEBUG)
    with captured_json_logs() as logs:
        async with running_app(**settings) as (_, client):
            texts = []
            for _ in range(3):
                failures = metric_value("circuit_breaker_failures_total", service=name)
                response = await client.get(path)
                body = await assert_problem(response, 503, "backend-unavailable", path)
                assert response.headers["Retry-After"]
                # Refused, fresh credentials fetched, refused again: one failure, not two.
                assert metric_value("circuit_breaker_failures_total", service=name) == failures + 1
                texts.append(await response.get_data(as_text=True))
                assert body["detail"].startswith(f"{name} failed")
            health = await client.get(f"/health/{name}")
            assert health.status_code == 503
            texts.append(await health.get_data(as_text=True))
    for secret in secrets:
        for text in [*texts, logs.getvalue(), caplog.text]:
            assert secret not in text


async def test_circuit_closes_again_once_the_database_is_back(db_settings):
    settings = dict(db_settings, circuit_failure_threshold=2, circuit_recovery_seconds=1)
    path = QUERY.format("postgres")
    with TcpProxy(5432) as proxy:
        proxy.set_mode("refuse")
        async with running_app(**dict(settings, postgres_port=proxy.port)) as (_, client):
            kinds = [(await (await client.get(path)).get_json())["type"] for _ in range(3)]
            assert kinds[-1] == "/problems/circuit-open"
            proxy.set_mode("pass")
            statuses: list[int] = []
            async with asyncio.timeout(20):
                while not statuses or statuses[-1] != 200:
                    statuses.append((await client.get(path)).status_code)
                    await asyncio.sleep(0.2)
            assert set(statuses[:-1]) <= {503}
            assert metric_value("circuit_breaker_state", service="postgres") == 0
