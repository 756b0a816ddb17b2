"""The outbox relay: publishes committed events to RabbitMQ, at least once.

One batch is one PostgreSQL transaction: claim up to ``OUTBOX_RELAY_BATCH_SIZE``
unpublished rows with ``FOR UPDATE SKIP LOCKED`` (so any number of relays share the
outbox without taking the same row), publish each to the durable topic exchange
and wait for the broker's confirm, mark the confirmed ones published, commit. A
crash or failure anywhere before the commit leaves the rows unpublished, and the
next batch publishes them again: delivery is at-least-once, and consumers drop
duplicates by ``message_id`` (the event id).

The relay wakes on ``LISTEN outbox`` (a trigger notifies at every committed insert)
and polls every ``OUTBOX_RELAY_POLL_SECONDS`` anyway, which covers a lost listener
connection and notifications missed while it was down. It never runs on a request's
path: signups only need PostgreSQL.

Tracing: each event's publish span is a span of the relay (its own trace, not the
request's, which ended long ago) with a span link to the trace context the row
stored at insert; the message carries the publish span's context, so the worker's
processing continues the relay's trace and the link leads back to the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from quartstack.integrations.postgres import PostgresPool
from quartstack.integrations.rabbitmq import ExchangeMessage, RabbitMQClient
from quartstack.metrics import (
    OUTBOX_PENDING,
    OUTBOX_PUBLISH_LAG,
    OUTBOX_RELAY_BATCHES,
    OUTBOX_RELAY_FAILURES,
)
from quartstack.resilience import BackendError
from quartstack.settings import Settings
from quartstack.signup import users
from quartstack.signup.users import OutboxEvent

logger = logging.getLogger("quartstack.relay")

NOTIFY_CHANNEL = "outbox"
#: How often at most the pending-rows gauge is refreshed from the database.
_PENDING_REFRESH_SECONDS = 1.0


class OutboxRelay:
    """One relay loop over the app's Postgres and RabbitMQ clients."""

    def __init__(
        self, settings: Settings, postgres: PostgresPool, rabbitmq: RabbitMQClient
    ) -> None:
        self.settings = settings
        self.postgres = postgres
        self.rabbitmq = rabbitmq
        self.exchange = settings.events_exchange
        self.batch_size = settings.outbox_relay_batch_size
        self.poll_seconds = settings.outbox_relay_poll_seconds
        self.pending = 0
        self._pending_read_at = 0.0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Bounds one batch: the claim, every publish (each has its own timeout), the mark.
        self._batch_timeout = 3 * settings.backend_timeout_seconds

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, after: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run in the background, once ``after()`` is done (the app's startup: Vault
        login and pools), so the first batch does not race the startup."""
        OUTBOX_PENDING.set_function(lambda: float(self.pending))

        async def run() -> None:
            if after is not None:  # ... unless the app stops first
                waits = [
                    asyncio.ensure_future(after()),
                    asyncio.ensure_future(self._stopping.wait()),
                ]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for waiting in waits:
                    waiting.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            if not self._stopping.is_set():
                await self.run()

        self._task = asyncio.create_task(run(), name="outbox-relay")

    async def stop(self, timeout: float = 10.0) -> None:
        """Let the batch in progress finish (at most ``timeout``), then stop."""
        self._stopping.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run(self) -> None:
        """Relay until stopped; failures are counted, logged and retried after a pause."""
        async with contextlib.AsyncExitStack() as stack:
            listening: asyncpg.Connection | None = None
            while not self._stopping.is_set():
                if listening is None or listening.is_closed():
                    listening = await self._listen(stack)
                self._wake.clear()
                try:
                    published = await self.relay_batch()
                except Exception as exc:
                    OUTBOX_RELAY_FAILURES.labels(_reason(exc)).inc()
                    logger.warning("outbox relay batch failed", extra={"cause": type(exc).__name__})
                    published = 0
                await self._refresh_pending()
                if published < self.batch_size:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_seconds):
                            await self._wake.wait()

    async def _listen(self, stack: contextlib.AsyncExitStack) -> asyncpg.Connection | None:
        """Start listening for new events; on failure, poll until the next attempt."""
        await stack.aclose()
        try:
            connection: asyncpg.Connection = await stack.enter_async_context(
                self.postgres.listen(NOTIFY_CHANNEL, self._wake.set)
            )
        except Exception as exc:
            logger.info("outbox relay polls: no listener", extra={"cause": type(exc).__name__})
            return None
        return connection

    # --- one batch --------------------------------------------------------------------------
    async def relay_batch(self) -> int:
        """Publish one batch; return how many events the broker confirmed."""
        published = await self.postgres.run(
            "outbox_relay", self._publish_claimed, timeout=self._batch_timeout
        )
        OUTBOX_RELAY_BATCHES.inc()
        return published

    async def _publish_claimed(self, connection: asyncpg.Connection) -> int:
        async with connection.transaction():
            events = await users.claim(connection, self.batch_size)
            if not events:
                return 0
            outcomes = await self._publish(events)
            confirmed = [e for e, outcome in zip(events, outcomes, strict=True) if outcome is None]
            if confirmed:
                await users.mark_published(connection, [e.id for e in confirmed])
        now = datetime.now(UTC)
        for event in confirmed:
            OUTBOX_PUBLISH_LAG.observe(max((now - event.created_at).total_seconds(), 0.0))
        failed = [o for o in outcomes if o is not None]
        if failed:
            for error in failed:
                OUTBOX_RELAY_FAILURES.labels(error.kind).inc()
            logger.warning(
                "outbox events not confirmed; they stay pending",
                extra={"failed": len(failed), "cause": type(failed[0]).__name__},
            )
        return len(confirmed)

    async def _publish(self, events: list[OutboxEvent]) -> list[BackendError | None]:
        """Each event's outcome; all failed alike when none could be sent."""
        messages = [
            ExchangeMessage(
                routing_key=event.event_type,
                body=event.payload.encode(),
                message_id=str(event.event_id),
                message_type=event.event_type,
                timestamp=event.created_at,
                caused_by=event.trace_context,
            )
            for event in events
        ]
        try:
            return await self.rabbitmq.publish_to_exchange(self.exchange, messages)
        except BackendError as exc:
            return [exc] * len(events)

    async def _refresh_pending(self) -> None:
        now = time.monotonic()
        if now - self._pending_read_at < _PENDING_REFRESH_SECONDS:
            return
        self._pending_read_at = now
        with contextlib.suppress(Exception):  # a gauge must not break the relay
            self.pending = await users.pending_count(self.postgres)


def _reason(exc: BaseException) -> str:
    kind = getattr(exc, "kind", None)
    return kind if isinstance(kind, str) else "error"
