"""Success bodies of the per-backend health routes carry the fields clients of the
reference contract read, with values checked against the real servers."""

from __future__ import annotations

import asyncpg

import redis as redis_sync
from tests.support.app import running_app
from tests.support.vault import VaultTestServer


async def test_redis_health_nodes_report_version_clients_and_memory():
    async with running_app(redis_host="127.0.0.1", redis_port=6379) as (_, c):
        response = await c.get("/health/redis")
        assert response.status_code == 200
        [node] = (await response.get_json())["nodes"]
    server = redis_sync.Redis(port=6379)
    try:
        info = server.info()
    finally:
        server.close()
    assert node["status"] == "healthy" and node["role"] == "master"
    assert node["version"] == info["redis_version"]
    assert isinstance(node["connected_clients"], int) and node["connected_clients"] >= 1
    assert isinstance(node["used_memory_human"], str)
    assert node["used_memory_human"][-1] in "BKMG"


async def test_vault_health_details_repeat_the_status(vault_server: VaultTestServer):
    async with running_app(vault_addr=vault_server.url, vault_token=vault_server.root_token) as (
        _,
        c,
    ):
        response = await c.get("/health/vault")
        body = await response.get_json()
    assert response.status_code == 200
    assert body["details"]["status"] == body["status"] == "healthy"
    assert body["details"]["sealed"] is False


async def test_postgres_health_version_is_the_full_version_string():
    settings = {"postgres_user": "postgres", "postgres_database": "test"}
    async with running_app(postgres_host="127.0.0.1", **settings) as (_, c):
        response = await c.get("/health/postgres")
        body = await response.get_json()
    connection = await asyncpg.connect(host="127.0.0.1", user="postgres", database="test")
    try:
        expected = await connection.fetchval("SELECT version()")
    finally:
        await connection.close()
    assert response.status_code == 200
    assert body["version"] == expected and body["version"].startswith("PostgreSQL ")
