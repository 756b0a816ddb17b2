"""Distributed rate limiting: quart-rate-limiter's model with an atomic Redis store.

quart-rate-limiter's stock ``RedisStore`` reads then writes the theoretical
arrival time (two round trips, racy between replicas), keeps keys forever,
cannot run on a cluster and turns a Redis outage into a 500. Here every check
is one Lua script (GCRA) that decides and updates atomically on the Redis
server's clock, keys expire when the limit has fully reset, the single key per
check works on a cluster, and a Redis failure lets the request through while
``rate_limit_store_errors_total`` counts it.

Limits follow the route: the probes are exempt, ``/health/*`` and ``/metrics``
have their own limits, everything else the default; ``@rate_limit`` and
``@rate_exempt`` from quart-rate-limiter still override per route.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from quart import Quart, Response, current_app, g, request
from quart_rate_limiter import (
    QUART_RATE_LIMITER_EXEMPT_ATTRIBUTE,
    RateLimit,
    RateLimiter,
    RateLimitExceeded,
)
from quart_rate_limiter.store import RateLimiterStoreABC
from redis.exceptions import NoScriptError

from quartstack.integrations.redis.client import RedisClient
from quartstack.metrics import RATE_LIMIT_HITS, RATE_LIMIT_STORE_ERRORS
from quartstack.resilience import BackendError
from quartstack.settings import Settings
from quartstack.web.client_address import client_address
from quartstack.web.observability import current_endpoint

logger = logging.getLogger("quartstack.rate_limit")

PROBE_PATHS = frozenset({"/health/live", "/health/ready", "/health/startup"})
_MINUTE = timedelta(minutes=1)

# GCRA in one step. KEYS[1]: the client's key. ARGV: emission interval and period (ms).
# Returns {allowed, ms until the limit fully resets, ms until the next request may pass}.
_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if allow_at > now then
  return {0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, new_tat - now))
return {1, new_tat - now, 0}
"""


_GCRA_SHA = hashlib.sha1(_GCRA.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reset_ms: int
    retry_after_ms: int


class RedisRateLimitStore(RateLimiterStoreABC):
    """Atomic GCRA decisions in Redis (the get/set API of the ABC is not used)."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def consume(self, key: str, limit: RateLimit) -> Decision:
        period_ms = int(limit.period.total_seconds() * 1000)
        interval_ms = max(1, period_ms // limit.count)

        async def gcra(client: Any) -> list[int]:
            # EVALSHA sends 40 bytes instead of the script; a node that lacks the script
            # (fresh, restarted, failed over) gets it once through EVAL.
            try:
                reply: list[int] = await client.evalsha(_GCRA_SHA, 1, key, interval_ms, period_ms)
            except NoScriptError:
                reply = await client.eval(_GCRA, 1, key, interval_ms, period_ms)
            return reply

        reply = await self.redis.execute("rate_limit", gcra)
        allowed, reset_ms, retry_ms = (int(v) for v in reply)
        return Decision(bool(allowed), reset_ms, retry_ms)

    async def get(self, key: str, default: datetime) -> datetime:
        raise NotImplementedError("non-atomic get/set is not offered; use consume()")

    async def set(self, key: str, tat: datetime) -> None:
        raise NotImplementedError("non-atomic get/set is not offered; use consume()")

    async def before_serving(self) -> None:
        """The Redis client's lifecycle belongs to RedisClient."""

    async def after_serving(self) -> None:
        """The Redis client's lifecycle belongs to RedisClient."""


class DistributedRateLimiter(RateLimiter):
    """quart-rate-limiter with one atomic store call per limit and route-based limits."""

    def __init__(self, store: RedisRateLimitStore, settings: Settings) -> None:
        super().__init__(store=store, key_function=_client_key)
        self.atomic_store = store
        self.default_limit = RateLimit(settings.rate_limit_default, _MINUTE)
        self.health_limit = RateLimit(settings.rate_limit_health, _MINUTE)
        self.metrics_limit = RateLimit(settings.rate_limit_metrics, _MINUTE)

    def limits_for_request(self) -> list[RateLimit]:
        if request.path in PROBE_PATHS or request.method == "OPTIONS":
            return []
        view_func = current_app.view_functions.get(request.endpoint or "")
        if view_func is None:
            return [self.default_limit]
        explicit: list[RateLimit] = self._get_limits_for_view_function(
            view_func, current_app.blueprints.get(request.blueprint or "")
        )
        if explicit or getattr(view_func, QUART_RATE_LIMITER_EXEMPT_ATTRIBUTE, False):
            return explicit
        if request.path.startswith("/health/"):
            return [self.health_limit]
        if request.path == "/metrics":
            return [self.metrics_limit]
        return [self.default_limit]

    async def _before_request(self) -> None:
        limits = self.limits_for_request()
        if not limits:
            return
        endpoint = current_endpoint()
        client = await _client_key()
        tightest: tuple[RateLimit, Decision] | None = None
        for limit in limits:
            key = f"quartstack:rl:{{{client}}}:{endpoint}:{limit.count}:{limit.period.seconds}"
            try:
                decision = await self.atomic_store.consume(key, limit)
            except BackendError:
                RATE_LIMIT_STORE_ERRORS.inc()
                return  # fail open: an unreachable Redis must not take the API down
            if tightest is None or limit.period < tightest[0].period:
                tightest = (limit, decision)
            if not decision.allowed:
                g.rate_limit_headers = _headers(limit, decision)
                RATE_LIMIT_HITS.labels(endpoint).inc()
                raise RateLimitExceeded(max(1, math.ceil(decision.retry_after_ms / 1000)))
        if tightest is not None:
            g.rate_limit_headers = _headers(*tightest)

    async def _after_request(self, response: Response) -> Response:
        headers = getattr(g, "rate_limit_headers", None)
        if headers:
            response.headers.update(headers)
        return response


def _headers(limit: RateLimit, decision: Decision) -> dict[str, str]:
    interval_ms = limit.period.total_seconds() * 1000 / limit.count
    used_ms = decision.reset_ms
    remaining = max(0, int((limit.period.total_seconds() * 1000 - used_ms) // interval_ms))
    return {
        "RateLimit-Limit": str(limit.count),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_ms / 1000)),
    }


async def _client_key() -> str:
    return client_address()


def init_rate_limiting(app: Quart, settings: Settings, redis: RedisClient | None) -> None:
    """Install the limiter when enabled and Redis is configured (the limit must be
    shared by all replicas; a per-process limit would multiply with the replica count)."""
    if not settings.rate_limit_enabled:
        return
    if redis is None:
        logger.info("rate limiting is off: Redis is not configured")
        return
    limiter = DistributedRateLimiter(RedisRateLimitStore(redis), settings)
    limiter.init_app(app)
