"""Failures between the app and the broker: refused logins, an unreachable or slow
broker (through a TCP proxy of our own, never by breaking the shared broker), lost
connections, the circuit breaker."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import pytest

from tests.rabbitmq.broker import (
    BROKER_PORT,
    BrokerAccount,
    assert_problem,
    drain,
    rabbitmqctl,
    write_rabbitmq_secret,
)
from tests.support.app import captured_json_logs, metric_value, running_app
from tests.support.leftovers import unique_name
from tests.support.net import TcpProxy
from tests.support.polling import wait_until

PUBLISH = "/examples/messaging/publish?queue_name={}"
INFO = "/examples/messaging/queue/{}/info"


@pytest.fixture
def private_mount(vault_server, broker_account):
    """A KV mount for one test, so rewriting the secret touches no other test."""
    mount = f"rmq-{uuid.uuid4().hex[:8]}"
    vault_server.enable_kv_v2(mount)
    write_rabbitmq_secret(vault_server, mount, broker_account)
    return mount


@pytest.fixture
def proxy():
    with TcpProxy(BROKER_PORT) as running:
        yield running


async def publish_until_ok(
    client, queue: str, deadline_s: float = 30.0, body: dict | None = None
) -> list[int]:
    """Publish once per 50 ms until a 200; return every status seen. The body is
    ``body``, or ``{"try": <attempt>}`` so each attempt can be told apart in the queue."""
    statuses: list[int] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        payload = {"try": len(statuses)} if body is None else body
        response = await client.post(PUBLISH.format(queue), json=payload)
        statuses.append(response.status_code)
        if response.status_code == 200:
            return statuses
        await asyncio.sleep(0.05)
    raise AssertionError(f"no 200 within {deadline_s} s: {statuses[-10:]}")


async def noticed_connection_lost(logs) -> None:
    """Until the app has seen its connection drop (it logs it): what a publish sent
    before that would meet is a dead socket, not the outage under test."""
    await wait_until(
        lambda: "rabbitmq connection lost" in logs.getvalue(), what="the app noticing the cut"
    )


async def test_wrong_credentials_are_503_without_leaking_and_rotation_recovers(
    app_settings, vault_server, private_mount, broker_account, amqp, queue_name, caplog
):
    wrong = "wrong-" + uuid.uuid4().hex
    write_rabbitmq_secret(vault_server, private_mount, broker_account, password=wrong)
    settings = dict(app_settings, vault_mount=private_mount, circuit_failure_threshold=50)
    caplog.set_level(logging.DEBUG)
    with captured_json_logs() as logs:
        async with running_app(**settings) as (_, client):
            publish = await client.post(PUBLISH.format(queue_name), json={"a": 1})
            body = await assert_problem(publish, 503, "backend-unavailable")
            assert "refused the login" in body["detail"]
            assert publish.headers["Retry-After"]
            await assert_problem(
                await client.get(INFO.format(queue_name)), 503, "backend-unavailable"
            )
            health = await client.get("/health/rabbitmq")
            assert health.status_code == 503
            health_body = await health.get_json()
            assert health_body["status"] == "unhealthy" and health_body["error"]

            texts = [await publish.get_data(as_text=True), await health.get_data(as_text=True)]
            # The secret is rotated in Vault: the next connect reads it fresh.
            write_rabbitmq_secret(vault_server, private_mount, broker_account)
            recovered = await client.post(PUBLISH.format(queue_name), json={"a": 2})
            assert recovered.status_code == 200
    output = logs.getvalue() + "\n".join(r.getMessage() for r in caplog.records)
    assert "refused the login" in output
    for secret in (wrong, broker_account.password):
        assert secret not in output
        assert all(secret not in text for text in texts)
    received = await drain(await amqp.channel(), queue_name)
    assert [json.loads(m.body) for m in received] == [{"a": 2}]


async def test_broker_down_at_startup_connects_on_first_use(app_settings, proxy, queue_name, amqp):
    proxy.set_mode("refuse")
    settings = dict(app_settings, rabbitmq_port=proxy.port)
    with captured_json_logs() as logs:
        async with running_app(**settings) as (_, client):
            assert "rabbitmq unavailable at startup" in logs.getvalue()
            assert (await client.get("/health/startup")).status_code == 200
            await assert_problem(
                await client.post(PUBLISH.format(queue_name), json={"a": 1}),
                503,
                "backend-unavailable",
            )
            proxy.set_mode("pass")
            response = await client.post(PUBLISH.format(queue_name), json={"a": 2})
            assert response.status_code == 200
    received = await drain(await amqp.channel(), queue_name)
    assert [json.loads(m.body) for m in received] == [{"a": 2}]


async def test_lost_connection_is_re_established_in_the_background(
    app_settings, proxy, queue_name, amqp
):
    """Cutting the TCP connection: requests fail fast with 503 while aio-pika
    reconnects, then succeed again on the same app; no 200 is ever lost."""
    settings = dict(app_settings, rabbitmq_port=proxy.port, circuit_failure_threshold=1000)
    with captured_json_logs() as logs:
        async with running_app(**settings) as (_, client):
            first = await client.post(PUBLISH.format(queue_name), json={"try": -1})
            assert first.status_code == 200
            proxy.set_mode("refuse")
            proxy.close_connections()
            await noticed_connection_lost(logs)
            for _ in range(3):
                response = await client.post(PUBLISH.format(queue_name), json={"down": True})
                await assert_problem(response, 503, "backend-unavailable")
            health = await client.get("/health/rabbitmq")
            assert health.status_code == 503
            proxy.set_mode("pass")
            statuses = await publish_until_ok(client, queue_name)
            assert set(statuses) <= {200, 503}
            assert (await client.get("/health/rabbitmq")).status_code == 200
    received = await drain(await amqp.channel(), queue_name)
    assert [json.loads(m.body) for m in received] == [{"try": -1}, {"try": len(statuses) - 1}]


async def test_unconfirmed_in_time_is_504(app_settings, proxy, queue_name, amqp):
    """The broker's confirm arrives after the timeout: 504 (outcome unknown), counted;
    the channel is replaced and publishing continues."""
    settings = dict(app_settings, rabbitmq_port=proxy.port, backend_timeout_seconds=0.5)
    async with running_app(**settings) as (_, client):
        # The first connect (Vault read, AMQP handshake, queue declare) must fit in the
        # same 0.5 s, which a busy machine may not give it: retried until it does.
        assert set(await publish_until_ok(client, queue_name, body={"n": 1})) <= {200, 503, 504}
        proxy.set_mode("delay", delay=1.0)
        timeouts_before = metric_value("message_publish_failures_total", reason="timeout")
        slow = await client.post(PUBLISH.format(queue_name), json={"n": 2})
        await assert_problem(slow, 504, "backend-timeout")
        timeouts = metric_value("message_publish_failures_total", reason="timeout")
        assert timeouts == timeouts_before + 1
        proxy.set_mode("pass")
        await wait_until(lambda: proxy.held == 0, what="the delayed frames passing")
        # A 503 here would be the timed-out channel reused; a 504 only a slow machine.
        assert set(await publish_until_ok(client, queue_name, body={"n": 3})) <= {200, 504}
    received = await drain(await amqp.channel(), queue_name)
    # A timed-out publish may or may not have reached the queue; confirmed ones did.
    numbers = [json.loads(m.body)["n"] for m in received]
    assert 1 in numbers and 3 in numbers and numbers.count(2) <= 1, numbers
    assert numbers == sorted(numbers), numbers


async def test_circuit_opens_after_failures_and_closes_after_recovery(
    app_settings, proxy, queue_name
):
    settings = dict(
        app_settings,
        rabbitmq_port=proxy.port,
        circuit_failure_threshold=2,
        circuit_recovery_seconds=1,
    )
    with captured_json_logs() as logs:
        async with running_app(**settings) as (_, client):
            first = await client.post(PUBLISH.format(queue_name), json={"n": 1})
            assert first.status_code == 200
            proxy.set_mode("refuse")
            proxy.close_connections()
            await noticed_connection_lost(logs)
            for _ in range(2):
                response = await client.post(PUBLISH.format(queue_name), json={"n": 2})
                await assert_problem(response, 503, "backend-unavailable")
            response = await client.post(PUBLISH.format(queue_name), json={"n": 2})
            await assert_problem(response, 503, "circuit-open")
            assert response.headers["Retry-After"] == "1"
            assert metric_value("circuit_breaker_state", service="rabbitmq") == 2
            proxy.set_mode("pass")
            # circuit-open 503s until the recovery second has passed, then a trial call
            statuses = await publish_until_ok(client, queue_name)
            assert set(statuses) <= {200, 503}
            assert metric_value("circuit_breaker_state", service="rabbitmq") == 0


async def test_password_rotated_during_an_outage_is_picked_up(
    app_settings, vault_server, private_mount, broker_account, proxy, queue_name, amqp
):
    """aio-pika would retry forever with the old password; after a few failed
    reconnections the client starts over and reads the rotated secret from Vault."""
    user = unique_name("-")
    old = "old-" + uuid.uuid4().hex
    new = "new-" + uuid.uuid4().hex
    account = BrokerAccount(broker_account.vhost, user, old)
    rabbitmqctl("add_user", user, old)
    try:
        rabbitmqctl("set_permissions", "-p", account.vhost, user, ".*", ".*", ".*")
        write_rabbitmq_secret(vault_server, private_mount, account)
        settings = dict(
            app_settings,
            vault_mount=private_mount,
            rabbitmq_port=proxy.port,
            rabbitmq_reconnect_seconds=0.2,
            circuit_failure_threshold=1000,
        )
        with captured_json_logs() as logs:
            async with running_app(**settings) as (_, client):
                first = await client.post(PUBLISH.format(queue_name), json={"try": -1})
                assert first.status_code == 200
                rabbitmqctl("change_password", user, new)
                write_rabbitmq_secret(vault_server, private_mount, account, password=new)
                proxy.close_connections()
                await noticed_connection_lost(logs)
                statuses = await publish_until_ok(client, queue_name, deadline_s=20)
        assert 503 in statuses and set(statuses) <= {200, 503}
        assert "starting a new connection" in logs.getvalue()
        for secret in (old, new):
            assert secret not in logs.getvalue()
    finally:
        rabbitmqctl("delete_user", user, check=False)
    received = await drain(await amqp.channel(), queue_name)
    assert [json.loads(m.body) for m in received] == [{"try": -1}, {"try": len(statuses) - 1}]
