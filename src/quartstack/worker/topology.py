"""The worker's RabbitMQ topology, declared (idempotently) by every worker at start.

- the events exchange: durable topic, as the relay declares it;
- ``<queue>``: a durable quorum queue bound to ``user.*``. Quorum: replicated and
  it counts deliveries (``x-delivery-count``), so ``x-delivery-limit`` can stop a
  message that keeps killing its consumer; those are dead-lettered by the broker;
- ``<queue>.dlx`` (fanout) and ``<queue>.dlq`` (durable quorum): where both the
  broker (delivery limit) and the worker (invalid events, with the reason in
  ``x-dead-letter-reason``) put what cannot be applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from quartstack.settings import Settings

BINDING = "user.*"


@dataclass(frozen=True)
class Topology:
    events: AbstractExchange
    queue: AbstractQueue
    dead_letters: AbstractExchange
    dead_letter_queue: AbstractQueue


def dlq_name(settings: Settings) -> str:
    return f"{settings.worker_queue}.dlq"


def dlx_name(settings: Settings) -> str:
    return f"{settings.worker_queue}.dlx"


async def declare(channel: AbstractChannel, settings: Settings) -> Topology:
    events = await channel.declare_exchange(
        settings.events_exchange, ExchangeType.TOPIC, durable=True
    )
    dead_letters = await channel.declare_exchange(
        dlx_name(settings), ExchangeType.FANOUT, durable=True
    )
    dead_letter_queue = await channel.declare_queue(
        dlq_name(settings), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_letter_queue.bind(dead_letters, routing_key="")
    queue = await channel.declare_queue(
        settings.worker_queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.worker_max_deliveries,
            "x-dead-letter-exchange": dlx_name(settings),
        },
    )
    await queue.bind(events, routing_key=BINDING)
    return Topology(events, queue, dead_letters, dead_letter_queue)
