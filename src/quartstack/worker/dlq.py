"""The worker's dead-letter queue: list it, replay it (``quartstack dlq list|replay``).

Listing takes the messages without acknowledging them and closes the channel, so
the broker keeps every one. Replaying publishes each message again to the events
exchange with its original routing key and properties (same ``message_id``, so a
letter that was in fact applied is still applied once), waits for the confirm,
and only then removes it from the DLQ: a crash in between replays it twice,
which the projections absorb. The headers go along (only the broker's own and the
dead-letter reason are dropped), ``traceparent`` among them: a replayed event is
processed in its original trace again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from quart import Quart

from quartstack import NAME
from quartstack.integrations.base import REGISTRY_KEY, BackendRegistry, registry
from quartstack.integrations.rabbitmq import RabbitMQClient
from quartstack.integrations.vault.client import VaultClient
from quartstack.integrations.vault.credentials import CredentialProvider
from quartstack.settings import Settings
from quartstack.worker import topology
from quartstack.worker.app import WorkerNotConfigured
from quartstack.worker.consumer import REASON_HEADER, persistent_copy

_BROKER_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-delivery-count")


@asynccontextmanager
async def _channel(settings: Settings) -> AsyncIterator[AbstractChannel]:
    """A channel on a RabbitMQ client of its own (credentials from Vault, as the API)."""
    if "rabbitmq" not in settings.enabled_backends:
        raise WorkerNotConfigured("the dead-letter tools need RABBITMQ_HOST")
    app = Quart(NAME)
    app.extensions[REGISTRY_KEY] = BackendRegistry([])
    CredentialProvider(settings).init_app(app)
    if "vault" in settings.enabled_backends:
        VaultClient(settings).init_app(app)
    rabbitmq = RabbitMQClient(settings)
    rabbitmq.init_app(app)
    clients = registry(app)
    await clients.start_all()
    try:
        channel = await rabbitmq.open_channel()
        try:
            await topology.declare(channel, settings)
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()
    finally:
        await clients.stop_all()


def describe(message: AbstractIncomingMessage) -> dict[str, Any]:
    """One dead letter as JSON: identity, why it is here, and its body (as text)."""
    headers = message.headers or {}
    deaths = headers.get("x-death")
    first = deaths[0] if isinstance(deaths, list) and deaths else {}
    reason = headers.get(REASON_HEADER)
    if reason is None and isinstance(first, dict) and first:
        reason = f"broker: {first.get('reason')!s}"
    return {
        "message_id": message.message_id,
        "type": message.type,
        "routing_key": _routing_key(message),
        "reason": reason,
        "timestamp": message.timestamp,
        "body": message.body.decode("utf-8", errors="replace"),
    }


def _routing_key(message: AbstractIncomingMessage) -> str:
    headers = message.headers or {}
    original = headers.get("x-original-routing-key")
    if isinstance(original, str) and original:
        return original
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        keys = deaths[0].get("routing-keys")
        if isinstance(keys, list) and keys:
            return str(keys[0])
    return message.type or message.routing_key or ""


async def list_letters(settings: Settings, limit: int) -> list[dict[str, Any]]:
    async with _channel(settings) as channel:
        queue = await channel.get_queue(topology.dlq_name(settings), ensure=False)
        letters: list[dict[str, Any]] = []
        while len(letters) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            letters.append(describe(message))
        return letters  # unacked: closing the channel gives them back


async def replay(settings: Settings, limit: int) -> int:
    async with _channel(settings) as channel:
        queue = await channel.get_queue(topology.dlq_name(settings), ensure=False)
        events = await channel.get_exchange(settings.events_exchange, ensure=False)
        replayed = 0
        while replayed < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            headers = {
                k: v
                for k, v in (message.headers or {}).items()
                if k not in _BROKER_HEADERS and k != REASON_HEADER
            }
            await events.publish(
                persistent_copy(message, headers),
                routing_key=_routing_key(message),
            )
            await message.ack()
            replayed += 1
        return replayed
