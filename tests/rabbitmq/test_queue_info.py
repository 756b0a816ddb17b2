"""Passive queue inspection and the RabbitMQ health route."""

from __future__ import annotations

import asyncio

from tests.rabbitmq.broker import assert_problem, drain, queue_exists, rabbitmqctl
from tests.support.app import running_app

INFO = "/examples/messaging/queue/{}/info"
PUBLISH = "/examples/messaging/publish?queue_name={}"


async def test_missing_queue_is_reported_and_not_created(app_settings, amqp, queue_name):
    async with running_app(**app_settings) as (_, client):
        response = await client.get(INFO.format(queue_name))
        assert response.status_code == 200
        assert await response.get_json() == {
            "queue": queue_name,
            "exists": False,
            "message_count": None,
            "consumer_count": None,
        }
    assert not await queue_exists(amqp, queue_name)


async def test_counts_of_an_existing_queue(app_settings, amqp, queue_name):
    async with running_app(**app_settings) as (_, client):
        for n in range(3):
            assert (await client.post(PUBLISH.format(queue_name), json={"n": n})).status_code == 200
        body = await (await client.get(INFO.format(queue_name))).get_json()
        assert body == {
            "queue": queue_name,
            "exists": True,
            "message_count": 3,
            "consumer_count": 0,
        }

        channel = await amqp.channel()
        queue = await channel.declare_queue(queue_name, passive=True)

        async def ignore(_message: object) -> None:
            return None

        tag = await queue.consume(ignore)
        try:
            body = await (await client.get(INFO.format(queue_name))).get_json()
            assert body["consumer_count"] == 1
        finally:
            await queue.cancel(tag)
    await drain(await amqp.channel(), queue_name)


async def test_missing_queue_checks_do_not_poison_the_channel_pool(app_settings, amqp, queue_name):
    """Each passive declare of a missing queue closes its channel; interleaved with
    publishes on a small pool, every request still succeeds."""
    async with running_app(**app_settings, rabbitmq_channel_pool_size=2) as (_, client):
        infos = [client.get(INFO.format(f"{queue_name}-missing-{n}")) for n in range(20)]
        publishes = [client.post(PUBLISH.format(queue_name), json={"n": n}) for n in range(20)]
        responses = await asyncio.gather(*infos, *publishes)
        assert [r.status_code for r in responses] == [200] * 40
        for response in responses[:20]:
            assert (await response.get_json())["exists"] is False
        body = await (await client.get(INFO.format(queue_name))).get_json()
        assert body["message_count"] == 20
    for n in range(20):
        assert not await queue_exists(amqp, f"{queue_name}-missing-{n}")
    assert len(await drain(await amqp.channel(), queue_name)) == 20


async def test_queue_name_in_path_is_validated(app_settings):
    async with running_app(**app_settings) as (_, client):
        for name in ["bad%20name", "q" * 101, "a%2Fb", "na*me"]:
            response = await client.get(INFO.format(name))
            if response.status_code == 404:  # an encoded slash may not match the route
                await assert_problem(response, 404, "not-found")
                continue
            body = await assert_problem(response, 422, "validation-error")
            assert body["errors"][0]["field"] == "path.queue_name"


async def test_health_reports_the_server_version(app_settings):
    version = rabbitmqctl("version").strip()
    async with running_app(**app_settings) as (_, client):
        response = await client.get("/health/rabbitmq")
        assert response.status_code == 200
        body = await response.get_json()
        assert body["status"] == "healthy"
        assert body["version"] == version
        every = await (await client.get("/health/all")).get_json()
        assert every["services"]["rabbitmq"]["status"] == "healthy"
