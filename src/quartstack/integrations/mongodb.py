"""``MongoDatabase``: PyMongo's native async client behind the ``mongodb`` breaker.

PyMongo's ``AsyncMongoClient`` replaces Motor (deprecated, end of life
2026-05-14). The client owns its own connection pool and connects lazily; it
authenticates with the Vault credentials when a user is set (SCRAM against the
credential's database), and is rebuilt once with fresh credentials when the
server rejects them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from quartstack.integrations.base import Backend
from quartstack.integrations.vault.credentials import Credentials, credential_provider
from quartstack.metrics import BACKEND_POOL_CONNECTIONS

T = TypeVar("T")

logger = logging.getLogger("quartstack.mongodb")

_AUTH_FAILED = 18
_DEFAULT_DATABASE = "quartstack"


class MongoDatabase(Backend):
    name = "mongodb"
    depends_on = ("vault",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._database_name = _DEFAULT_DATABASE
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._ensure_client()  # no I/O: PyMongo connects on first use
        BACKEND_POOL_CONNECTIONS.labels(self.name, "max").set(self.settings.mongodb_pool_max)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _create(self, credentials: Credentials) -> AsyncMongoClient[dict[str, Any]]:
        settings = self.settings
        timeout_ms = int(settings.backend_timeout_seconds * 1000)
        auth: dict[str, Any] = {}
        if credentials.user:
            auth = {
                "username": credentials.user,
                "password": credentials.password,
                "authSource": credentials.database or settings.mongodb_database or "admin",
            }
        self._database_name = credentials.database or settings.mongodb_database or _DEFAULT_DATABASE
        return AsyncMongoClient(
            host=settings.mongodb_host,
            port=settings.mongodb_port,
            maxPoolSize=settings.mongodb_pool_max,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=min(timeout_ms, 2000),
            socketTimeoutMS=timeout_ms,
            appname="quartstack",
            **auth,
        )

    async def _ensure_client(self, *, fresh: bool = False) -> AsyncMongoClient[dict[str, Any]]:
        async with self._lock:
            if self._client is None or fresh:
                provider = credential_provider(self.app)
                credentials = await (provider.refresh if fresh else provider.get)(self.name)
                old, self._client = self._client, self._create(credentials)
                if old is not None:
                    await old.close()
            return self._client

    async def run(self, operation: str, func: Callable[[AsyncDatabase[Any]], Awaitable[T]]) -> T:
        """Run ``func(database)`` under the breaker and timeout (idempotent reads only:
        after an authentication failure it runs once more with fresh credentials)."""

        async def call() -> T:
            client = self._client or await self._ensure_client()
            try:
                return await func(client[self._database_name])
            except OperationFailure as exc:
                if exc.code != _AUTH_FAILED:
                    raise
                logger.warning("credentials rejected; fetching fresh ones")
                client = await self._ensure_client(fresh=True)
                return await func(client[self._database_name])

        return await self.guard.call(operation, call)

    @property
    def database_name(self) -> str:
        return self._database_name

    async def health(self) -> dict[str, Any]:
        info = await self.run("health", lambda db: db.client.admin.command("buildInfo"))
        return {"version": str(info.get("version"))}
