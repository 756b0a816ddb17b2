"""Session-wide fixtures: the real Vault (OpenBao) every backend suite uses, and the
run's own Redis key prefix, whose keys (and only those) are removed afterwards."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

import redis as redis_sync
from tests.support.app import TEST_KEY_PREFIX
from tests.support.breaker_clock import breaker_clock  # noqa: F401 (a fixture for every test)
from tests.support.leftovers import sweep_redis_leftovers
from tests.support.vault import VaultTestServer


@pytest.fixture(scope="session")
def vault_server() -> Iterator[VaultTestServer]:
    """A real Vault (OpenBao dev server) shared by every suite; tests write their
    secrets into KV mounts or names of their own."""
    with VaultTestServer(fault_proxy=False) as server:
        yield server


def _delete_matching(client: redis_sync.Redis, pattern: str) -> None:
    batch = []
    for key in client.scan_iter(pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


@pytest.fixture(scope="session", autouse=True)
def redis_keys_of_this_run() -> Iterator[str]:
    """Every app this run builds writes under the run's own ``REDIS_KEY_PREFIX`` (also
    exported to the environment, for ``quartstack serve`` processes and apps built from
    ``load_settings``); at the end only those keys are deleted, so concurrent runs sharing
    the machine's Redis keep theirs. Leftovers of interrupted runs are removed first."""
    previous = os.environ.get("REDIS_KEY_PREFIX")
    os.environ["REDIS_KEY_PREFIX"] = TEST_KEY_PREFIX
    client = redis_sync.Redis(port=6379)
    try:
        sweep_redis_leftovers()
        reachable = True
    except redis_sync.RedisError:  # a suite that never needs Redis still runs
        reachable = False
    try:
        yield TEST_KEY_PREFIX
    finally:
        if previous is None:
            os.environ.pop("REDIS_KEY_PREFIX", None)
        else:
            os.environ["REDIS_KEY_PREFIX"] = previous
        if reachable:
            with contextlib.suppress(redis_sync.RedisError):
                _delete_matching(client, f"{TEST_KEY_PREFIX}:*")
        client.close()
