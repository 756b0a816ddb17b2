"""Shared response cache in Redis, so every replica serves the same cached answer.

``@cached_response(ttl)`` stores the rendered response (status, content type,
body, ETag) under the request path, answers ``If-None-Match`` with 304, and sets
``ETag``, ``Cache-Control`` and ``X-Cache: HIT|MISS``. A Redis failure never
fails the request: the route then answers uncached (a MISS), after at most
``RESPONSE_CACHE_TIMEOUT_SECONDS`` per read and write (none while the circuit is open).

The key holds only the query parameters the route documents (none, for the cached
routes today), in a canonical order: ``?x=<random>`` must neither bypass the cache
nor fill Redis with copies. Concurrent misses for one key share one run of the
route in the process (single flight): a cold ``/health/all`` hit by many clients
at once checks the backends once, not once per request.

In front of Redis sits a small in-process tier (:mod:`.local_tier`): an LRU of at most
``RESPONSE_CACHE_LOCAL_MAX_ENTRIES`` entries, each kept at most
``RESPONSE_CACHE_LOCAL_TTL_SECONDS`` and never past its Redis copy. Invalidations reach
every replica's tier through Redis pub/sub (:mod:`.invalidation`); while that
subscription is down the tier is off, so a replica never serves what another one
invalidated for longer than the local TTL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

from quart import Quart, Response

from quartstack.integrations.redis.client import AnyRedis, RedisClient, RedisDataError
from quartstack.integrations.redis.invalidation import InvalidationChannel
from quartstack.integrations.redis.local_tier import LocalTier
from quartstack.metrics import CACHE_HITS, CACHE_INVALIDATIONS, CACHE_MISSES
from quartstack.resilience import BackendError
from quartstack.settings import Settings
from quartstack.web.context import current_quart, current_request
from quartstack.web.observability import current_endpoint, route_template

logger = logging.getLogger("quartstack.response_cache")

RESPONSE_CACHE_KEY = "quartstack.response_cache"
KEY_PREFIX = "resp:"  # under REDIS_KEY_PREFIX, added by ResponseCache
CACHED_ATTRIBUTE = "_quartstack_cached_response"
_GLOB_CHARS = "*?[\\"
_SCAN_BATCH = 500

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class ResponseCache:
    """Stores rendered responses in Redis with a TTL, and briefly in memory; pattern
    invalidation by SCAN, announced to every replica."""

    def __init__(
        self, redis: RedisClient, timeout: float | None = None, local: LocalTier | None = None
    ) -> None:
        self.redis = redis
        self.timeout = timeout  # of get and put, which fail open; None: the backend's
        self.flights = SingleFlight()
        self.local = local if local is not None else LocalTier(0, 0)
        self.channel = InvalidationChannel(redis, self.local)

    async def get(self, key: str) -> tuple[dict[str, Any], float] | None:
        """The stored entry and its seconds to live (to the millisecond), or None."""
        key = self.redis.key(key)

        async def read(client: AnyRedis) -> tuple[Any, Any]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                value, pttl = await pipe.execute()
            return value, pttl

        value, pttl = await self.redis.run("cache_get", read, timeout=self.timeout)
        if value is None:
            return None
        return json.loads(value), max(0, int(pttl)) / 1000

    async def put(self, key: str, entry: dict[str, Any], ttl: int) -> None:
        stored = self.redis.key(key)
        await self.redis.run(
            "cache_set", lambda c: c.set(stored, json.dumps(entry), ex=ttl), timeout=self.timeout
        )

    async def invalidate(self, pattern: str, label: str) -> int:
        """Delete cached responses whose path matches the glob ``pattern``.

        SCAN, never KEYS (which blocks Redis while it walks every key); on a cluster
        ``scan_iter`` walks every master. ``label`` is the bounded metric label.
        """
        match = self.redis.key(KEY_PREFIX + pattern)

        async def scan_delete(client: AnyRedis) -> int:
            deleted, batch = 0, []
            async for key in client.scan_iter(match=match, count=_SCAN_BATCH):
                batch.append(key)
                if len(batch) >= _SCAN_BATCH:
                    deleted += int(await client.unlink(*batch))
                    batch.clear()
            if batch:  # the cluster client splits UNLINK by slot
                deleted += int(await client.unlink(*batch))
            return deleted

        deleted: int = await self.redis.run("cache_invalidate", scan_delete)
        # After the delete, so whoever re-reads misses in Redis too (a fill that read
        # the old value before is not kept: the generation changed).
        self.local.invalidate(KEY_PREFIX + pattern)
        await self.channel.publish(KEY_PREFIX + pattern)
        CACHE_INVALIDATIONS.labels(label).inc(deleted)
        return deleted


class ResponseCaching:
    """Keep the :class:`ResponseCache` in the app when Redis is configured and
    ``RESPONSE_CACHE_ENABLED``; the routes reach it through :func:`response_cache`."""

    KEY = "quartstack.response_caching"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def init_app(self, app: Quart) -> None:
        app.extensions[self.KEY] = self
        redis = app.extensions.get(RedisClient.name)
        if isinstance(redis, RedisClient) and self.settings.response_cache_enabled:
            local = LocalTier(
                self.settings.response_cache_local_ttl_seconds,
                self.settings.response_cache_local_max_entries,
            )
            cache = ResponseCache(redis, self.settings.response_cache_timeout_seconds, local)
            app.extensions[RESPONSE_CACHE_KEY] = cache

            @app.before_serving
            async def _subscribe() -> None:
                cache.channel.start()

            async def _unsubscribe() -> None:
                await cache.channel.stop()

            # First: the subscription ends before the Redis client closes under it.
            app.after_serving_funcs.insert(0, _unsubscribe)


def invalidation_label(app: Quart, pattern: str) -> str | None:
    """The cached route family ``pattern`` addresses (the metric label), or None.

    Labels come from the app's cached routes, not from user input, so
    ``cache_invalidations_total`` keeps a bounded set of series:
    ``/examples/vault/secret/*``, ``/health/all``, or ``*`` for several families.
    """
    literal = pattern
    for char in _GLOB_CHARS:
        literal = literal.split(char, 1)[0]
    labels = set()
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        if not getattr(view, CACHED_ATTRIBUTE, False):
            continue
        static = rule.rule.split("<", 1)[0]
        if static.startswith(literal) or literal.startswith(static):
            labels.add(static + "*" if "<" in rule.rule else route_template(rule.rule))
    if not labels:
        return None
    return labels.pop() if len(labels) == 1 else "*"


def response_cache(app: Quart | None = None) -> ResponseCache | None:
    target = app if app is not None else current_quart()
    cache = target.extensions.get(RESPONSE_CACHE_KEY)
    return cache if isinstance(cache, ResponseCache) else None


#: What a flight's leader shares: the entry and its seconds to live, or None.
Shared = tuple[dict[str, Any], float] | None


class SingleFlight:
    """Concurrent misses for one key wait for the first one's entry (in this process).

    The first caller reads Redis and, on a miss there, renders the route; the others get
    its entry, or ``None`` when it had none to share (uncacheable status, error,
    cancelled) and then fetch their own.
    """

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[Shared]] = {}

    def joined(self, key: str) -> asyncio.Future[Shared] | None:
        """The flight in progress for ``key`` to wait on, or None: the caller leads one."""
        flight = self._flights.get(key)
        if flight is None:
            self._flights[key] = asyncio.get_running_loop().create_future()
        return flight

    def land(self, key: str, shared: Shared) -> None:
        """The leader's result (``None``: nothing to share) goes to every waiter."""
        flight = self._flights.pop(key, None)
        if flight is not None and not flight.done():
            flight.set_result(shared)


class _Counters:
    """The four counter children of one endpoint, looked up once (``labels()`` locks)."""

    __slots__ = ("memory_hit", "memory_miss", "redis_hit", "redis_miss")

    def __init__(self, endpoint: str) -> None:
        self.memory_hit = CACHE_HITS.labels(endpoint, "memory")
        self.memory_miss = CACHE_MISSES.labels(endpoint, "memory")
        self.redis_hit = CACHE_HITS.labels(endpoint, "redis")
        self.redis_miss = CACHE_MISSES.labels(endpoint, "redis")


_COUNTERS: dict[str, _Counters] = {}


def _counters() -> _Counters:
    """The counters of this request's route, by rule (no template formatting per hit)."""
    rule = current_request().url_rule
    found = _COUNTERS.get(rule.rule) if rule is not None else None
    if found is None:
        found = _Counters(current_endpoint())
        if rule is not None:
            _COUNTERS[rule.rule] = found
    return found


def _canonical_query(params: tuple[str, ...]) -> str:
    """The documented query parameters of the request, sorted; others are ignored."""
    if not params:
        return ""
    args = current_request().args
    kept = sorted((name, value) for name, value in args.items(multi=True) if name in params)
    return "?" + urlencode(kept) if kept else ""


def _cache_key(query_params: tuple[str, ...] = ()) -> str:
    return KEY_PREFIX + current_request().path + _canonical_query(query_params)


async def _render(view: Callable[..., Awaitable[Any]], args: Any, kwargs: Any) -> Response:
    return cast(Response, await current_quart().make_response(await view(*args, **kwargs)))


async def _entry(response: Response) -> dict[str, Any]:
    body: bytes = await response.get_data(as_text=False)
    return {
        "status": response.status_code,
        "content_type": response.content_type,
        "body": body.decode(),
        "etag": _etag(body),
    }


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _respond(entry: dict[str, Any], cache_control: str, state: str) -> Response:
    etag = entry["etag"]
    headers = {"ETag": etag, "Cache-Control": cache_control, "X-Cache": state}
    # If-None-Match uses the weak comparison (RFC 9110 13.1.2); werkzeug stores tags unquoted.
    if current_request().if_none_match.contains_weak(etag.strip('"')):
        return Response(b"", status=304, headers=headers)
    return Response(
        entry["body"], status=entry["status"], headers=headers, content_type=entry["content_type"]
    )


async def _put(cache: ResponseCache, key: str, entry: dict[str, Any], ttl: int) -> bool:
    try:
        await cache.put(key, entry, ttl)
    except BackendError:
        logger.debug("response not cached: redis unavailable")
        return False
    return True


async def _read(cache: ResponseCache, key: str) -> tuple[Shared, bool]:
    """The shared tier's entry (or None) and whether Redis failed (then skip the put)."""
    try:
        return await cache.get(key), False
    except RedisDataError:
        return None, False  # not a value we stored: a miss, which the put overwrites
    except BackendError:
        logger.debug("response cache unavailable; answering uncached")
        return None, True  # answer uncached rather than fail


def cached_response(
    ttl: int,
    statuses: tuple[int, ...] = (200,),
    *,
    private: bool = False,
    query_params: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Cache the route's rendered response in memory and in Redis for ``ttl`` seconds.

    Put it above ``validate_response`` so the validated, rendered body is stored.
    ``private`` keeps shared HTTP caches (proxies, CDNs) from storing the answer.
    ``query_params`` names the query parameters that change the answer (the only
    ones in the key); any other query parameter is ignored.
    """
    scope = "private" if private else "public"

    def decorate(view: F) -> F:
        @wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            cache = response_cache()
            if cache is None:
                return await view(*args, **kwargs)
            counters = _counters()
            key = _cache_key(query_params)
            local = cache.local.get(key)
            if local is not None:
                counters.memory_hit.inc()
                left = int(local.shared_expires - cache.local.clock())
                return _respond(local.entry, f"{scope}, max-age={max(0, left)}", "HIT")
            if cache.local.enabled:
                counters.memory_miss.inc()
            flight = cache.flights.joined(key)
            if flight is not None:
                shared = await asyncio.shield(flight)
                if shared is not None:
                    counters.redis_hit.inc()  # fetched once, for this request too
                    return _respond(shared[0], f"{scope}, max-age={int(shared[1])}", "HIT")
                # Nothing shared: lead a new flight, or fetch alone if one already started.
                flight = cache.flights.joined(key)
            result: Shared = None
            try:
                generation = cache.local.generation  # an invalidation after it: keep no copy
                hit, redis_down = await _read(cache, key)
                if hit is not None:
                    counters.redis_hit.inc()
                    cache.local.put(key, hit[0], hit[1], generation)
                    result = hit
                    return _respond(hit[0], f"{scope}, max-age={int(hit[1])}", "HIT")
                counters.redis_miss.inc()
                response = await _render(view, args, kwargs)
                if response.status_code not in statuses:
                    response.headers["X-Cache"] = "MISS"
                    return response
                entry = await _entry(response)
                # Not after Redis just failed this request: do not wait for it twice.
                if not redis_down and await _put(cache, key, entry, ttl):
                    cache.local.put(key, entry, ttl, generation)
                result = (entry, ttl)
                return _respond(entry, f"{scope}, max-age={ttl}", "MISS")
            finally:
                if flight is None:
                    cache.flights.land(key, result)

        setattr(wrapper, CACHED_ATTRIBUTE, True)
        return cast(F, wrapper)

    return decorate
