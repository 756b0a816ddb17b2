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
    MaxConnectionsError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from quartstack.integrations.base import Backend
from quartstack.integrations.redis.cluster import parse_info_text
from quartstack.integrations.vault.credentials import credential_provider
from quartstack.metrics import BACKEND_POOL_CONNECTIONS
from quartstack.resilience import BackendError, BackendGuard, BackendUnavailable
from quartstack.settings import Settings, parse_redis_node

T = TypeVar("T")

logger = logging.getLogger("quartstack.redis")

AnyRedis = Redis | RedisCluster
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
    """Every pooled connection is busy: our overload, not a Redis failure, so the
    circuit breaker ignores it (503 with Retry-After)."""

    def __init__(self) -> None:
        super().__init__("redis", "redis: every pooled connection is busy", retry_after=1)


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
    except NOT_SERVING as exc:
        raise RedisNotServing(type(exc).__name__) from exc


class RedisClient(Backend):
    """The app's Redis: data commands, cluster introspection, health."""

    name = "redis"
    depends_on = ("vault",)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.nodes = parse_nodes(settings)
        self._client: AnyRedis | None = None
        self._node_clients: dict[str, Redis] = {}
        # One breaker per node for per-node introspection: a node that is down after a
        # failover (the cluster still serves) must not open the circuit of all traffic.
        self._node_guards = {
            node.name: BackendGuard(
                f"redis:{node.name}",
                timeout=settings.backend_timeout_seconds,
                failure_threshold=settings.circuit_failure_threshold,
                recovery_timeout=settings.circuit_recovery_seconds,
                ignored=self.ignored_exceptions(),
            )
            for node in self.nodes
        }
        self._password: str | None = None
        self._username: str | None = None
        self._connect_lock = asyncio.Lock()

    @property
    def is_cluster(self) -> bool:
        return isinstance(self._client, RedisCluster)

    def ignored_exceptions(self) -> tuple[type[BaseException], ...]:
        # A reply about the command (wrong type, bad script) means Redis answered;
        # the transient error replies were turned into RedisNotServing before this.
        return (ResponseError, RedisPoolExhausted)

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
        try:
            await self.guard.call("connect", self._connect)
        except BackendError as exc:
            logger.warning(
                "redis unavailable at startup; will connect on first use",
                extra={"reason": str(exc)},
            )

    async def stop(self) -> None:
        clients: list[AnyRedis] = list(self._node_clients.values())
        if self._client is not None:
            clients.append(self._client)
        self._client = None
        self._node_clients.clear()
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)

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
        }

    def _standalone(self, node: RedisNode, *, max_connections: int, retries: int = 2) -> Redis:
        """A client for one node whose pool waits (up to the timeout) for a free
        connection instead of failing at once when all are busy."""
        pool = BlockingConnectionPool(
            host=node.host,
            port=node.port,
            max_connections=max_connections,
            timeout=self.settings.backend_timeout_seconds,
            **self._options(retries=retries),
        )
        return Redis.from_pool(pool)

    async def _connect(self) -> AnyRedis:
        async with self._connect_lock:
            if self._client is not None:
                return self._client
            if not self.nodes:
                raise BackendUnavailable("redis", "no redis node is configured")
            credentials = await credential_provider(self.app).get("redis")
            self._username, self._password = credentials.user, credentials.password
            first = self.nodes[0]
            client: AnyRedis
            connect: Awaitable[Any]
            if len(self.nodes) > 1 or await self._reports_cluster(first):
                client = RedisCluster(
                    startup_nodes=[ClusterNode(n.host, n.port) for n in self.nodes],
                    require_full_coverage=False,
                    max_connections=self.settings.redis_pool_max,
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
            self._client = client
            logger.info(
                "redis connected", extra={"cluster": self.is_cluster, "nodes": len(self.nodes)}
            )
            return client

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

    # --- calls -----------------------------------------------------------------------
    async def execute(self, operation: str, func: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``func(client)`` with the breaker and timeout; reconnect once after an
        authentication failure with fresh credentials (the password was rotated in Vault)."""

        async def call() -> T:
            try:
                client = self._client or await self._connect()
                result = await _classified(func(client))
            except AuthenticationError:
                await self._reset_after_auth_failure()
                result = await _classified(func(await self._connect()))
            return result

        return await self.guard.call(operation, call)

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

    async def _reset_after_auth_failure(self) -> None:
        old, self._client = self._client, None
        await credential_provider(self.app).refresh("redis")
        for client in list(self._node_clients.values()):
            await client.aclose()
        self._node_clients.clear()
        if old is not None:
            await old.aclose()

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
        await self.execute("ping", lambda c: c.ping())
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
                self.node_client(node).info("replication"),
                self.settings.health_timeout_seconds,
            )
        except Exception as exc:  # one dead node is reported, not raised
            entry.update(status="unhealthy", error=type(exc).__name__)
        else:
            entry.update(status="healthy", role=info.get("role"))
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
