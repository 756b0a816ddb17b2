"""``RedisClient``: one Redis (standalone or Cluster) behind a circuit breaker.

Standalone Redis uses ``redis.asyncio.Redis``; when ``REDIS_NODES`` lists several
nodes, or the one configured node reports cluster mode, ``RedisCluster`` is used
so keys are routed by slot and failovers are followed. Timeouts and retries are
set explicitly: the library defaults (no socket timeout) would let a hung node
hold a request forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.retry import Retry

from quartstack.integrations.base import Backend
from quartstack.integrations.vault.credentials import credential_provider
from quartstack.metrics import BACKEND_POOL_CONNECTIONS
from quartstack.resilience import BackendUnavailable
from quartstack.settings import Settings

T = TypeVar("T")

logger = logging.getLogger("quartstack.redis")

AnyRedis = Redis | RedisCluster
_RAW_COMMANDS = ("CLUSTER NODES", "CLUSTER SLOTS", "CLUSTER INFO")


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
        name, _, address = entry.rpartition("=")
        host, _, port = address.rpartition(":")
        nodes.append(RedisNode(name or f"redis-{index}", host, int(port)))
    if not nodes and settings.redis_host:
        nodes.append(RedisNode("redis-1", settings.redis_host, settings.redis_port))
    return nodes


class RedisClient(Backend):
    """The app's Redis: data commands, cluster introspection, health."""

    name = "redis"
    depends_on = ("vault",)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.nodes = parse_nodes(settings)
        self._client: AnyRedis | None = None
        self._node_clients: dict[str, Redis] = {}
        self._password: str | None = None
        self._connect_lock = asyncio.Lock()

    @property
    def is_cluster(self) -> bool:
        return isinstance(self._client, RedisCluster)

    def ignored_exceptions(self) -> tuple[type[BaseException], ...]:
        # A command error (wrong type, bad script) means Redis answered.
        return (ResponseError,)

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.guard.call("connect", self._connect)
        except BackendUnavailable as exc:
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

    def _options(self) -> dict[str, Any]:
        timeout = self.settings.backend_timeout_seconds
        return {
            "password": self._password,
            "socket_timeout": timeout,
            "socket_connect_timeout": min(timeout, 2.0),
            "retry": Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.02), retries=2),
            "health_check_interval": 30,
            "max_connections": self.settings.redis_pool_max,
            "decode_responses": True,
        }

    async def _connect(self) -> AnyRedis:
        async with self._connect_lock:
            if self._client is not None:
                return self._client
            if not self.nodes:
                raise BackendUnavailable("redis", "no redis node is configured")
            self._password = (await credential_provider(self.app).get("redis")).password
            options = self._options()
            first = self.nodes[0]
            client: AnyRedis
            if len(self.nodes) > 1 or await self._reports_cluster(first):
                client = RedisCluster(
                    startup_nodes=[ClusterNode(n.host, n.port) for n in self.nodes],
                    require_full_coverage=False,
                    **options,
                )
                await client.initialize()
            else:
                client = Redis(host=first.host, port=first.port, **options)
                await client.ping()  # type: ignore[misc]
            self._client = client
            logger.info(
                "redis connected", extra={"cluster": self.is_cluster, "nodes": len(self.nodes)}
            )
            return client

    async def _reports_cluster(self, node: RedisNode) -> bool:
        info = await self.node_client(node).info("cluster")
        return bool(info.get("cluster_enabled"))

    def node_client(self, node: RedisNode) -> Redis:
        """A plain connection to one node, for INFO and cluster introspection."""
        client = self._node_clients.get(node.name)
        if client is None:
            options = self._options()
            options["max_connections"] = 4
            client = Redis(host=node.host, port=node.port, **options)
            for command in _RAW_COMMANDS:
                client.set_response_callback(command, _raw)
            self._node_clients[node.name] = client
        return client

    # --- calls -----------------------------------------------------------------------
    async def execute(self, operation: str, func: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``func(client)`` with the breaker and timeout; reconnect after an auth
        failure with fresh credentials (the password was rotated in Vault)."""

        async def call() -> T:
            client = self._client or await self._connect()
            try:
                result = await func(client)
            except AuthenticationError:
                await self._reset_after_auth_failure()
                result = await func(await self._connect())
            self._observe_pool()
            return result

        return await self.guard.call(operation, call)

    async def on_node(
        self, node: RedisNode, operation: str, func: Callable[[Redis], Awaitable[T]]
    ) -> T:
        """Run ``func`` on one node's own connection (not through cluster routing)."""
        if self._password is None and self._client is None:
            await self.guard.call("connect", self._connect)
        return await self.guard.call(operation, lambda: func(self.node_client(node)))

    async def _reset_after_auth_failure(self) -> None:
        old, self._client = self._client, None
        await credential_provider(self.app).refresh("redis")
        for client in list(self._node_clients.values()):
            await client.aclose()
        self._node_clients.clear()
        if old is not None:
            await old.aclose()

    def _observe_pool(self) -> None:
        client = self._client
        if isinstance(client, Redis):
            pool = client.connection_pool
            in_use = len(getattr(pool, "_in_use_connections", ()))
            idle = len(getattr(pool, "_available_connections", ()))
            BACKEND_POOL_CONNECTIONS.labels("redis", "in_use").set(in_use)
            BACKEND_POOL_CONNECTIONS.labels("redis", "idle").set(idle)
        BACKEND_POOL_CONNECTIONS.labels("redis", "max").set(self.settings.redis_pool_max)

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
        from quartstack.integrations.redis.cluster import parse_info_text

        raw = await self._first_node("cluster_info", lambda c: c.execute_command("CLUSTER INFO"))
        return parse_info_text(str(raw))

    async def _first_node(self, operation: str, func: Callable[[Any], Awaitable[T]]) -> T:
        """Ask the first configured node that answers (a node may be down)."""
        last: Exception | None = None
        for node in self.nodes:
            try:
                return await self.on_node(node, operation, func)
            except BackendUnavailable as exc:
                last = exc
        raise last or BackendUnavailable("redis", "no redis node answered")

    async def cluster_command(self, command: str) -> str:
        raw = await self._first_node(
            command.lower().replace(" ", "_"), lambda c: c.execute_command(command)
        )
        return raw if isinstance(raw, str) else str(raw)

    async def cluster_slots_raw(self) -> list[Any]:
        raw = await self._first_node("cluster_slots", lambda c: c.execute_command("CLUSTER SLOTS"))
        return list(raw)


def _raw(response: Any, **_options: Any) -> Any:
    return response
