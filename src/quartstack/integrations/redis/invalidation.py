"""Invalidations of cached responses reach every replica's in-process tier via pub/sub.

The replica that deletes entries from Redis publishes the glob on one channel (under
``REDIS_KEY_PREFIX``); every replica subscribes on a background task and drops the
matching keys from its :class:`LocalTier`. A plain ``SUBSCRIBE`` works on Redis Cluster
too: classic pub/sub messages are forwarded to every node over the cluster bus, so the
subscriber may listen on any one configured node (the next one after a failure).

While the subscription is down, or silent for longer than the tier's ``liveness``
(pings are sent when nothing else arrives), the local tier is off and empty; it comes
back empty once subscribed again. redis-py has no client-side caching for asyncio
(``CacheConfig`` is sync-only, checked up to redis-py 8.1), hence pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from circuitbreaker import STATE_OPEN

from quartstack.integrations.redis.client import RedisClient
from quartstack.integrations.redis.local_tier import LocalTier
from quartstack.resilience import BackendGuard

logger = logging.getLogger("quartstack.response_cache")

CHANNEL = "resp-invalidate"  # under REDIS_KEY_PREFIX
BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0
STOP_TIMEOUT = 1.0
NOT_READY_POLL = 0.2


class RedisNotReady(Exception):
    """The data client is not connected, or its circuit is open."""


class SubscriptionSilent(Exception):
    """Nothing (not even a PONG) arrived within the liveness window."""


class InvalidationChannel:
    """Publish this replica's invalidations; apply everyone's to the local tier."""

    def __init__(self, redis: RedisClient, local: LocalTier) -> None:
        self.redis = redis
        settings = redis.settings
        # A guard of its own (like the per-node ones): the subscription's outcomes must
        # not move the circuit of the data calls, nor hide their failures with successes.
        self.guard = BackendGuard(
            "redis:pubsub",
            timeout=settings.backend_timeout_seconds,
            failure_threshold=settings.circuit_failure_threshold,
            recovery_timeout=settings.circuit_recovery_seconds,
        )
        self.local = local
        self.channel = redis.key(CHANNEL)
        self.ping_interval = local.liveness / 3
        self._task: asyncio.Task[None] | None = None
        self._subscribed = False  # in the current attempt

    async def publish(self, pattern: str) -> None:
        """Tell every replica (this one hears it too) to drop keys matching ``pattern``."""
        await self.redis.run("cache_publish", lambda c: c.publish(self.channel, pattern))

    def start(self) -> None:
        if self.local.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="response-cache-invalidations")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: a connection stuck in redis-py must not hold up the shutdown.
            await asyncio.wait({task}, timeout=STOP_TIMEOUT)
        self.local.go_offline()

    async def _run(self) -> None:
        """Subscribe, listen, and on any failure go dark and retry with jittered backoff."""
        attempt = 0
        failures = 0
        while True:
            self._subscribed = False
            try:
                await self._listen(attempt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: go dark, reconnect
                self.local.go_offline()
                if self._subscribed:
                    failures = 0
                    logger.warning(
                        "response cache invalidations lost; in-memory tier off until resubscribed",
                        extra={"error": type(exc).__name__},
                    )
                if isinstance(exc, RedisNotReady):  # no I/O to back off from: look again soon
                    await asyncio.sleep(NOT_READY_POLL)
                    continue
                failures += 1
                attempt += 1
                delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(failures, 10))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _listen(self, attempt: int) -> None:
        # The data client connects (and learns rotated credentials) on request traffic;
        # while it is not connected or its circuit is open, there is nothing to try.
        if not self.redis.connected or self.redis.guard.state == STATE_OPEN:
            raise RedisNotReady()
        client = self.redis.subscription_client(attempt)
        pubsub: Any = client.pubsub()
        try:
            await self.guard.call("subscribe", lambda: pubsub.subscribe(self.channel))
            loop = asyncio.get_running_loop()
            quiet_since = loop.time()
            while True:
                message = await pubsub.get_message(timeout=self.ping_interval)
                now = loop.time()
                if message is not None:
                    quiet_since = now
                    self._handle(message)
                    continue
                if now - quiet_since > self.local.liveness:
                    raise SubscriptionSilent()
                await pubsub.ping()  # its PONG proves the connection still delivers
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            self._subscribed = True
            self.local.go_online()
            logger.debug("response cache invalidations subscribed")
        elif kind == "message":
            self.local.heard()
            self.local.invalidate(str(message["data"]))
        else:  # pong
            self.local.heard()
