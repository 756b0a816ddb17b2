"""Helpers for the signup tests: SQL on the test database, events received, polling."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from tests.support.databases import PostgresDatabase
from tests.support.polling import wait_until


async def sql(db: PostgresDatabase, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run ``query`` as the database's owner on its own connection."""
    connection = await asyncpg.connect(
        host=db.db.host, port=db.db.port, user=db.db.user, database=db.db.database
    )
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` s (never sleep and assume)."""
    await wait_until(condition, timeout=timeout, interval=0.05)


class Received:
    """Every message a test queue got, acknowledged, with their event ids."""

    def __init__(self, queue: AbstractQueue) -> None:
        self.queue = queue
        self.messages: list[AbstractIncomingMessage] = []

    async def drain(self) -> None:
        while (message := await self.queue.get(fail=False, no_ack=False)) is not None:
            await message.ack()
            self.messages.append(message)

    def ids(self, of: set[str] | None = None) -> list[str]:
        ids = [str(m.message_id) for m in self.messages]
        return ids if of is None else [i for i in ids if i in of]

    async def wait_for(self, expected: set[str], timeout: float = 60.0) -> None:
        async def all_there() -> bool:
            await self.drain()
            return expected <= set(self.ids())

        await until(all_there, timeout)

    def body(self, event_id: str) -> dict[str, Any]:
        for message in self.messages:
            if message.message_id == event_id:
                body: dict[str, Any] = json.loads(message.body)
                return body
        raise KeyError(event_id)


async def event_ids(db: PostgresDatabase, user_ids: list[str]) -> set[str]:
    rows = await sql(
        db,
        "SELECT event_id FROM outbox WHERE aggregate_id = ANY($1::uuid[])",
        [uuid.UUID(u) for u in user_ids],
    )
    return {str(r["event_id"]) for r in rows}


def unique_email() -> str:
    return f"u-{uuid.uuid4().hex[:12]}@Example.COM"
