"""Shared response cache in Redis, so every replica serves the same cached answer.

``@cached_response(ttl)`` stores the rendered response (status, content type,
body) under the request path, answers ``If-None-Match`` with 304, and sets
``ETag``, ``Cache-Control`` and ``X-Cache``. A Redis failure never fails the
request: the route then answers uncached (``X-Cache: BYPASS``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar, cast

from quart import Quart, Response, current_app, request
from redis.asyncio.cluster import RedisCluster

from quartstack.integrations.redis.client import AnyRedis, RedisClient
from quartstack.metrics import CACHE_HITS, CACHE_INVALIDATIONS, CACHE_MISSES
from quartstack.resilience import BackendError
from quartstack.web.observability import current_endpoint

logger = logging.getLogger("quartstack.response_cache")

RESPONSE_CACHE_KEY = "quartstack.response_cache"
KEY_PREFIX = "quartstack:resp:"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class ResponseCache:
    """Stores rendered responses in Redis with a TTL; pattern invalidation by SCAN."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def get(self, key: str) -> tuple[dict[str, Any], int] | None:
        async def read(client: AnyRedis) -> tuple[Any, Any]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                value, pttl = await pipe.execute()
            return value, pttl

        value, pttl = await self.redis.execute("cache_get", read)
        if value is None:
            return None
        return json.loads(value), max(0, int(pttl) // 1000)

    async def put(self, key: str, entry: dict[str, Any], ttl: int) -> None:
        await self.redis.execute("cache_set", lambda c: c.set(key, json.dumps(entry), ex=ttl))

    async def invalidate(self, pattern: str) -> int:
        """Delete cached responses whose path matches the glob ``pattern``.

        SCAN, never KEYS (which blocks Redis); on a cluster every master is scanned.
        """
        match = KEY_PREFIX + pattern

        async def scan_delete(client: AnyRedis) -> int:
            deleted = 0
            if isinstance(client, RedisCluster):
                for node in client.get_primaries():
                    deleted += await _scan_delete_node(client, match, node)
                return deleted
            return await _scan_delete_node(client, match)

        deleted = await self.redis.execute("cache_invalidate", scan_delete)
        CACHE_INVALIDATIONS.labels(pattern).inc(deleted)
        return deleted


async def _scan_delete_node(client: Any, match: str, node: Any = None) -> int:
    """SCAN one node (``node`` on a cluster) and unlink what matches, batch by batch."""
    target = {"target_nodes": node} if node is not None else {}
    deleted, cursor = 0, 0
    while True:
        cursor, keys = await client.scan(cursor, match=match, count=500, **target)
        if keys:
            deleted += (
                int(await client.unlink(*keys))
                if node is None
                else sum([int(await client.unlink(key)) for key in keys])
            )
        if int(cursor) == 0:
            return deleted


def response_cache(app: Quart | None = None) -> ResponseCache | None:
    target = app if app is not None else current_app
    cache = target.extensions.get(RESPONSE_CACHE_KEY)
    return cache if isinstance(cache, ResponseCache) else None


def _cache_key() -> str:
    query = request.query_string.decode("latin-1")
    return KEY_PREFIX + request.path + (f"?{query}" if query else "")


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _respond(entry: dict[str, Any], max_age: int, state: str) -> Response:
    etag = entry["etag"]
    headers = {"ETag": etag, "Cache-Control": f"max-age={max_age}", "X-Cache": state}
    # If-None-Match uses the weak comparison (RFC 9110 13.1.2); werkzeug stores tags unquoted.
    if request.if_none_match.contains_weak(etag.strip('"')):
        return Response(b"", status=304, headers=headers)
    return Response(
        entry["body"], status=entry["status"], headers=headers, content_type=entry["content_type"]
    )


def cached_response(ttl: int, statuses: tuple[int, ...] = (200,)) -> Callable[[F], F]:
    """Cache the route's rendered response for ``ttl`` seconds (put above
    ``validate_response`` so the validated, rendered body is what gets stored)."""

    def decorate(view: F) -> F:
        @wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            cache = response_cache()
            if cache is None:
                return await view(*args, **kwargs)
            endpoint = current_endpoint()
            key = _cache_key()
            try:
                hit = await cache.get(key)
            except BackendError:
                return _mark(await current_app.make_response(await view(*args, **kwargs)), "BYPASS")
            if hit is not None:
                CACHE_HITS.labels(endpoint).inc()
                return _respond(hit[0], hit[1], "HIT")
            CACHE_MISSES.labels(endpoint).inc()
            response = cast(Response, await current_app.make_response(await view(*args, **kwargs)))
            if response.status_code not in statuses:
                return _mark(response, "MISS")
            body: bytes = await response.get_data(as_text=False)
            entry = {
                "status": response.status_code,
                "content_type": response.content_type,
                "body": body.decode(),
                "etag": _etag(body),
            }
            try:
                await cache.put(key, entry, ttl)
            except BackendError:
                logger.warning("response not cached: redis unavailable")
            return _respond(entry, ttl, "MISS")

        return cast(F, wrapper)

    return decorate


def _mark(response: Any, state: str) -> Any:
    response.headers["X-Cache"] = state
    return response
