"""Distributed rate limiting: quart-rate-limiter's model with an atomic Redis store.

quart-rate-limiter's stock ``RedisStore`` reads then writes the theoretical
arrival time (two round trips, racy between replicas), keeps keys forever,
cannot run on a cluster and turns a Redis outage into a 500. Here every check
is one Lua script (GCRA) that checks every limit of the request and counts it
only if all allow it, atomically and on the Redis server's clock; keys expire
when their limit has fully reset; all keys of one client share a hash tag, so
the script runs on a cluster; and a Redis failure lets the request through
while ``rate_limit_store_errors_total`` counts it. A check waits at most
``RATE_LIMIT_TIMEOUT_SECONDS`` for Redis, and none while its circuit is open.

Limits follow the route, configured here rather than on every blueprint: the
Kubernetes probes are exempt, ``/health/*`` and ``/metrics`` have their own
limits, everything else the default. quart-rate-limiter's ``@rate_limit``,
``limit_blueprint`` and ``@rate_exempt`` still override per route.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from quart import Quart, Response, current_app, g, request
from quart_rate_limiter import (
    QUART_RATE_LIMITER_EXEMPT_ATTRIBUTE,
    QUART_RATE_LIMITER_LIMITS_ATTRIBUTE,
    RateLimit,
    RateLimiter,
    RateLimitExceeded,
)
from quart_rate_limiter.store import RateLimiterStoreABC
from redis.exceptions import RedisError

from quartstack.auth.principal import rate_limit_identity
from quartstack.integrations.redis.batched_script import BatchedScript
from quartstack.integrations.redis.client import RedisClient
from quartstack.metrics import RATE_LIMIT_HITS, RATE_LIMIT_STORE_ERRORS
from quartstack.resilience import BackendError
from quartstack.settings import Settings
from quartstack.web.observability import current_endpoint

logger = logging.getLogger("quartstack.rate_limit")

PROBE_PATHS = frozenset({"/health/live", "/health/ready", "/health/startup"})
KEY_NAMESPACE = "rl:"  # under REDIS_KEY_PREFIX
_MINUTE = timedelta(minutes=1)

# GCRA over every limit of one request, in microseconds of the Redis server's clock
# (so limits above 60000/min keep their precision; TATs are stored with %d because
# Lua's default number format keeps only 14 digits). KEYS: one per limit. ARGV: per
# limit, its emission interval and period in us. Returns {allowed, us until the
# request could pass, 1-based index of the limit that refused (0 if allowed), then
# per limit the us until it is fully reset}.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tats, allowed, wait, refused_by = {}, 1, 0, 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  tats[i] = tat
  local allow_at = tat + interval - period
  if allow_at > now then
    allowed = 0
    if allow_at - now > wait then wait, refused_by = allow_at - now, i end
  end
end
local reply = {allowed, wait, refused_by}
for i, key in ipairs(KEYS) do
  local tat = tats[i]
  if allowed == 1 then
    tat = tat + tonumber(ARGV[2 * i - 1])
    local ttl_ms = math.max(1, math.ceil((tat - now) / 1000))
    redis.call('SET', key, string.format('%d', tat), 'PX', ttl_ms)
  end
  reply[#reply + 1] = tat - now
end
return reply
"""


@dataclass(frozen=True)
class Decision:
    """The outcome of one check over all limits of a request."""

    allowed: bool
    retry_after_us: int
    refused_by: int | None  # index into the limits, when refused
    reset_us: list[int]  # per limit: us until it is fully reset


def _period_us(limit: RateLimit) -> int:
    return max(1, round(limit.period.total_seconds() * 1_000_000))


