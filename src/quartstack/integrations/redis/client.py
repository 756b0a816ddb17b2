"""``RedisClient``: one Redis (standalone or Cluster) behind a circuit breaker.

Standalone Redis uses ``redis.asyncio.Redis``; when ``REDIS_NODES`` lists several
nodes, or the one configured node reports cluster mode, ``RedisCluster`` is used
so keys are routed by slot and failovers are followed. Timeouts, retries and the
pool are set explicitly: the library defaults (no socket timeout, a pool that
raises instead of waiting) would let a hung node hold a request forever and turn
a burst of requests into errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from quart import Quart
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ClusterError,
    DataError,
    MaxConnectionsError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from quartstack.integrations.base import Backend
from quartstack.integrations.pooled import PoolGeneration
from quartstack.integrations.redis.cluster import parse_info_text
from quartstack.integrations.redis.waiting_cluster import WaitingRedisCluster
from quartstack.integrations.vault.credentials import credential_provider
from quartstack.metrics import BACKEND_POOL_CONNECTIONS
from quartstack.resilience import BackendError, BackendGuard, BackendUnavailable
from quartstack.settings import Settings, parse_redis_node

T = TypeVar("T")

logger = logging.getLogger("quartstack.redis")

AnyRedis = Redis | RedisCluster
#: How long a client replaced after a rotation may serve its last calls before closing.
RETIRE_TIMEOUT = 30.0
_RAW_COMMANDS = ("CLUSTER NODES", "CLUSTER SLOTS", "CLUSTER INFO")

#: Error replies that mean "Redis cannot serve this now" (cluster down or resharding,
#: a demoted master after failover, out of memory, ACL): backend failures, unlike
#: replies about the command itself (WRONGTYPE), which prove Redis is fine.
NOT_SERVING = (
    ClusterError,
    TryAgainError,
    ReadOnlyError,
    AskError,
    OutOfMemoryError,
    NoPermissionError,
    AuthenticationWrongNumberOfArgsError,
)


class RedisNotServing(Exception):
    """Redis answered with an error that means it cannot serve now; counts as a failure."""


class RedisPoolExhausted(BackendUnavailable):
    """Every pooled connection is busy: our overload, not a Redis failure, so it
    leaves the circuit breaker as it was (503 with Retry-After)."""

    def __init__(self) -> None:
        super().__init__("redis", "redis: every pooled connection is busy", retry_after=1)


class WaitingConnectionPool(BlockingConnectionPool):
    """Waits for a free connection; a wait that runs out is our own overload, raised as
    ``MaxConnectionsError`` (neutral for the breaker), not as the ``ConnectionError``
    redis-py raises, which would count as Redis failing."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisConnectionError as exc:
            if isinstance(exc.__cause__, asyncio.TimeoutError):
                raise MaxConnectionsError("no pooled connection became free") from exc
            raise


class RedisDataError(BackendError):
    """A value Redis returned does not decode (not UTF-8, not what we stored): the data
    is at fault, not Redis, so it leaves the breaker as it was. Callers that read their
    own keys treat it like a miss; anywhere else it is a 409 problem, never a 500."""

    status = 409
    kind = "undecodable-value"

    def __init__(self) -> None:
        super().__init__("redis", "redis holds a value that cannot be decoded")


@dataclass(frozen=True)
class RedisNode:
    """A configured node: ``name`` as users address it in ``/redis/nodes/{name}``."""

    name: str
    host: str
    port: int


def parse_nodes(settings: Settings) -> list[RedisNode]:
    """``REDIS_NODES`` (``host:port`` or ``name=host:port``), else ``REDIS_HOST``."""
    nodes = []
    for index, entry in enumerate(settings.redis_nodes, 1):
        nodes.append(RedisNode(*parse_redis_node(entry, index)))
    if not nodes and settings.redis_host:
        nodes.append(RedisNode("redis-1", settings.redis_host, settings.redis_port))
    return nodes


async def _classified(call: Awaitable[T]) -> T:
    """Await a redis-py call, sorting its errors for the circuit breaker."""
    try:
        return await call
    except MaxConnectionsError as exc:
        raise RedisPoolExhausted() from exc
    except (UnicodeDecodeError, DataError) as exc:
        raise RedisDataError() from exc
    except NOT_SERVING as exc:
        raise RedisNotServing(type(exc).__name__) from exc


