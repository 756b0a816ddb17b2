"""Small helpers shared by the database tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pymysql

from tests.support.databases import MySQLDatabase, PostgresDatabase
from tests.support.vault import VaultTestServer

PROBLEM = "application/problem+json"
QUERY = "/examples/database/{}/query"
DATABASES = ("postgres", "mysql", "mongodb")


@dataclass
class DatabaseAccounts:
    """Where a test's database secrets live in the session OpenBao."""

    vault: VaultTestServer
    mount: str
    mongo_db: str

    def publish(self, name: str, secret: dict[str, str]) -> None:
        self.vault.write_secret(name, secret, mount=self.mount)


def log_messages(text: str, service: str) -> list[str]:
    """The messages of ``service``'s JSON log lines (as the service writes them)."""
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [r["message"] for r in records if r.get("service") == service]


async def assert_problem(response: Any, status: int, kind: str, path: str) -> dict[str, Any]:
    """Check an RFC 7807 problem response to ``path`` and return its body."""
    assert response.status_code == status, await response.get_data(as_text=True)
    assert response.content_type == PROBLEM
    body: dict[str, Any] = await response.get_json()
    assert body["type"] == f"/problems/{kind}"
    assert body["status"] == status
    assert body["instance"] == path
    assert body["title"] and body["detail"] and body["request_id"]
    assert response.headers["X-Request-ID"] == body["request_id"]
    return body


@contextlib.asynccontextmanager
async def postgres_peak(account: PostgresDatabase) -> AsyncIterator[Callable[[], int]]:
    """Sample the server's sessions of ``account``'s role while the block runs;
    yields a function returning the highest count seen."""
    admin = await asyncpg.connect(host="127.0.0.1", port=account.db.port, user="postgres")
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            count = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", account.db.user
            )
            peak = max(peak, count)
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    try:
        yield lambda: peak
    finally:
        stop.set()
        await sampler
        await admin.close()


@contextlib.contextmanager
def mysql_peak(account: MySQLDatabase) -> Iterator[Callable[[], int]]:
    """Like :func:`postgres_peak`, from ``information_schema.processlist`` (on a thread:
    pymysql blocks)."""
    admin = pymysql.connect(host="127.0.0.1", port=account.db.port, user="root", password="")
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        with admin.cursor() as cursor:
            while not stop.is_set():
                cursor.execute(
                    "SELECT count(*) FROM information_schema.processlist WHERE user = %s",
                    (account.db.user,),
                )
                row = cursor.fetchone()
                peak = max(peak, int(row[0]) if row else 0)
                stop.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: peak
    finally:
        stop.set()
        sampler.join(10)
        admin.close()
