"""``RabbitMQClient``: confirmed publishing and passive queue inspection.

A 200 from the publish route must mean the broker has the message. So every
publish goes out persistent, ``mandatory`` (an unroutable message comes back as
an error instead of being dropped) on a channel in publisher-confirm mode, and
returns only after the broker's ack. Anything short of an ack is an error. A
failure before the message was sent is a plain 503 (not published); a connection
lost after the send and before the ack is a 503 of kind ``publish-unconfirmed``
(the broker may have it). Publishes are never retried here; ``Idempotency-Key``
keeps the message id stable across client retries, so consumers can drop a
duplicate.

One robust connection (aio-pika re-establishes it after a broker restart)
carries a bounded set of plain confirm-mode channels that concurrent publishes
share (channel_pool.py). Plain rather than robust channels: a channel closed by
a connection loss is dropped and replaced, so requests during an outage fail
fast with 503 instead of waiting for the reconnection, and no channel keeps
re-declaring every queue it ever saw. Declarations run on throwaway channels:
a conflicting declaration closes its channel, which must not fail the other
publishes sharing a confirm channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aio_pika import Channel, DeliveryMode, ExchangeType, RobustConnection
from aio_pika.abc import AbstractChannel
from aio_pika.connection import make_url
from aio_pika.exceptions import (
    AuthenticationError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    InvalidFrameError,
    ProbableAuthenticationError,
    PublishError,
)
from aiormq.exceptions import ChannelLockedResource
from pamqp.commands import Basic

from quartstack import NAME
from quartstack.integrations.base import Backend
from quartstack.integrations.rabbitmq import tracing_headers
from quartstack.integrations.rabbitmq.channel_pool import ChannelPool
from quartstack.integrations.vault.credentials import Credentials, credential_provider
from quartstack.metrics import MESSAGE_PUBLISH_FAILURES, MESSAGES_PUBLISHED
from quartstack.resilience import BackendError, BackendTimeout, BackendUnavailable
from quartstack.settings import Settings

logger = logging.getLogger("quartstack.rabbitmq")

SERVICE = "rabbitmq"
#: How many declared queue names are remembered (least recently used are forgotten).
_DECLARED_QUEUES_KEPT = 10_000
#: The broker refused the login or the virtual host: maybe the secret was rotated.
_LOGIN_REFUSED = (ProbableAuthenticationError, AuthenticationError, InvalidFrameError)


class QueueConflict(BackendError):
    """The queue exists but cannot take our messages as declared (409)."""

    status = 409
    kind = "queue-conflict"

    def __init__(self, queue: str, reason: str) -> None:
        super().__init__(SERVICE, f"queue {queue!r} {reason}")


class MessageUnroutable(BackendUnavailable):
    """The broker returned the message: no queue took it (503)."""

    kind = "message-unroutable"

    def __init__(self, queue: str) -> None:
        super().__init__(SERVICE, f"rabbitmq could not route the message to queue {queue!r}")


class MessageRejected(BackendUnavailable):
    """The broker nacked the message: it did not take responsibility for it (503)."""

    kind = "message-rejected"

    def __init__(self) -> None:
        super().__init__(SERVICE, "rabbitmq did not confirm the message")


class PublishUnconfirmed(BackendUnavailable):
    """The connection failed after the message was sent and before the broker's
    answer: it may or may not be queued (503, but not a clean 'not published')."""

    kind = "publish-unconfirmed"

    def __init__(self) -> None:
        super().__init__(
            SERVICE,
            "rabbitmq did not confirm the message before the connection failed; it may have "
            "been queued. Retry with the same Idempotency-Key (same message id) so consumers "
            "can drop a duplicate",
        )


@dataclass(frozen=True)
class ExchangeMessage:
    """One message for :meth:`RabbitMQClient.publish_to_exchange`."""

    routing_key: str
    body: bytes
    message_id: str
    message_type: str | None = None
    timestamp: datetime | None = None
    #: Trace context (W3C headers) of what caused the message: its publish span links to it.
    caused_by: dict[str, str] | None = None


@dataclass(frozen=True)
class QueueInfo:
    exists: bool
    message_count: int | None = None
    consumer_count: int | None = None


class RabbitMQClient(Backend):
    """The app's RabbitMQ connection: publish with confirms, inspect queues, health."""

    name = SERVICE
    depends_on = ("vault",)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._connection: RobustConnection | None = None
        self._connecting: asyncio.Task[RobustConnection] | None = None
        self._pool: ChannelPool | None = None
        self._lost_at: float | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._declared: OrderedDict[str, None] = OrderedDict()
        self._declaring: dict[str, asyncio.Future[None]] = {}
        self._declared_exchanges: set[str] = set()
        self._declaring_exchanges: dict[str, asyncio.Future[None]] = {}
        #: Message ids being published: the broker returns an unroutable message by
        #: its id, so two publishes with one id must not be in flight at once.
        self._in_flight_ids: dict[str, asyncio.Future[None]] = {}
        # Throwaway channels (inspection, health) are bounded like the pool.
        self._spare_channels = asyncio.Semaphore(settings.rabbitmq_channel_pool_size)

    def ignored_exceptions(self) -> tuple[type[BaseException], ...]:
        # The broker answered; these say something about the queue, not its health.
        return (QueueConflict, MessageUnroutable)

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self.connect_or_degrade(
            self._ready_connection, "rabbitmq unavailable at startup; will connect on first use"
        )

    async def stop(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        pool, self._pool = self._pool, None
        connection, self._connection = self._connection, None
        if connection is not None:
            await _close_connection(connection, pool)
        await asyncio.gather(*self._retiring)
        await credential_provider(self.app).release(SERVICE)

    # --- connection ------------------------------------------------------------------
    async def _ready_connection(self) -> RobustConnection:
        """The open connection; connect first if there is none. While aio-pika is
        re-establishing a lost connection this fails at once rather than wait."""
        connection = self._connection
        if connection is not None and self._given_up(connection):
            self._retire(connection)
            connection = None
        if connection is None or connection.is_closed:
            if self._connecting is None or self._connecting.done():
                self._connecting = asyncio.create_task(self._connect(), name="rabbitmq-connect")
                self._connecting.add_done_callback(_consume_exception)
            # Shielded: a caller giving up must not leave a half-open connection behind.
            connection = await asyncio.shield(self._connecting)
        if not connection.connected.is_set():
            raise BackendUnavailable(SERVICE, "rabbitmq connection lost; reconnecting")
        return connection

    def _given_up(self, connection: RobustConnection) -> bool:
        """Lost for long: aio-pika keeps retrying with the credentials it started
        with, which fails forever if they were rotated meanwhile."""
        if connection.connected.is_set() or self._lost_at is None:
            return False
        patience = max(2.0, 5 * self.settings.rabbitmq_reconnect_seconds)
        return time.monotonic() - self._lost_at > patience

    def _retire(self, connection: RobustConnection) -> None:
        """Drop ``connection`` so the next call connects afresh (credentials read
        again); close it in the background."""
        logger.warning("rabbitmq reconnection keeps failing; starting a new connection")
        pool, self._pool = self._pool, None
        self._connection = None
        self._lost_at = None
        task = asyncio.get_running_loop().create_task(_close_connection(connection, pool))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _connect(self) -> RobustConnection:
        provider = credential_provider(self.app)
        try:
            connection = await self._open(await provider.get(SERVICE))
        except _LOGIN_REFUSED:
            logger.warning("rabbitmq refused the login; retrying with fresh credentials")
            try:
                connection = await self._open(await provider.refresh(SERVICE))
            except _LOGIN_REFUSED as exc:
                raise BackendUnavailable(
                    SERVICE, "rabbitmq refused the login or the virtual host"
                ) from exc
        self._adopt(connection)
        logger.info("rabbitmq connected", extra={"version": server_version(connection)})
        return connection

    def _adopt(self, connection: RobustConnection) -> None:
        """Make ``connection`` (and a channel pool on it) the one new publishes use."""
        connection.reconnect_callbacks.add(self._on_reconnected)
        connection.close_callbacks.add(self._on_connection_lost)
        self._pool = ChannelPool(
            lambda: self._open_channel(connection, confirms=True),
            self.settings.rabbitmq_channel_pool_size,
            SERVICE,
        )
        self._connection = connection
        self._lost_at = None
        self._declared.clear()
        self._declared_exchanges.clear()

    async def rotate_credentials(self) -> None:
        """Move to new credentials now (a dynamic lease nears its end): new publishes
        use a new connection; the old one closes once the publishes on it finished
        (the broker closes a deleted user's connections, so this comes first)."""
        old_connection, old_pool = self._connection, self._pool
        if old_connection is None:
            return  # the next call connects with the new credentials
        credentials = await credential_provider(self.app).refresh(SERVICE)
        self._adopt(await self._open(credentials))
        logger.info("rabbitmq connected with new credentials")
        if old_pool is not None:
            await old_pool.drained(_DRAIN_TIMEOUT)
        await _close_connection(old_connection, old_pool)

    async def _open(self, credentials: Credentials) -> RobustConnection:
        settings = self.settings
        user = credentials.user or "guest"
        password = credentials.password if credentials.user else "guest"
        # What ``connect_robust`` does, except that a failed first connect closes the
        # connection object: left to the garbage collector, aio-pika's ``__del__``
        # schedules a close that never runs ("coroutine was never awaited").
        interval = settings.rabbitmq_reconnect_seconds
        connection = RobustConnection(
            make_url(
                host=settings.rabbitmq_host or "localhost",
                port=settings.rabbitmq_port,
                login=user,
                password=password or "",
                virtualhost=credentials.vhost or "/",
                reconnect_interval=interval,
            ),
            client_properties={"connection_name": NAME},
            reconnect_interval=interval,
        )
        try:
            await connection.connect(timeout=settings.rabbitmq_connect_timeout_seconds)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        return connection

    def _on_reconnected(self, *_args: Any) -> None:
        # A queue may have been deleted meanwhile (a non-durable broker restart,
        # an operator): declare again before the next publish to each.
        self._declared.clear()
        self._declared_exchanges.clear()
        self._lost_at = None
        logger.info("rabbitmq connection re-established")

    def _on_connection_lost(self, connection: Any, *_args: Any) -> None:
        current = self._connection
        if current is None or connection is not current or current.close_called:
            return
        if self._lost_at is None:  # failed reconnection attempts close it again
            self._lost_at = time.monotonic()
            logger.warning("rabbitmq connection lost; reconnecting in the background")

    @staticmethod
    async def _open_channel(connection: RobustConnection, *, confirms: bool) -> AbstractChannel:
        channel = Channel(connection, publisher_confirms=confirms, on_return_raises=confirms)
        await channel.initialize()
        return channel

    # --- publishing ------------------------------------------------------------------
    async def publish(
        self, queue: str, body: bytes, *, message_id: str, correlation_id: str | None = None
    ) -> None:
        """Publish ``body`` (JSON) to durable ``queue``; return once the broker confirmed it."""
        with tracing_headers.publishing(queue, queue, message_id, body_size=len(body)) as headers:
            message = OutgoingMessage.json(
                body, message_id, correlation_id=correlation_id, headers=headers
            )
            try:
                await self.guard.call("publish", lambda: self._publish(queue, message))
            except BackendError as exc:
                MESSAGE_PUBLISH_FAILURES.labels(_failure_reason(exc)).inc()
                raise
        MESSAGES_PUBLISHED.inc()

    def _current(self) -> tuple[RobustConnection, ChannelPool]:
        """The connection new publishes use and its pool, read together in one step:
        after a credential rotation adopted a new connection, a publish must not
        declare on the old one and publish on the new pool (or the reverse)."""
        connection, pool = self._connection, self._pool
        if connection is None or pool is None:  # closed meanwhile (the app is stopping)
            raise BackendUnavailable(SERVICE, "rabbitmq client is closed")
        return connection, pool

    async def _publish(self, queue: str, message: OutgoingMessage) -> None:
        await self._ready_connection()
        connection, pool = self._current()
        with pool.held():  # from here on a rotation waits for this publish
            await self._publish_on(connection, pool, queue, message)

    async def _publish_on(
        self,
        connection: RobustConnection,
        pool: ChannelPool,
        queue: str,
        message: OutgoingMessage,
    ) -> None:
        await self._declare_once(connection, queue)
        async with self._sole_publish(message.message_id), pool.acquire() as channel:
            try:
                await _confirmed_publish(channel, queue, message)
            except PublishError:
                # Returned unroutable although we declared the queue: it was deleted
                # since. The broker kept nothing, so declaring and resending is safe.
                self._declared.pop(queue, None)
                await self._declare_once(connection, queue)
                try:
                    await _confirmed_publish(channel, queue, message)
                except PublishError as exc:
                    raise MessageUnroutable(queue) from exc

    @contextlib.asynccontextmanager
    async def _sole_publish(self, message_id: str | None) -> AsyncIterator[None]:
        """Hold ``message_id`` while its publish is in flight; a second publish with
        the same id (a client retrying with its Idempotency-Key) waits for the first."""
        if message_id is None:
            yield
            return
        while (earlier := self._in_flight_ids.get(message_id)) is not None:
            await asyncio.shield(earlier)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight_ids[message_id] = done
        try:
            yield
        finally:
            del self._in_flight_ids[message_id]
            done.set_result(None)

    async def publish_to_exchange(
        self, exchange: str, messages: Sequence[ExchangeMessage]
    ) -> list[BackendError | None]:
        """Publish ``messages`` (JSON), persistent, to durable topic ``exchange``, pipelined
        on one confirm channel; return each one's outcome: None once the broker confirmed
        it, else the error (see the publish route's kinds). Raises a BackendError when
        none could be sent (no connection, circuit open): the breaker counts that, not
        a single message the broker refused.

        Not ``mandatory``: on a topic exchange the subscribers own their queues and
        bindings, and a message no binding matches is dropped by design (pub/sub),
        not an error the publisher could fix.
        """
        spans, headers = tracing_headers.start_batch(exchange, messages)
        outgoing = [
            OutgoingMessage.json(
                m.body,
                m.message_id,
                message_type=m.message_type,
                timestamp=m.timestamp,
                headers=h,
            )
            for m, h in zip(messages, headers, strict=True)
        ]

        async def send() -> list[BaseException | None]:
            await self._ready_connection()
            connection, pool = self._current()
            with pool.held():  # from here on a rotation waits for this batch
                await self._declare_exchange_once(connection, exchange)
                return await pipelined(pool)

        async def pipelined(pool: ChannelPool) -> list[BaseException | None]:
            async with pool.acquire() as channel:

                async def one(routing_key: str, message: OutgoingMessage) -> None:
                    async with self._sole_publish(message.message_id):
                        await _confirmed_publish(
                            channel, routing_key, message, exchange, mandatory=False
                        )

                return await asyncio.gather(
                    *(
                        one(m.routing_key, message)
                        for m, message in zip(messages, outgoing, strict=True)
                    ),
                    return_exceptions=True,
                )

        try:
            results = await self.guard.call("publish_batch", send)
        except BackendError as exc:
            MESSAGE_PUBLISH_FAILURES.labels(_failure_reason(exc)).inc(len(messages))
            tracing_headers.end_batch(spans, [exc] * len(spans))
            raise
        except BaseException as exc:
            tracing_headers.end_batch(spans, [exc] * len(spans))
            raise
        outcomes: list[BackendError | None] = []
        for result in results:
            if result is None:
                MESSAGES_PUBLISHED.inc()
                outcomes.append(None)
                continue
            error = result if isinstance(result, BackendError) else PublishUnconfirmed()
            MESSAGE_PUBLISH_FAILURES.labels(_failure_reason(error)).inc()
            outcomes.append(error)
        tracing_headers.end_batch(spans, outcomes)
        return outcomes

    async def _declare_exchange_once(self, connection: RobustConnection, name: str) -> None:
        """Declare durable topic exchange ``name`` unless this connection already did
        (on a throwaway channel: a conflict closes it)."""
        while name not in self._declared_exchanges and name in self._declaring_exchanges:
            await asyncio.shield(self._declaring_exchanges[name])
        if name in self._declared_exchanges:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._declaring_exchanges[name] = done
        try:
            async with self._spare_channels, self._spare_channel(connection) as channel:
                await channel.declare_exchange(name, ExchangeType.TOPIC, durable=True)
        except ChannelPreconditionFailed as exc:
            raise BackendUnavailable(
                SERVICE, f"exchange {name!r} exists with another type or not durable"
            ) from exc
        else:
            self._declared_exchanges.add(name)
        finally:
            del self._declaring_exchanges[name]
            done.set_result(None)

    async def _declare_once(self, connection: RobustConnection, queue: str) -> None:
        """Declare durable ``queue`` unless this connection already did (on a throwaway
        channel: a conflict closes it); concurrent first publishes to one queue share
        a single declaration."""
        while queue not in self._declared and queue in self._declaring:
            await asyncio.shield(self._declaring[queue])
        if queue in self._declared:
            self._declared.move_to_end(queue)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._declaring[queue] = done
        try:
            async with self._spare_channels, self._spare_channel(connection) as channel:
                await channel.declare_queue(queue, durable=True)
        except ChannelPreconditionFailed as exc:
            raise QueueConflict(queue, "exists with other properties (not durable)") from exc
        except ChannelLockedResource as exc:
            raise QueueConflict(queue, "is exclusive to another connection") from exc
        else:
            self._declared[queue] = None
            if len(self._declared) > _DECLARED_QUEUES_KEPT:
                self._declared.popitem(last=False)
        finally:
            del self._declaring[queue]
            done.set_result(None)

    # --- inspection and health ----------------------------------------------------------
    async def queue_info(self, queue: str) -> QueueInfo:
        """Counts of ``queue`` by a passive declare: never creates it."""
        return await self.guard.call("queue_info", lambda: self._inspect(queue), idempotent=True)

    async def _inspect(self, queue: str) -> QueueInfo:
        connection = await self._ready_connection()
        # Its own channel: a passive declare of a missing queue closes the channel
        # (404), which must not hit a pooled one.
        async with self._spare_channels, self._spare_channel(connection) as channel:
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except ChannelNotFoundEntity:
                return QueueInfo(exists=False)
            except ChannelLockedResource:  # exclusive to another connection
                return QueueInfo(exists=True)
        result = declared.declaration_result
        return QueueInfo(True, result.message_count, result.consumer_count)

    @contextlib.asynccontextmanager
    async def _spare_channel(self, connection: RobustConnection) -> AsyncIterator[AbstractChannel]:
        channel = await self._open_channel(connection, confirms=False)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def open_channel(self, *, prefetch: int | None = None) -> AbstractChannel:
        """A channel of the caller's own on the app's connection, in confirm mode (for
        consumers and administration); the caller closes it. It dies with the
        connection: a long-lived user watches ``close_callbacks`` and opens another."""

        async def open_one() -> AbstractChannel:
            connection = await self._ready_connection()
            channel = await self._open_channel(connection, confirms=True)
            if prefetch is not None:
                await channel.set_qos(prefetch_count=prefetch)
            return channel

        return await self.guard.call("open_channel", open_one)

    async def health(self) -> dict[str, Any]:
        async def check() -> dict[str, Any]:
            connection = await self._ready_connection()
            async with self._spare_channels, self._spare_channel(connection):
                pass  # opening a channel is a round trip to the broker
            return {"version": server_version(connection)}

        return await self.guard.call("health", check)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message's body and AMQP properties, ready for the wire: built straight as
    pamqp properties, without aio-pika's ``Message`` (a third of a publish's CPU)."""

    body: bytes
    properties: Basic.Properties

    @property
    def message_id(self) -> str | None:
        return self.properties.message_id

    @classmethod
    def json(
        cls,
        body: bytes,
        message_id: str,
        *,
        correlation_id: str | None = None,
        message_type: str | None = None,
        timestamp: datetime | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> OutgoingMessage:
        """Persistent JSON from this app, stamped now unless ``timestamp`` is given;
        ``headers`` carry the trace context (empty while tracing is off)."""
        return cls(
            body,
            Basic.Properties(
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=int(DeliveryMode.PERSISTENT),
                message_id=message_id,
                correlation_id=correlation_id,
                message_type=message_type,
                timestamp=timestamp or datetime.now(UTC),
                app_id=NAME,
                headers=dict(headers) if headers else None,
            ),
        )


async def _confirmed_publish(
    channel: AbstractChannel,
    routing_key: str,
    message: OutgoingMessage,
    exchange: str = "",
    *,
    mandatory: bool = True,
) -> None:
    """Send and wait for the broker's answer. Failing before the send is a plain 503
    (not published); failing after it is :class:`PublishUnconfirmed`.

    Straight on aiormq's channel: aio-pika's ``Exchange.publish`` adds nothing a
    confirmed publish needs."""
    try:
        underlay = await channel.get_underlay_channel()
    except Exception as exc:  # closed meanwhile
        raise BackendUnavailable(SERVICE, "rabbitmq channel closed; message not sent") from exc
    try:
        confirmation = await underlay.basic_publish(
            message.body,
            exchange=exchange,
            routing_key=routing_key,
            properties=message.properties,
            mandatory=mandatory,
        )
    except PublishError:
        raise
    except DeliveryError as exc:  # Basic.Nack
        raise MessageRejected() from exc
    except Exception as exc:  # the connection or channel died around the send
        raise PublishUnconfirmed() from exc
    if not isinstance(confirmation, Basic.Ack):
        raise MessageRejected()


def _failure_reason(exc: BackendError) -> str:
    if isinstance(exc, MessageRejected):
        return "nack"
    if isinstance(exc, MessageUnroutable):
        return "unroutable"
    if isinstance(exc, PublishUnconfirmed):
        return "unconfirmed"
    if isinstance(exc, BackendTimeout):
        return "timeout"
    return "error"


def server_version(connection: RobustConnection) -> str | None:
    transport = connection.transport
    if transport is None:
        return None
    version = transport.connection.server_properties.get("version")
    if isinstance(version, bytes):
        return version.decode(errors="replace")
    return None if version is None else str(version)


#: How long a replaced connection may wait for the publishes still using it.
_DRAIN_TIMEOUT = 30.0


async def _close_connection(connection: RobustConnection, pool: ChannelPool | None) -> None:
    if pool is not None:
        await pool.close()
    with contextlib.suppress(Exception):
        await connection.close()


def _consume_exception(task: asyncio.Task[Any]) -> None:
    """Mark a failed connect as seen when every waiter gave up on it."""
    if not task.cancelled():
        task.exception()
