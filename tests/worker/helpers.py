"""Helpers for the worker suite: events as the relay publishes them, and reads of
what the worker projected (through clients of the test's own, not the worker's)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import redis.asyncio as redis_async
from aio_pika.abc import AbstractChannel
from pymongo import AsyncMongoClient

from tests.rabbitmq.broker import independent_connection
from tests.support.polling import wait_until
from tests.worker.conftest import WorkerEnv


def registered(
    email: str | None = None, *, user_id: str | None = None, event_id: str | None = None
) -> dict[str, Any]:
    """A ``user.registered`` body in the relay's shape (quartstack.signup.users)."""
    now = datetime.now(UTC).isoformat()
    user_id = user_id or str(uuid.uuid4())
    return {
        "schema_version": 1,
        "event_id": event_id or str(uuid.uuid4()),
        "type": "user.registered",
        "occurred_at": now,
        "data": {
            "id": user_id,
            "email": email or f"u-{uuid.uuid4().hex[:8]}@example.com",
            "name": "A User",
            "created_at": now,
        },
    }


def deleted(user_id: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "type": "user.deleted",
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {"id": user_id},
    }


async def publish(
    channel: AbstractChannel, exchange: str, body: dict[str, Any] | bytes, **props: Any
) -> None:
    """Publish as the relay does: persistent, message_id = event id, type = routing key."""
    if isinstance(body, dict):
        raw = json.dumps(body).encode()
        props.setdefault("message_id", body["event_id"])
        props.setdefault("type", body["type"])
    else:
        raw = body
    routing_key = props.pop("routing_key", props.get("type") or "user.registered")
    target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    await target.publish(
        aio_pika.Message(
            raw,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            **props,
        ),
        routing_key=routing_key,
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    await wait_until(check, timeout=timeout, interval=0.05, what=what)


class Projections:
    """Reads the worker's read model and counters directly."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(port=env.mongo_port)
        self.redis = redis_async.Redis(port=6379, decode_responses=True)

    @property
    def users(self) -> Any:
        return self.mongo[self.env.database]["users"]

    async def user_docs(self) -> dict[str, dict[str, Any]]:
        return {d["_id"]: d async for d in self.users.find({})}

    async def day_counts(self) -> dict[str, dict[str, str]]:
        pattern = f"{self.env.key_prefix}:signups:{{signups}}:day:*"
        result = {}
        async for key in self.redis.scan_iter(
            match=pattern.replace("{", "\\{").replace("}", "\\}")
        ):
            result[key.rsplit(":", 1)[1]] = await self.redis.hgetall(key)
        return result

    async def total(self) -> int:
        return sum(int(day.get("total", 0)) for day in (await self.day_counts()).values())

    async def close(self) -> None:
        await self.mongo.close()
        await self.redis.aclose()


async def queue_counts(env: WorkerEnv, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue`` by a passive declare."""
    connection = await independent_connection(env.account)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return result.message_count or 0, result.consumer_count or 0
