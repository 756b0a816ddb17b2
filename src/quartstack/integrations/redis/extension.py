"""Wire Redis into an app: the client, then the request hooks that share state through it."""

from __future__ import annotations

from quart import Quart

from quartstack.integrations.redis.client import RedisClient
from quartstack.integrations.redis.idempotency import init_idempotency
from quartstack.integrations.redis.rate_limit import init_rate_limiting
from quartstack.integrations.redis.response_cache import RESPONSE_CACHE_KEY, ResponseCache
from quartstack.settings import Settings


def init_redis(app: Quart, settings: Settings) -> RedisClient | None:
    """Create the Redis client if configured, with rate limiting, idempotency keys and
    the response cache. The limiter is installed first: a refused request must not
    claim an Idempotency-Key. Without Redis, none of the three is active."""
    redis = None
    if "redis" in settings.enabled_backends:
        redis = RedisClient(settings)
        redis.init_app(app)
    init_rate_limiting(app, settings, redis)
    if redis is not None:
        init_idempotency(app, settings, redis)
        if settings.response_cache_enabled:
            app.extensions[RESPONSE_CACHE_KEY] = ResponseCache(redis)
    return redis
