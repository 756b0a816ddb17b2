"""The Vault client does not serialise independent calls on one thread, and its KV
cache is bounded (TTL and least-recently-used eviction)."""

from __future__ import annotations

import asyncio
import time
import uuid

from quartstack.integrations.base import registry
from quartstack.integrations.vault.client import VaultClient
from quartstack.integrations.vault.kv_cache import KvCache
from tests.support.app import running_app


async def _until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_health_and_other_reads_are_not_held_behind_a_hanging_kv_read(vault):
    names = [f"slow-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        vault.write_secret(name, {"v": 1})
    async with running_app(
        vault_addr=vault.url,
        vault_token=vault.root_token,
        vault_timeout_seconds=30,
        vault_cache_ttl_seconds=0,
    ) as (app, _):
        client = registry(app).get("vault")
        assert isinstance(client, VaultClient)
        vault.request_counts(reset=True)
        vault.set_latency(20, path="/v1/secret/")  # KV reads hang; sys/health does not
        reads: list[asyncio.Task[object]] = []

        def arrived(name: str) -> bool:
            return vault.request_counts().get(f"/v1/secret/data/{name}") == 1

        try:
            reads.append(asyncio.create_task(client.read_secret(names[0])))
            await _until(lambda: arrived(names[0]))
            async with asyncio.timeout(5):  # before the fix: queued behind the read
                health = await client.health()
            assert health["details"]["sealed"] is False
            # Another secret's read reaches Vault too: before the fix it waited its turn.
            reads.append(asyncio.create_task(client.read_secret(names[1])))
            await _until(lambda: arrived(names[1]))
            assert not any(task.done() for task in reads)
        finally:
            for task in reads:
                task.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
            vault.set_latency(0)


def test_kv_cache_entries_expire():
    cache = KvCache(ttl=0.05)
    cache.put("a", {"v": 1})
    assert cache.get("a") == {"v": 1}
    deadline = time.monotonic() + 10
    while cache.get("a") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(cache) == 0  # an expired entry found on read is dropped


def test_kv_cache_keeps_at_most_max_entries_least_recently_used_out():
    cache = KvCache(ttl=300, max_entries=3)
    for name in "abc":
        cache.put(name, {"name": name})
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("d", {"name": "d"})
    assert cache.get("b") is None and len(cache) == 3
    assert [n for n in "acd" if cache.get(n) is not None] == ["a", "c", "d"]
    for i in range(1000):
        cache.put(f"name-{i}", {})
    assert len(cache) == 3


def test_kv_cache_with_ttl_zero_stores_nothing():
    cache = KvCache(ttl=0)
    cache.put("a", {"v": 1})
    assert cache.get("a") is None and len(cache) == 0


async def test_a_rotated_kv_password_is_forgotten_by_the_log_scrubber(vault):
    from quartstack.redaction import MASK, redact

    name = f"rot-{uuid.uuid4().hex[:8]}"
    passwords = [f"pw-{uuid.uuid4().hex}" for _ in range(3)]
    async with running_app(
        vault_addr=vault.url, vault_token=vault.root_token, vault_cache_ttl_seconds=0
    ) as (app, _):
        client = registry(app).get("vault")
        assert isinstance(client, VaultClient)
        for password in passwords:
            vault.write_secret(name, {"user": "u", "password": password})
            await client.read_secret(name, fresh=True)
    # The one before last is still scrubbed (a retiring connection may print it).
    assert redact(" ".join(passwords)) == f"{passwords[0]} {MASK} {MASK}"
