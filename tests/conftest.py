"""Session-wide fixtures: the real Vault (OpenBao) every backend suite uses, and a clean
shared Redis afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import redis as redis_sync
from tests.support.vault import VaultTestServer

APP_KEYS = "quartstack:*"  # idempotency records (24 h), cached responses, rate limits


@pytest.fixture(scope="session")
def vault_server() -> Iterator[VaultTestServer]:
    """A real Vault (OpenBao dev server) shared by every suite; tests write their
    secrets into KV mounts or names of their own."""
    with VaultTestServer(fault_proxy=False) as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def shared_redis_left_clean() -> Iterator[None]:
    """The apps under test write their own keys into the machine's Redis; whatever
    appeared there during the run is removed at the end, what was there before is kept."""
    client = redis_sync.Redis(port=6379)
    try:
        before = set(client.scan_iter(APP_KEYS, count=1000))
    except redis_sync.RedisError:  # a suite that never needs Redis still runs
        before = None
    yield
    if before is not None:
        created = set(client.scan_iter(APP_KEYS, count=1000)) - before
        if created:
            client.delete(*created)
    client.close()
