"""``MongoDatabase``: PyMongo's native async client behind the ``mongodb`` circuit breaker.

``pymongo.AsyncMongoClient`` replaces Motor (deprecated, end of life 2026-05-14).
The client owns its connection pool (``MONGODB_POOL_MAX``). It authenticates with
the Vault credentials when they carry a user (SCRAM, against
``MONGODB_AUTH_SOURCE``, by default the credentials' database) and connects
without credentials otherwise; the client is rebuilt once with fresh credentials
when the server rejects them, like the SQL pools. Only the standard MongoDB API is
used: the tests run against nx-27017 (a wire-protocol stand-in, as no mongod can be
installed on our machines), production against a real MongoDB.

PyMongo waits for a reachable server for ``serverSelectionTimeoutMS`` instead of
failing, so that wait is kept below the backend timeout, and its outcome is
classified: a server that accepted connections but never answered is a timeout
(504), anything else (refused, reset) is unavailable (503).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)
from pymongo.monitoring import (
    ConnectionCheckedInEvent,
    ConnectionCheckedOutEvent,
    ConnectionCheckOutFailedEvent,
    ConnectionCheckOutStartedEvent,
    ConnectionClosedEvent,
    ConnectionCreatedEvent,
    ConnectionPoolListener,
    ConnectionReadyEvent,
    PoolClearedEvent,
    PoolClosedEvent,
    PoolCreatedEvent,
    PoolReadyEvent,
)

from quartstack.integrations.pooled import PooledBackend
from quartstack.integrations.vault.credentials import Credentials
from quartstack.resilience import BackendTimeout

SERVICE = "mongodb"
DEFAULT_DATABASE = "quartstack"

Document = dict[str, Any]

_AUTHENTICATION_FAILED = 18  # MongoDB's error code for rejected credentials


class LoginRejected(Exception):
    """A call failed because the server had just rejected this client's login."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} rejected the login")


class ConnectionCounter(ConnectionPoolListener):
    """Counts open and checked-out connections from PyMongo's pool events (the
    driver has no public pool statistics)."""

    def __init__(self) -> None:
        self.open = 0
        self.in_use = 0

    def connection_created(self, event: ConnectionCreatedEvent) -> None:
        self.open += 1

    def connection_closed(self, event: ConnectionClosedEvent) -> None:
        self.open = max(0, self.open - 1)

    def connection_checked_out(self, event: ConnectionCheckedOutEvent) -> None:
        self.in_use += 1

    def connection_checked_in(self, event: ConnectionCheckedInEvent) -> None:
        self.in_use = max(0, self.in_use - 1)

    def pool_created(self, event: PoolCreatedEvent) -> None: ...
    def pool_ready(self, event: PoolReadyEvent) -> None: ...
    def pool_cleared(self, event: PoolClearedEvent) -> None: ...
    def pool_closed(self, event: PoolClosedEvent) -> None: ...
    def connection_ready(self, event: ConnectionReadyEvent) -> None: ...
    def connection_check_out_started(self, event: ConnectionCheckOutStartedEvent) -> None: ...
    def connection_check_out_failed(self, event: ConnectionCheckOutFailedEvent) -> None: ...


@dataclass(frozen=True)
class MongoPool:
    """One client (with its pool), the database the app uses, and its connection counts."""

    client: AsyncMongoClient[Document]
    database: str
    connections: ConnectionCounter


class MongoDatabase(PooledBackend[MongoPool, AsyncDatabase[Document]]):
    """The app's MongoDB database: queries, health (server version)."""

    name = SERVICE

    @property
    def max_connections(self) -> int:
        return self.settings.mongodb_pool_max

    async def _create(self, credentials: Credentials) -> MongoPool:
        settings = self.settings
        timeout_ms = settings.backend_timeout_seconds * 1000
        database = credentials.database or settings.mongodb_database or DEFAULT_DATABASE
        auth: dict[str, Any] = {}
        if credentials.user:
            auth = {
                "username": credentials.user,
                "password": credentials.password or "",
                "authSource": settings.mongodb_auth_source or database,
            }
        # PyMongo re-checks a server every 0.5 s while selecting one, so its wait can
        # overrun by that much: it must end before the guard's timeout does.
        selection_ms = max(timeout_ms - 600, 200)
        connections = ConnectionCounter()
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            host=settings.mongodb_host,
            port=settings.mongodb_port,
            maxPoolSize=settings.mongodb_pool_max,
            serverSelectionTimeoutMS=int(selection_ms),
            connectTimeoutMS=int(min(selection_ms / 2, 2000)),
            socketTimeoutMS=int(timeout_ms),
            appname="quartstack",
            event_listeners=[connections],
            **auth,
        )
        pool = MongoPool(client, database, connections)
        try:
            async with self._connection(pool):
                await client.admin.command("ping")  # checks out a connection: authenticates
        except BaseException:
            await client.close()
            raise
        return pool

    @asynccontextmanager
    async def _borrow(self, pool: MongoPool) -> AsyncIterator[AsyncDatabase[Document]]:
        try:
            yield pool.client[pool.database]
        except AutoReconnect as exc:
            errors = [
                server.error
                for server in pool.client.topology_description.server_descriptions().values()
            ]
            # A rejected login marks the server unknown and clears the pool, so calls
            # running alongside fail with connection errors: same cause, same remedy.
            if any(self._is_auth_error(error) for error in errors if error is not None):
                raise LoginRejected(self.name) from exc
            # The server accepted connections and then said nothing: a hung server.
            if isinstance(exc, ServerSelectionTimeoutError) and any(
                isinstance(error, NetworkTimeout) for error in errors
            ):
                raise BackendTimeout(self.name, self.settings.backend_timeout_seconds) from exc
            raise

    def _connection(self, pool: MongoPool) -> AbstractAsyncContextManager[AsyncDatabase[Document]]:
        return self._borrow(pool)

    async def _close(self, pool: MongoPool) -> None:
        await pool.client.close()

    async def _terminate(self, pool: MongoPool) -> None:
        await pool.client.close()

    def _is_auth_error(self, exc: BaseException) -> bool:
        if isinstance(exc, LoginRejected):
            return True
        return isinstance(exc, OperationFailure) and exc.code == _AUTHENTICATION_FAILED

    def is_transient(self, exc: Exception) -> bool:
        # A dropped connection, not a timeout (server selection or a network timeout
        # have spent the budget already).
        return super().is_transient(exc) or (
            isinstance(exc, AutoReconnect)
            and not isinstance(exc, (NetworkTimeout, ServerSelectionTimeoutError))
        )

    def _pool_usage(self, pool: MongoPool) -> tuple[int, int]:
        counts = pool.connections
        return counts.in_use, max(0, counts.open - counts.in_use)

    async def collection_names(self) -> list[str]:
        names = await self.run(
            "list_collections", lambda db: db.list_collection_names(), idempotent=True
        )
        return sorted(names)

    async def health(self) -> dict[str, Any]:
        info = await self.run(
            "health", lambda db: db.client.admin.command("buildInfo"), idempotent=True
        )
        return {"version": str(info.get("version"))}
