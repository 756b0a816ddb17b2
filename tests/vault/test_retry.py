"""RETRY_* on a real read path: Vault KV reads through a proxy that drops connections."""

from __future__ import annotations

import asyncio
import uuid

from tests.support.app import metric_value, running_app
from tests.support.net import TcpProxy
from tests.support.vault import VaultTestServer


class DroppingProxy(TcpProxy):
    """Accepts and at once aborts the next ``drops`` connections, then forwards again."""

    drops = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.drops > 0:
            self.drops -= 1
            writer.transport.abort()
            return
        await super()._handle(reader, writer)


async def _read_after_drops(vault: VaultTestServer, drops: int, **settings: object) -> int:
    name = f"retry-{uuid.uuid4().hex[:8]}"
    vault.write_secret(name, {"host": "db.local"})
    proxy = DroppingProxy(vault.port).start()
    try:
        async with running_app(
            vault_addr=f"http://127.0.0.1:{proxy.port}",
            vault_token=vault.root_token,
            vault_cache_ttl_seconds=0,
            retry_base_delay_seconds=0.01,
            retry_max_delay_seconds=0.05,
            **settings,
        ) as (_, c):
            proxy.close_connections()  # the next read opens a new connection...
            proxy.drops = drops  # ...which is dropped, as are the ones after it
            response = await c.get(f"/examples/vault/secret/{name}")
            return response.status_code
    finally:
        proxy.stop()


async def test_a_kv_read_survives_dropped_connections_within_retry_attempts():
    with VaultTestServer() as vault:
        before = metric_value("backend_call_retries_total", service="vault", operation="kv_read")
        assert await _read_after_drops(vault, drops=2, retry_attempts=3) == 200
        after = metric_value("backend_call_retries_total", service="vault", operation="kv_read")
        assert after - before == 2


async def test_without_retries_the_same_drop_is_a_503():
    with VaultTestServer() as vault:
        assert await _read_after_drops(vault, drops=1, retry_attempts=1) == 503