class RedisClient(Backend):
    """The app's Redis: data commands, cluster introspection, health."""

    name = "redis"
    depends_on = ("vault",)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.nodes = parse_nodes(settings)
        self._current: PoolGeneration[AnyRedis] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._node_clients: dict[str, Redis] = {}
        # One breaker per node for per-node introspection: a node that is down after a
        # failover (the cluster still serves) must not open the circuit of all traffic.
        self._node_guards = {
            node.name: BackendGuard(
                f"redis:{node.name}",
                timeout=settings.backend_timeout_seconds,
                failure_threshold=settings.circuit_failure_threshold,
                recovery_timeout=settings.circuit_recovery_seconds,
                neutral=self.neutral_exceptions(),
            )
            for node in self.nodes
        }
        self._password: str | None = None
        self._username: str | None = None
        self._connect_lock = asyncio.Lock()

    def key(self, name: str) -> str:
        """``name`` under ``REDIS_KEY_PREFIX``: every key the service writes goes through
        here, so deployments sharing one Redis never read each other's state."""
        return f"{self.settings.redis_key_prefix}:{name}"

    @property
    def _client(self) -> AnyRedis | None:
        return self._current.pool if self._current is not None else None

    @property
    def connected(self) -> bool:
        """A data client exists (credentials and mode are known)."""
        return self._client is not None

    @property
    def is_cluster(self) -> bool:
        return isinstance(self._client, RedisCluster)

    def neutral_exceptions(self) -> tuple[type[BaseException], ...]:
        # Caused by the request or the data, never by Redis failing: a reply about the
        # command (WRONGTYPE, a bad script; the transient error replies were turned into
        # RedisNotServing before this), a value that does not decode, our own pool being
        # full under load. Counting them would let a client open the circuit at will,
        # and an open circuit switches off rate limiting.
        return (ResponseError, RedisDataError, RedisPoolExhausted)

    # --- lifecycle -------------------------------------------------------------------
    def init_app(self, app: Quart) -> None:
        super().init_app(app)
        # Read at scrape time, like the database pools: no work on the call path.
        for index, state in enumerate(("in_use", "idle", "max")):
            BACKEND_POOL_CONNECTIONS.labels(self.name, state).set_function(
                functools.partial(self._pool_size, index)
            )

    def _pool_size(self, index: int) -> float:
        with contextlib.suppress(Exception):  # a scrape must not fail mid-reconnect
            return float(self.pool_sizes()[index])
        return 0.0

    async def start(self) -> None:
        await self.connect_or_degrade(
            self._connect, "redis unavailable at startup; will connect on first use"
        )

    async def stop(self) -> None:
        clients: list[AnyRedis] = list(self._node_clients.values())
        if self._client is not None:
            clients.append(self._client)
        self._current = None
        self._node_clients = {}
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
        for task in self._retiring:  # the requests are over: close retired clients now
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    def _options(self, retries: int = 2) -> dict[str, Any]:
        """Connection options shared by the data client and the per-node clients."""
        timeout = self.settings.backend_timeout_seconds
        return {
            "username": self._username,
            "password": self._password,
            "socket_timeout": timeout,
            "socket_connect_timeout": min(timeout, 2.0),
            "socket_keepalive": True,
            "retry": Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.02), retries=retries),
            "health_check_interval": 30,
            "decode_responses": True,
            "client_name": "quartstack",
            # RESP2 on every redis-py major: redis-py 8 speaks RESP3 by default (HELLO),
            # which changes reply shapes our code and scripts read.
            "protocol": 2,
        }

    @property
    def _pool_wait_seconds(self) -> float:
        """How long a call waits for a free connection: less than the call's own timeout,
        so a long wait is reported as the pool being full (neutral), not as Redis timing
        out (a failure)."""
        return self.settings.backend_timeout_seconds * 0.8

    def _standalone(self, node: RedisNode, *, max_connections: int, retries: int = 2) -> Redis:
        """A client for one node whose pool waits (up to the timeout) for a free
        connection instead of failing at once when all are busy."""
        pool = WaitingConnectionPool(
            host=node.host,
            port=node.port,
            max_connections=max_connections,
            timeout=self._pool_wait_seconds,
            **self._options(retries=retries),
        )
        return Redis.from_pool(pool)

    async def _connect(self) -> PoolGeneration[AnyRedis]:
        async with self._connect_lock:
            if self._current is None:
                self._current = await self._open()
            return self._current

    async def _open(self) -> PoolGeneration[AnyRedis]:
        """Build the data client with the credentials Vault has now and prove it works."""
        if not self.nodes:
            raise BackendUnavailable("redis", "no redis node is configured")
        credentials = await credential_provider(self.app).get("redis")
        self._username, self._password = credentials.user, credentials.password
        first = self.nodes[0]
        client: AnyRedis
        connect: Awaitable[Any]
        if len(self.nodes) > 1 or await self._reports_cluster(first):
            client = WaitingRedisCluster(
                startup_nodes=[ClusterNode(n.host, n.port) for n in self.nodes],
                require_full_coverage=False,
                max_connections=self.settings.redis_pool_max,
                wait_seconds=self._pool_wait_seconds,
                **self._options(),
            )
            connect = client.initialize()
        else:
            client = self._standalone(first, max_connections=self.settings.redis_pool_max)
            connect = cast("Awaitable[Any]", client.ping())  # redis-py 7: bool | Awaitable
        try:
            await connect
        except BaseException:
            await client.aclose()
            raise
        cluster = isinstance(client, RedisCluster)
        logger.info("redis connected", extra={"cluster": cluster, "nodes": len(self.nodes)})
        return PoolGeneration(client)

    async def _reports_cluster(self, node: RedisNode) -> bool:
        info = await self.node_client(node).info("cluster")
        return bool(info.get("cluster_enabled"))

    def node_client(self, node: RedisNode) -> Redis:
        """A small connection pool to one node, for INFO and cluster introspection."""
        client = self._node_clients.get(node.name)
        if client is None:
            client = self._standalone(node, max_connections=4, retries=1)
            for command in _RAW_COMMANDS:
                client.set_response_callback(command, _raw)
            self._node_clients[node.name] = client
        return client

    def subscription_client(self, attempt: int) -> Redis:
        """A client of its own for one pub/sub subscription, on configured node number
        ``attempt`` (round robin: a dead node is skipped on the next attempt), with the
        credentials of the data client. No retries: a reconnect inside redis-py would
        hide the gap in which messages were lost; the caller closes it."""
        node = self.nodes[attempt % len(self.nodes)]
        return self._standalone(node, max_connections=1, retries=0)

    # --- calls -----------------------------------------------------------------------
    async def run(
        self, operation: str, func: Callable[[Any], Awaitable[T]], *, timeout: float | None = None
    ) -> T:
        """Run ``func(client)`` with the breaker and timeout; reconnect once after an
        authentication failure with fresh credentials (the password was rotated in Vault).

        ``timeout`` (default ``BACKEND_TIMEOUT_SECONDS``) bounds everything, connecting
        included: the callers that fail open (limiter, response cache, idempotency) pass
        their own short one, so a silent Redis costs them tens of milliseconds, and once
        those timeouts have opened the circuit they skip Redis at once (CircuitOpen)."""

        async def call() -> T:
            generation = self._current or await self._connect()
            try:
                return await self._use(generation, func)
            except AuthenticationError:
                return await self._use(await self._rebuild(generation), func)

        return await self.guard.call(operation, call, timeout=timeout)

    @staticmethod
    async def _use(generation: PoolGeneration[AnyRedis], func: Callable[[Any], Awaitable[T]]) -> T:
        generation.enter()
        try:
            return await _classified(func(generation.pool))
        finally:
            generation.leave()

    async def ensure_connected(self) -> None:
        """Connect now if not yet connected (then ``is_cluster`` is known)."""
        if self._client is None:
            await self.guard.call("connect", self._connect)

    async def on_node(
        self, node: RedisNode, operation: str, func: Callable[[Redis], Awaitable[T]]
    ) -> T:
        """Run ``func`` on one node's own connection (not through cluster routing),
        under that node's own breaker."""
        await self.ensure_connected()  # learns the credentials and the mode
        return await self._node_guards[node.name].call(
            operation, lambda: _classified(func(self.node_client(node)))
        )

    async def _rebuild(self, stale: PoolGeneration[AnyRedis]) -> PoolGeneration[AnyRedis]:
        """Replace ``stale`` after Redis rejected its credentials: once, however many
        requests noticed at the same time (as the SQL pools do). The stale client and the
        node clients of its credentials close once the calls still using them finish."""
        async with self._connect_lock:
            current = self._current
            if current is not None and current is not stale:
                return current  # another request rebuilt it already
            logger.warning("redis rejected the credentials; reconnecting with fresh ones")
            await credential_provider(self.app).refresh("redis")
            old_nodes, self._node_clients = list(self._node_clients.values()), {}
            self._current = await self._open()
        if current is stale:
            task = asyncio.create_task(self._retire(stale, old_nodes), name="redis-retire")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return self._current

    @staticmethod
    async def _retire(stale: PoolGeneration[AnyRedis], nodes: list[Redis]) -> None:
        """Close ``stale`` once its calls finished (at most RETIRE_TIMEOUT; at once when
        cancelled by ``stop``)."""
        try:
            async with asyncio.timeout(RETIRE_TIMEOUT):
                await stale.drained.wait()
        except TimeoutError:
            pass
        finally:
            clients: list[AnyRedis] = [stale.pool, *nodes]
            await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)

    def pool_sizes(self) -> tuple[int, int, int]:
        """(in use, idle, max) connections of the data client's pool(s)."""
        client = self._client
        in_use = idle = 0
        if isinstance(client, Redis):
            pool = client.connection_pool
            in_use = len(getattr(pool, "_in_use_connections", ()))
            idle = len(getattr(pool, "_available_connections", ()))
        elif isinstance(client, RedisCluster):
            for node in client.get_nodes():
                opened = len(getattr(node, "_connections", ()))
                free = len(getattr(node, "_free", ()))
                in_use += opened - free
                idle += free
        return in_use, idle, self.settings.redis_pool_max

    # --- health ----------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        await self.run("ping", lambda c: c.ping())
        nodes = await asyncio.gather(*(self._node_status(n) for n in self.nodes))
        body: dict[str, Any] = {
            "cluster_enabled": self.is_cluster,
            "cluster_state": None,
            "total_nodes": len(self.nodes),
            "nodes": nodes,
        }
        if self.is_cluster:
            info = await self.cluster_info()
            body["cluster_state"] = info.get("cluster_state")
            if info.get("cluster_state") != "ok":
                raise BackendUnavailable("redis", "redis cluster_state is not ok")
        return body

    async def _node_status(self, node: RedisNode) -> dict[str, Any]:
        """One node's role and status. Not through a breaker: a probe that reports a
        dead node must neither fail the check nor trip any circuit."""
        entry: dict[str, Any] = {"name": node.name, "host": node.host, "port": node.port}
        try:
            info = await asyncio.wait_for(
                self.node_client(node).info(), self.settings.health_timeout_seconds
            )
        except Exception as exc:  # one dead node is reported, not raised
            entry.update(status="unhealthy", error=type(exc).__name__)
        else:
            entry.update(
                status="healthy",
                role=info.get("role"),
                version=info.get("redis_version"),
                connected_clients=info.get("connected_clients"),
                used_memory_human=info.get("used_memory_human"),
            )
        return entry

    async def cluster_info(self) -> dict[str, Any]:
        return parse_info_text(await self.cluster_command("CLUSTER INFO"))

    async def _first_node(self, operation: str, func: Callable[[Any], Awaitable[T]]) -> T:
        """Ask the configured nodes in order until one answers (a node may be down)."""
        last: BackendError | None = None
        for node in self.nodes:
            try:
                return await self.on_node(node, operation, func)
            except BackendError as exc:
                last = exc
        raise last or BackendUnavailable("redis", "no redis node answered")

    async def cluster_command(self, command: str) -> str:
        """The raw text reply of ``CLUSTER NODES`` or ``CLUSTER INFO``."""
        raw = await self._first_node(
            command.lower().replace(" ", "_"), lambda c: c.execute_command(command)
        )
        return raw if isinstance(raw, str) else str(raw)

    async def cluster_slots_raw(self) -> list[Any]:
        raw = await self._first_node("cluster_slots", lambda c: c.execute_command("CLUSTER SLOTS"))
        return list(raw)


def _raw(response: Any, **_options: Any) -> Any:
    return response