def script_args(limits: Sequence[RateLimit]) -> list[int]:
    """The GCRA script's ARGV for ``limits``: emission interval and period, in us."""
    args: list[int] = []
    for limit in limits:
        period = _period_us(limit)
        args += [max(1, period // limit.count), period]
    return args


def _key_suffix(endpoint: str, limit: RateLimit) -> str:
    return f":{endpoint}:{limit.count}/{limit.period.total_seconds():g}s:"


@dataclass(frozen=True)
class RoutePlan:
    """What the limiter needs for every request of one route, computed once.

    Limits, key suffixes and script arguments only change with the route, so
    a request only adds its client address. Limits with a skip or key function
    are evaluated per request instead (``static`` is False).
    """

    endpoint: str
    limits: tuple[RateLimit, ...]
    static: bool
    key_suffixes: tuple[str, ...]
    args: tuple[int, ...]

    @classmethod
    def build(cls, endpoint: str, limits: Sequence[RateLimit], static: bool) -> RoutePlan:
        return cls(
            endpoint,
            tuple(limits),
            static,
            tuple(_key_suffix(endpoint, limit) for limit in limits),
            tuple(script_args(limits)),
        )


_NO_LIMITS = RoutePlan.build("", (), static=True)


class RedisRateLimitStore(RateLimiterStoreABC):
    """Atomic GCRA decisions in Redis. The ABC's separate get/set are not offered:
    a read-then-write pair is exactly the race this store exists to avoid."""

    def __init__(self, redis: RedisClient, timeout: float | None = None) -> None:
        self.redis = redis
        self.script = BatchedScript(redis, GCRA_SCRIPT, operation="rate_limit", timeout=timeout)

    async def consume(self, keys: list[str], args: Sequence[int]) -> Decision:
        """One atomic GCRA check of ``keys`` (one per limit); ``args`` are
        :func:`script_args` of their limits."""
        reply = await self.script.run(keys, args)
        allowed, wait, refused_by, *reset = (int(value) for value in reply)
        return Decision(bool(allowed), wait, refused_by - 1 if refused_by else None, reset)

    async def get(self, key: str, default: datetime) -> datetime:
        raise NotImplementedError("non-atomic get/set is not offered; use consume()")

    async def set(self, key: str, tat: datetime) -> None:
        raise NotImplementedError("non-atomic get/set is not offered; use consume()")

    async def before_serving(self) -> None:
        """The Redis client's lifecycle belongs to RedisClient."""

    async def after_serving(self) -> None:
        """The Redis client's lifecycle belongs to RedisClient."""


class DistributedRateLimiter(RateLimiter):
    """quart-rate-limiter with one atomic store call per request and limits by route.

    Its decorators, ``QUART_RATE_LIMITER_ENABLED``, per-limit key and skip functions keep
    working; only the check changes. Only the library's public API is used: its own
    hooks are not registered (``init_app`` is ours) and the limits the decorators set
    are read through its public attribute names (tests/foundation/test_library_contracts.py).
    """

    def __init__(self, store: RedisRateLimitStore, settings: Settings) -> None:
        super().__init__(store=store, key_function=_client_key)
        self.atomic_store = store
        self.key_prefix = store.redis.key(KEY_NAMESPACE)
        self.default_limit = RateLimit(settings.rate_limit_default, _MINUTE)
        self.health_limit = RateLimit(settings.rate_limit_health, _MINUTE)
        self.metrics_limit = RateLimit(settings.rate_limit_metrics, _MINUTE)
        self._failing_open = False
        self._plans: dict[tuple[str, str | None], RoutePlan] = {}  # by rule and endpoint

    def plan_for_request(self) -> RoutePlan:
        """The route's plan, cached per URL rule; unmatched paths (404s, which any
        client can vary at will) are planned per request and never cached."""
        if request.method == "OPTIONS":
            return _NO_LIMITS
        rule = request.url_rule
        if rule is None:
            return self._plan(request.path, None)
        cache_key = (rule.rule, request.endpoint)
        plan = self._plans.get(cache_key)
        if plan is None:
            plan = self._plans[cache_key] = self._plan(rule.rule, request.endpoint)
        return plan

    def _plan(self, path: str, endpoint: str | None) -> RoutePlan:
        limits = self.limits_for_request(path, endpoint)
        static = self.skip_function is None and all(
            limit.skip_function is None and limit.key_function is None for limit in limits
        )
        return RoutePlan.build(current_endpoint(), limits, static)

    def limits_for_request(self, path: str, endpoint: str | None) -> list[RateLimit]:
        """Explicit limits of the route (decorators) win; else the limit of its path.

        ``path`` is the rule (``/health/<service>``) of a matched route, the raw path
        otherwise."""
        if path in PROBE_PATHS:
            return []
        view_func = current_app.view_functions.get(endpoint or "")
        if view_func is not None:
            if getattr(view_func, QUART_RATE_LIMITER_EXEMPT_ATTRIBUTE, False):
                return []
            explicit = _declared_limits(
                view_func, current_app.blueprints.get(request.blueprint or "")
            )
            if explicit:
                return explicit
        if path.startswith("/health/"):
            return [self.health_limit]
        if path == "/metrics":
            return [self.metrics_limit]
        return [self.default_limit]

    def init_app(self, app: Quart, enabled: bool = True) -> None:
        app.before_request(self.check_request)
        app.after_request(self.add_headers)
        app.config.setdefault("QUART_RATE_LIMITER_ENABLED", enabled)

    async def check_request(self) -> None:
        if not current_app.config["QUART_RATE_LIMITER_ENABLED"]:
            return
        plan = self.plan_for_request()
        if not plan.limits:
            return
        client = rate_limit_identity()  # the principal if authenticated, else the address
        if plan.static:
            limits: Sequence[RateLimit] = plan.limits
            prefix = f"{self.key_prefix}{{{client}}}"
            keys = [prefix + suffix for suffix in plan.key_suffixes]
            args: Sequence[int] = plan.args
        else:
            limits = [limit for limit in plan.limits if not await self._skipped(limit)]
            if not limits:
                return
            keys = [await self._limit_key(client, plan.endpoint, limit) for limit in limits]
            args = script_args(limits)
        endpoint = plan.endpoint
        try:
            decision = await self.atomic_store.consume(keys, args)
        except (BackendError, RedisError) as exc:
            self._fail_open(exc)
            return
        if self._failing_open:
            self._failing_open = False
            logger.info("rate limiting restored: redis answers again")
        if decision.refused_by is not None:
            limit = limits[decision.refused_by]
            g.rate_limit_headers = _headers(limit, decision.reset_us[decision.refused_by])
            RATE_LIMIT_HITS.labels(endpoint).inc()
            raise RateLimitExceeded(max(1, math.ceil(decision.retry_after_us / 1_000_000)))
        # The limit closest to exhaustion is the one the client must watch.
        states = zip(limits, decision.reset_us, strict=True)
        g.rate_limit_headers = min(
            (_headers(limit, reset) for limit, reset in states),
            key=lambda headers: int(headers["RateLimit-Remaining"]),
        )

    async def add_headers(self, response: Response) -> Response:
        headers = getattr(g, "rate_limit_headers", None)
        if headers:
            response.headers.update(headers)
        return response

    async def _skipped(self, limit: RateLimit) -> bool:
        skip = limit.skip_function or self.skip_function
        return skip is not None and bool(await skip())

    async def _limit_key(self, client: str, endpoint: str, limit: RateLimit) -> str:
        """``{client}`` is the hash tag: all keys of one request share a cluster slot."""
        custom = await limit.key_function() if limit.key_function is not None else ""
        return f"{self.key_prefix}{{{client}}}{_key_suffix(endpoint, limit)}{custom}"

    def _fail_open(self, exc: Exception) -> None:
        RATE_LIMIT_STORE_ERRORS.inc()
        if not self._failing_open:  # one line per outage, not one per request
            self._failing_open = True
            logger.warning(
                "rate limiting fails open: redis unavailable",
                extra={"reason": type(exc).__name__},
            )


def _declared_limits(view_func: object, blueprint: object) -> list[RateLimit]:
    """The limits quart-rate-limiter's ``rate_limit`` and ``limit_blueprint`` put on
    a view and its blueprint."""
    view: list[RateLimit] = getattr(view_func, QUART_RATE_LIMITER_LIMITS_ATTRIBUTE, [])
    shared: list[RateLimit] = getattr(blueprint, QUART_RATE_LIMITER_LIMITS_ATTRIBUTE, [])
    return [*view, *shared]


def _headers(limit: RateLimit, reset_us: int) -> dict[str, str]:
    """RateLimit-* headers: requests left now, and seconds until the limit is full again."""
    period_us = _period_us(limit)
    interval_us = max(1, period_us // limit.count)
    remaining = max(0, (period_us - reset_us) // interval_us)
    return {
        "RateLimit-Limit": str(limit.count),
        "RateLimit-Remaining": str(min(limit.count, remaining)),
        "RateLimit-Reset": str(math.ceil(reset_us / 1_000_000)),
    }


async def _client_key() -> str:
    return rate_limit_identity()


class RateLimiting:
    """Install the limiter when enabled and Redis is configured (init it after Redis).

    Without Redis there is no limiting (logged): a per-process limit would
    multiply with the replica count and mislead more than it protects.
    """

    KEY = "quartstack.rate_limiting"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limiter: DistributedRateLimiter | None = None

    def init_app(self, app: Quart) -> None:
        app.extensions[self.KEY] = self
        if not self.settings.rate_limit_enabled:
            return
        redis = app.extensions.get(RedisClient.name)
        if not isinstance(redis, RedisClient):
            logger.info("rate limiting is off: Redis is not configured")
            return
        store = RedisRateLimitStore(redis, self.settings.rate_limit_timeout_seconds)
        self.limiter = DistributedRateLimiter(store, self.settings)
        self.limiter.init_app(app)
