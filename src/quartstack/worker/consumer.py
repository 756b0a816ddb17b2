"""The projection consumer: applies each signup event to the read model and counters.

One message, in order: parse (:mod:`quartstack.worker.events`), apply to MongoDB
(idempotent, :mod:`~quartstack.worker.read_model`), count in Redis (atomic dedup,
:mod:`~quartstack.worker.counters`), then ack. A crash anywhere before the ack
means a redelivery, which both projections absorb: exactly once in effect.

What cannot be applied is told apart by cause:

- an invalid event (not JSON, unknown schema version, failing validation) can never
  succeed: it is dead-lettered at its first delivery, with the reason in the
  ``x-dead-letter-reason`` header;
- a projection backend that is down (unavailable, timed out, circuit open) is not
  the message's fault: the message stays in hand and is retried with exponential
  backoff (capped at ``WORKER_RETRY_MAX_SECONDS``) until the backend is back. It is
  not requeued, because each requeue counts towards the queue's delivery limit and
  a long outage would dead-letter healthy events; the prefetch bounds how many wait,
  and readiness shows the backend down meanwhile;
- anything else (a bug, data a backend refuses) is requeued, and dead-lettered with
  the error as reason at its ``WORKER_MAX_DELIVERIES``-th delivery.

Tracing: each delivery is processed in a ``CONSUMER`` span that continues the
trace context from the message headers (the publisher's span is its parent), so
the MongoDB and Redis writes show up in the publisher's trace. Dead-lettering and
replay copy the headers, so a replayed letter joins its original trace again.

Stopping (SIGTERM): cancel the consumer so nothing new arrives, let the events in
hand finish within the grace, nack (requeue) the rest, close the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from quartstack.integrations.mongodb import MongoDatabase
from quartstack.integrations.rabbitmq import RabbitMQClient, tracing_headers
from quartstack.integrations.redis.client import RedisClient
from quartstack.resilience import BackendTimeout, BackendUnavailable
from quartstack.settings import Settings
from quartstack.worker import counters, read_model, topology
from quartstack.worker.events import InvalidEvent, UserEvent, UserRegistered, parse_event
from quartstack.worker.metrics import (
    CONSUMING,
    DEAD_LETTER_QUEUE_DEPTH,
    DEAD_LETTERED,
    EVENT_DURATION,
    EVENTS_CONSUMED,
    OUTAGE_RETRIES,
    PROJECTION_LAG,
    REDELIVERIES,
)

logger = logging.getLogger("quartstack.worker")

REASON_HEADER = "x-dead-letter-reason"
#: How many times the worker had received it (the DLQ counts its own deliveries).
DELIVERIES_HEADER = "x-dead-letter-deliveries"
#: First pause after a failed attempt, doubled each time up to the setting's cap.
_FIRST_RETRY_SECONDS = 0.2
_OUTAGES = (BackendUnavailable, BackendTimeout)
#: How often the dead-letter queue's depth is read.
DLQ_WATCH_SECONDS = 15.0


class _Requeue(Exception):
    """Stopping while the event waits for a backend: give it back to the queue."""


class ProjectionConsumer:
    """Consumes ``WORKER_QUEUE`` until stopped, reconnecting whenever its channel dies."""

    def __init__(
        self,
        settings: Settings,
        rabbitmq: RabbitMQClient,
        mongo: MongoDatabase,
        redis: RedisClient,
    ) -> None:
        self.settings = settings
        self.rabbitmq = rabbitmq
        self.mongo = mongo
        self.redis = redis
        self.consuming = False
        #: Why the consumer is not running, for readiness (None while it runs).
        self.last_error: str | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._dead_letter_channel: AbstractChannel | None = None
        self._indexes_ready = False
        self._watch: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="projection-consumer")
        self._watch = asyncio.create_task(self._watch_dead_letters(), name="dlq-depth")

    async def stop(self, grace: float | None = None) -> None:
        """Stop consuming; events in hand get ``grace`` seconds, then are requeued."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self._stopping.set()
        task, self._task = self._task, None
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        handlers = set(self._handlers)
        if handlers:
            done, pending = await asyncio.wait(handlers, timeout=grace)
            for handler in pending:
                handler.cancel()  # its message is nacked (requeued) as it unwinds
            await asyncio.gather(*pending, return_exceptions=True)
            logger.info("consumer stopped", extra={"finished": len(done), "requeued": len(pending)})
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def run(self) -> None:
        """Consume until stopped; a lost channel or failed setup is retried with backoff."""
        delay = _FIRST_RETRY_SECONDS
        while not self._stopping.is_set():
            try:
                await self._consume_until_closed()
                delay = _FIRST_RETRY_SECONDS
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "consumer not running; retrying",
                    extra={"cause": type(exc).__name__, "reason": str(exc), "retry_s": delay},
                )
            if not self._stopping.is_set():
                await self._pause(delay)
                delay = min(delay * 2, self.settings.worker_retry_max_seconds)

    async def _consume_until_closed(self) -> None:
        if not self._indexes_ready:
            await read_model.ensure_indexes(self.mongo)
            self._indexes_ready = True
        channel = await self.rabbitmq.open_channel(prefetch=self.settings.worker_prefetch)
        closed = asyncio.Event()
        channel.close_callbacks.add(lambda *_: closed.set())
        try:
            declared = await topology.declare(channel, self.settings)
            self._dead_letter_channel = channel
            tag = await declared.queue.consume(self._on_message, no_ack=False)
            self.consuming = True
            self.last_error = None
            CONSUMING.set(1)
            logger.info("consuming", extra={"queue": self.settings.worker_queue})
            stop = asyncio.create_task(self._stopping.wait())
            lost = asyncio.create_task(closed.wait())
            await asyncio.wait((stop, lost), return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            lost.cancel()
            if self._stopping.is_set() and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await declared.queue.cancel(tag)
                # wait for the handlers in hand (stop() bounds them by the grace)
                while self._handlers:
                    await asyncio.sleep(0.02)
            else:
                logger.warning("consumer channel closed; reopening")
        finally:
            self.consuming = False
            CONSUMING.set(0)
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def _watch_dead_letters(self) -> None:
        """Export the DLQ's depth for the "dead letters present" alert: it also counts
        what the broker dead-lettered itself (delivery limit), which no counter sees."""
        queue = topology.dlq_name(self.settings)
        while not self._stopping.is_set():
            try:
                info = await self.rabbitmq.queue_info(queue)
                depth = info.message_count if info.message_count is not None else -1
            except Exception:  # a gauge must not stop the worker
                depth = -1
            DEAD_LETTER_QUEUE_DEPTH.set(depth)
            await self._pause(DLQ_WATCH_SECONDS)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    # --- one message ------------------------------------------------------------------------
    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            with tracing_headers.processing(
                self.settings.worker_queue,
                message.headers,
                message_id=message.message_id,
                exchange=message.exchange,
                routing_key=message.routing_key,
                body_size=message.body_size,
            ) as span:
                span.set_attribute("quartstack.event.outcome", await self.handle(message))
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> str:
        """Process one delivery; return its outcome (as counted in the metrics)."""
        started = time.perf_counter()
        event_type = message.type or message.routing_key or "unknown"
        if message.redelivered:
            REDELIVERIES.inc()
        if self._stopping.is_set():
            await _settle(message.nack(requeue=True))
            return "requeued"
        try:
            result = await self._process(message)
        except (asyncio.CancelledError, _Requeue):
            await _settle(message.nack(requeue=True))
            EVENTS_CONSUMED.labels(event_type, "requeued").inc()
            return "requeued"
        except Exception as exc:  # e.g. the channel died before the ack: redelivered later
            logger.warning(
                "event not settled; the broker will deliver it again",
                extra={"message_id": message.message_id, "cause": type(exc).__name__},
            )
            EVENTS_CONSUMED.labels(event_type, "unsettled").inc()
            return "unsettled"
        EVENTS_CONSUMED.labels(event_type, result).inc()
        EVENT_DURATION.labels(event_type).observe(time.perf_counter() - started)
        return result

    async def _process(self, message: AbstractIncomingMessage) -> str:
        try:
            event = parse_event(
                message.body, message_id=message.message_id, message_type=message.type
            )
        except InvalidEvent as exc:
            await self._dead_letter(message, exc.reason, kind="invalid")
            return "dead_lettered"
        try:
            await self._apply_through_outages(event)
        except _Requeue:
            raise
        except Exception as exc:
            deliveries = _deliveries(message)
            if deliveries >= self.settings.worker_max_deliveries:
                reason = f"failed {deliveries} times: {type(exc).__name__}"
                await self._dead_letter(message, reason, kind="failing")
                return "dead_lettered"
            logger.warning(
                "event failed; requeued",
                extra={"event_id": event.event_id, "cause": type(exc).__name__},
            )
            await message.nack(requeue=True)
            return "requeued"
        await message.ack()
        lag = (datetime.now(UTC) - event.occurred_at).total_seconds()
        PROJECTION_LAG.observe(max(lag, 0.0))
        return "applied"

    async def _apply_through_outages(self, event: UserEvent) -> None:
        delay = _FIRST_RETRY_SECONDS
        while True:
            try:
                await self.apply(event)
                return
            except _OUTAGES as exc:
                if self._stopping.is_set():
                    raise _Requeue from exc
                OUTAGE_RETRIES.inc()
                logger.warning(
                    "projection backend unavailable; holding the event",
                    extra={"event_id": event.event_id, "cause": str(exc), "retry_s": delay},
                )
                await self._pause(delay)
                delay = min(delay * 2, self.settings.worker_retry_max_seconds)

    async def apply(self, event: UserEvent) -> None:
        """Both projections; each is idempotent, so applying twice changes nothing."""
        await read_model.apply(self.mongo, event)
        if isinstance(event, UserRegistered):
            await counters.count_signup(
                self.redis,
                event,
                dedup_ttl=self.settings.worker_dedup_ttl_seconds,
                retention_days=self.settings.worker_stats_retention_days,
            )

    async def _dead_letter(
        self, message: AbstractIncomingMessage, reason: str, *, kind: str
    ) -> None:
        """Publish a copy with the reason to the dead-letter exchange (confirmed), then
        ack the original: at worst a crash in between leaves a duplicate in the DLQ."""
        channel = self._dead_letter_channel
        if channel is None or channel.is_closed:
            raise BackendUnavailable("rabbitmq", "no channel to dead-letter on")
        headers = dict(message.headers or {})
        headers[REASON_HEADER] = reason
        headers[DELIVERIES_HEADER] = _deliveries(message)
        headers["x-original-routing-key"] = message.routing_key or ""
        copy = persistent_copy(message, headers)
        exchange = await channel.get_exchange(topology.dlx_name(self.settings), ensure=False)
        await exchange.publish(copy, routing_key=message.routing_key or "")
        await message.ack()
        DEAD_LETTERED.labels(kind).inc()
        logger.warning(
            "event dead-lettered",
            extra={"message_id": message.message_id, "reason": reason, "kind": kind},
        )


def persistent_copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> Message:
    """``message`` sent again (to the dead-letter exchange, or back from it on replay):
    same body, id, type and timestamp, persistent, with ``headers``."""
    return Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.type,
        timestamp=message.timestamp,
    )


def _deliveries(message: AbstractIncomingMessage) -> int:
    """This delivery's number (1 = first): the quorum queue's ``x-delivery-count`` + 1."""
    count = (message.headers or {}).get("x-delivery-count", 0)
    return (count if isinstance(count, int) else 0) + 1


async def _settle(ack: Any) -> None:
    with contextlib.suppress(Exception):  # the channel may be gone: the broker requeues
        await ack
