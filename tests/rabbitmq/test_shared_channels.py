"""Confirm-mode channels shared by concurrent publishers (channel_pool.py), on the
machine's broker: each publish still gets its own answer (ack, return, or a
failure when the channel dies), never someone else's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import aio_pika
from aio_pika import Channel
from aio_pika.abc import AbstractChannel

from quartstack.integrations.rabbitmq.channel_pool import ChannelPool
from quartstack.integrations.rabbitmq.client import (
    OutgoingMessage,
    PublishUnconfirmed,
    _confirmed_publish,
)
from quartstack.resilience import BackendError
from tests.rabbitmq.broker import BROKER_HOST, BROKER_PORT, drain
from tests.support.net import TcpProxy


def confirm_pool(connection: Any, size: int) -> tuple[ChannelPool, list[AbstractChannel]]:
    opened: list[AbstractChannel] = []

    async def open_channel() -> AbstractChannel:
        channel = Channel(connection, publisher_confirms=True, on_return_raises=True)
        await channel.initialize()
        opened.append(channel)
        return channel

    return ChannelPool(open_channel, size, f"test-{uuid.uuid4().hex[:6]}"), opened


def message(n: int) -> OutgoingMessage:
    return OutgoingMessage.json(json.dumps({"n": n}).encode(), uuid.uuid4().hex)


async def test_concurrent_publishes_share_one_channel_and_each_gets_its_ack(amqp, queue_name):
    await (await amqp.channel()).declare_queue(queue_name, durable=True)
    pool, opened = confirm_pool(amqp, size=1)
    holding = peak = 0

    async def publish(n: int) -> None:
        nonlocal holding, peak
        async with pool.acquire() as channel:
            holding += 1
            peak = max(peak, holding)
            try:
                await _confirmed_publish(channel, queue_name, message(n))
            finally:
                holding -= 1

    try:
        await asyncio.gather(*(publish(n) for n in range(50)))
    finally:
        await pool.close()
    assert len(opened) == 1
    assert peak > 1  # many confirms outstanding on one channel at once
    received = await drain(await amqp.channel(), queue_name)
    assert sorted(json.loads(m.body)["n"] for m in received) == list(range(50))


async def test_a_returned_message_fails_only_its_own_publish(amqp, queue_name):
    """Mandatory publishes to a queue that does not exist come back; the others on
    the same channel, before and after them, are still acked."""
    await (await amqp.channel()).declare_queue(queue_name, durable=True)
    pool, opened = confirm_pool(amqp, size=1)
    missing = f"{queue_name}-missing"

    async def publish(n: int) -> BaseException | None:
        async with pool.acquire() as channel:
            try:
                await _confirmed_publish(channel, missing if n % 5 == 0 else queue_name, message(n))
            except BackendError as exc:
                return exc
            except Exception as exc:  # the unroutable return, as aio-pika raises it
                return exc
        return None

    try:
        outcomes = await asyncio.gather(*(publish(n) for n in range(30)))
    finally:
        await pool.close()
    returned = {n for n, outcome in enumerate(outcomes) if outcome is not None}
    assert returned == set(range(0, 30, 5)), outcomes
    assert all(not isinstance(outcomes[n], BackendError) for n in returned)  # PublishError
    assert len(opened) == 1
    received = await drain(await amqp.channel(), queue_name)
    assert sorted(json.loads(m.body)["n"] for m in received) == [n for n in range(30) if n % 5 != 0]


async def test_a_connection_lost_mid_stream_never_yields_a_false_ack(
    amqp, broker_account, queue_name
):
    """The connection under a shared channel dies with many publishes outstanding
    (acks held back by a proxy, then the socket cut): every one of them fails as
    unconfirmed, none is reported acked or unroutable; the acked ones are queued."""
    await (await amqp.channel()).declare_queue(queue_name, durable=True)
    with TcpProxy(BROKER_PORT) as proxy:
        connection = await aio_pika.connect(
            host=BROKER_HOST,
            port=proxy.port,
            login=broker_account.user,
            password=broker_account.password,
            virtualhost=broker_account.vhost,
        )
        pool, _ = confirm_pool(connection, size=1)
        outstanding = 0
        many_outstanding = asyncio.Event()

        async def publish(n: int) -> BackendError | None:
            nonlocal outstanding
            async with pool.acquire() as channel:
                outstanding += 1
                if outstanding >= 20:
                    many_outstanding.set()
                try:
                    await _confirmed_publish(channel, queue_name, message(n))
                except BackendError as exc:
                    return exc
                finally:
                    outstanding -= 1
            return None

        async def cut_mid_stream() -> None:
            await many_outstanding.wait()
            proxy.close_connections()

        try:
            before = [await publish(n) for n in range(10)]
            proxy.set_mode("delay", delay=30)
            *outcomes, _ = await asyncio.gather(
                *(publish(n) for n in range(10, 60)), cut_mid_stream()
            )
        finally:
            await pool.close()
            with contextlib.suppress(Exception):
                await connection.close()
    assert before == [None] * 10
    assert all(isinstance(outcome, PublishUnconfirmed) for outcome in outcomes), outcomes
    received = {json.loads(m.body)["n"] for m in await drain(await amqp.channel(), queue_name)}
    assert set(range(10)) <= received <= set(range(60))


async def test_a_closed_channel_is_replaced(amqp, queue_name):
    await (await amqp.channel()).declare_queue(queue_name, durable=True)
    pool, opened = confirm_pool(amqp, size=1)
    try:
        async with pool.acquire() as channel:
            await _confirmed_publish(channel, queue_name, message(1))
        await opened[0].close()
        async with pool.acquire() as channel:
            await _confirmed_publish(channel, queue_name, message(2))
    finally:
        await pool.close()
    assert len(opened) == 2 and opened[0].is_closed
    assert len(await drain(await amqp.channel(), queue_name)) == 2
