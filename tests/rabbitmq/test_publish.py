"""Publishing through the API, checked with an independent AMQP client."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import pytest
from aio_pika import DeliveryMode

from tests.rabbitmq.broker import assert_problem, drain, rabbitmqctl
from tests.support.app import metric_value, running_app

PUBLISH = "/examples/messaging/publish?queue_name={}"


async def test_publish_then_consume_back(app_settings, amqp, queue_name):
    message = {"order": 42, "items": [{"sku": "a-1", "qty": 2}], "note": "crème brûlée", "ok": True}
    published_before = metric_value("messages_published_total")
    timed_before = metric_value(
        "backend_call_duration_seconds_count", service="rabbitmq", operation="publish"
    )
    async with running_app(**app_settings) as (_, client):
        response = await client.post(
            PUBLISH.format(queue_name), json=message, headers={"X-Request-ID": "req-publish-1"}
        )
        assert response.status_code == 200
        body = await response.get_json()
        assert body["queue"] == queue_name
        assert body["message"] == message
        assert body["action"] == "published"
        uuid.UUID(body["message_id"])

    channel = await amqp.channel()
    [received] = await drain(channel, queue_name)
    assert json.loads(received.body) == message
    assert received.content_type == "application/json"
    assert received.delivery_mode == DeliveryMode.PERSISTENT
    assert received.message_id == body["message_id"]
    assert received.correlation_id == "req-publish-1"
    assert received.app_id == "quartstack"
    assert received.timestamp is not None
    assert metric_value("messages_published_total") == published_before + 1
    assert (
        metric_value("backend_call_duration_seconds_count", service="rabbitmq", operation="publish")
        == timed_before + 1
    )
    # The queue is durable: declaring it transient is refused by the broker.
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await (await amqp.channel()).declare_queue(queue_name, durable=False)


async def test_500_concurrent_publishes_are_confirmed_and_consumed_once(
    app_settings, amqp, queue_name
):
    async with running_app(**app_settings) as (_, client):
        responses = await asyncio.gather(
            *(client.post(PUBLISH.format(queue_name), json={"n": n}) for n in range(500))
        )
        assert [r.status_code for r in responses] == [200] * 500
        ids = {(await r.get_json())["message_id"] for r in responses}
        assert len(ids) == 500

    received = await drain(await amqp.channel(), queue_name)
    assert len(received) == 500
    assert {m.message_id for m in received} == ids
    assert sorted(json.loads(m.body)["n"] for m in received) == list(range(500))


async def test_body_validation_problems(app_settings, queue_name):
    limit = 1024 * 1024
    async with running_app(**app_settings) as (_, client):
        url = PUBLISH.format(queue_name)
        cases = [
            ("too large", dict(data=b'{"a":"' + b"x" * limit + b'"}'), 413, "payload-too-large"),
            ("array", dict(json=[1, 2]), 422, "validation-error"),
            ("string", dict(json="text"), 422, "validation-error"),
            ("empty object", dict(json={}), 422, "validation-error"),
            ("no body", dict(), 422, "validation-error"),
            ("malformed", dict(data=b'{"a":'), 400, "malformed-json"),
            (
                "text",
                dict(data=b"hello", headers={"Content-Type": "text/plain"}),
                415,
                "unsupported-media-type",
            ),
        ]
        for name, kwargs, status, kind in cases:
            if "data" in kwargs and "headers" not in kwargs:
                kwargs["headers"] = {"Content-Type": "application/json"}
            response = await client.post(url, **kwargs)
            await assert_problem(response, status, kind)
            if status == 422:
                errors = (await response.get_json())["errors"]
                assert errors and errors[0]["field"] == "body", name

        # Just under the route's limit is accepted (the app-wide limit is 10 MiB).
        almost = {"a": "x" * (limit - 16)}
        response = await client.post(url, json=almost)
        assert response.status_code == 200
        assert (await response.get_json())["message"] == almost


async def test_queue_name_validation(app_settings):
    async with running_app(**app_settings) as (_, client):
        for query in [
            "",
            "?queue_name=",
            "?queue_name=bad%20name",
            "?queue_name=" + "q" * 101,
            "?queue_name=amq.reserved",
            "?queue_name=a/b",
        ]:
            response = await client.post("/examples/messaging/publish" + query, json={"a": 1})
            body = await assert_problem(response, 422, "validation-error")
            assert body["errors"][0]["field"] == "queue_name", query


async def test_existing_transient_queue_is_a_409_and_the_pool_keeps_working(
    app_settings, amqp, queue_name
):
    channel = await amqp.channel()
    await channel.declare_queue(queue_name, durable=False)
    async with running_app(**app_settings, rabbitmq_channel_pool_size=2) as (_, client):
        for _ in range(3):  # more than the pool: every broken channel was replaced
            response = await client.post(PUBLISH.format(queue_name), json={"a": 1})
            body = await assert_problem(response, 409, "queue-conflict")
            assert queue_name in body["detail"]
        other = queue_name + "-ok"
        responses = await asyncio.gather(
            *(client.post(PUBLISH.format(other), json={"n": n}) for n in range(10))
        )
        assert [r.status_code for r in responses] == [200] * 10
        # A conflict is the broker answering: it does not open the circuit.
        health = await client.get("/health/rabbitmq")
        assert health.status_code == 200
    assert len(await drain(channel, other)) == 10
    assert await drain(channel, queue_name) == []


async def test_nack_is_a_503_and_counted(app_settings, amqp, broker_account, queue_name):
    """A queue full under ``overflow: reject-publish`` makes the broker nack."""
    policy = f"limit-{queue_name}"
    rabbitmqctl(
        "set_policy",
        "-p",
        broker_account.vhost,
        "--apply-to",
        "queues",
        policy,
        f"^{queue_name}$",
        '{"max-length": 1, "overflow": "reject-publish"}',
    )
    try:
        nacks_before = metric_value("message_publish_failures_total", reason="nack")
        async with running_app(**app_settings) as (_, client):
            first = await client.post(PUBLISH.format(queue_name), json={"n": 1})
            assert first.status_code == 200
            second = await client.post(PUBLISH.format(queue_name), json={"n": 2})
            await assert_problem(second, 503, "message-rejected")
            assert second.headers["Retry-After"]
        assert metric_value("message_publish_failures_total", reason="nack") == nacks_before + 1
        received = await drain(await amqp.channel(), queue_name)
        assert [json.loads(m.body) for m in received] == [{"n": 1}]
    finally:
        rabbitmqctl("clear_policy", "-p", broker_account.vhost, policy, check=False)


async def test_queue_deleted_behind_our_back_is_declared_again(app_settings, amqp, queue_name):
    """The app remembers declared queues; a publish the broker returns as unroutable
    (the queue is gone) declares it again and resends, instead of losing the message."""
    async with running_app(**app_settings) as (_, client):
        assert (await client.post(PUBLISH.format(queue_name), json={"n": 1})).status_code == 200
        channel = await amqp.channel()
        await channel.queue_delete(queue_name)
        response = await client.post(PUBLISH.format(queue_name), json={"n": 2})
        assert response.status_code == 200
    received = await drain(await amqp.channel(), queue_name)
    assert [json.loads(m.body) for m in received] == [{"n": 2}]


async def test_idempotency_key_publishes_once(
    app_settings, amqp, queue_name, vault_server, vault_mount
):
    """With Redis configured, a retried publish with the same Idempotency-Key is
    replayed from the store and the broker gets the message once."""
    vault_server.write_secret("redis-1", {"password": ""}, mount=vault_mount)  # no auth here
    settings = dict(app_settings, redis_host="127.0.0.1", redis_port=6379)
    key = f"pub-{uuid.uuid4().hex}"
    other_key = f"pub-{uuid.uuid4().hex}"
    async with running_app(**settings) as (_, client):
        url = PUBLISH.format(queue_name)
        first = await client.post(url, json={"n": 1}, headers={"Idempotency-Key": key})
        again = await client.post(url, json={"n": 1}, headers={"Idempotency-Key": key})
        assert first.status_code == again.status_code == 200
        assert again.headers["Idempotency-Replayed"] == "true"
        assert await again.get_json() == await first.get_json()
        different = await client.post(url, json={"n": 2}, headers={"Idempotency-Key": key})
        await assert_problem(different, 422, "idempotency-key-reused")
        third = await client.post(url, json={"n": 3}, headers={"Idempotency-Key": other_key})
        assert third.status_code == 200

    first_id = (await first.get_json())["message_id"]
    received = await drain(await amqp.channel(), queue_name)
    assert [json.loads(m.body) for m in received] == [{"n": 1}, {"n": 3}]
    assert received[0].message_id == first_id


async def test_a_retry_with_the_same_idempotency_key_keeps_the_message_id(
    app_settings, amqp, queue_name
):
    """A retry that reaches the broker again (its first attempt failed, so nothing was
    stored; here: no Redis at all) carries the first attempt's message id, so consumers
    can drop the duplicate; another key, or the same key on another queue, another id."""
    key = f"pub-{uuid.uuid4().hex}"
    other_queue = f"{queue_name}-other"
    async with running_app(**app_settings) as (_, client):
        ids = []
        for queue, idempotency_key in [
            (queue_name, key),
            (queue_name, key),
            (queue_name, f"pub-{uuid.uuid4().hex}"),
            (other_queue, key),
        ]:
            response = await client.post(
                PUBLISH.format(queue), json={"n": 1}, headers={"Idempotency-Key": idempotency_key}
            )
            assert response.status_code == 200 and "Idempotency-Replayed" not in response.headers
            ids.append((await response.get_json())["message_id"])
    assert ids[0] == ids[1] and len(set(ids)) == 3, ids
    channel = await amqp.channel()
    received = await drain(channel, queue_name)
    assert [m.message_id for m in received] == ids[:3]
    await channel.queue_delete(other_queue)


async def test_not_configured_is_503(queue_name):
    async with running_app() as (_, client):
        response = await client.post(PUBLISH.format(queue_name), json={"a": 1})
        await assert_problem(response, 503, "backend-not-configured")
        info = await client.get(f"/examples/messaging/queue/{queue_name}/info")
        await assert_problem(info, 503, "backend-not-configured")


async def test_openapi_documents_the_routes(app_settings):
    async with running_app(**app_settings) as (_, client):
        spec = await (await client.get("/openapi.json")).get_json()
    publish = spec["paths"]["/examples/messaging/publish"]["post"]
    assert {"200", "409", "413", "422", "503"} <= set(publish["responses"])
    assert "requestBody" in publish
    assert any(p["name"] == "queue_name" for p in publish["parameters"])
    info = spec["paths"]["/examples/messaging/queue/{queue_name}/info"]["get"]
    assert "200" in info["responses"]


async def test_queue_exclusive_to_another_connection_is_a_409(app_settings, amqp, queue_name):
    channel = await amqp.channel()
    await channel.declare_queue(queue_name, exclusive=True)
    async with running_app(**app_settings) as (_, client):
        response = await client.post(PUBLISH.format(queue_name), json={"a": 1})
        body = await assert_problem(response, 409, "queue-conflict")
        assert "exclusive" in body["detail"]
        info = await client.get(f"/examples/messaging/queue/{queue_name}/info")
        assert await info.get_json() == {
            "queue": queue_name,
            "exists": True,
            "message_count": None,
            "consumer_count": None,
        }
