from __future__ import annotations

import contextlib
import random
import subprocess
import uuid
from collections.abc import Iterator

import pytest

import redis as redis_sync
from tests.support.app import TEST_KEY_PREFIX
from tests.support.net import free_port, wait_for_port
from tests.support.redis_cluster import RedisClusterProcesses, die_with_parent


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses() as cluster:
        yield cluster


@pytest.fixture
def client_ip() -> str:
    """A unique client address per test, so rate-limit keys never collide between runs."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique key prefix under the run's prefix (so an interrupted run's leftovers are
    swept by the next run); whatever the test left under it on :6379 is removed."""
    value = f"{TEST_KEY_PREFIX}:t{uuid.uuid4().hex[:10]}"
    yield value
    shared = redis_sync.Redis(port=6379)
    with contextlib.suppress(redis_sync.RedisError):
        keys = list(shared.scan_iter(f"{value}*"))
        if keys:
            shared.delete(*keys)
    shared.close()


@contextlib.contextmanager
def private_redis_server(*extra_args: str) -> Iterator[int]:
    """A redis-server of our own on a free port (tests may stop it or set a password)."""
    port = free_port()
    process = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", *extra_args),
        ],
        stdout=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def private_redis() -> Iterator[int]:
    with private_redis_server() as port:
        yield port
