from __future__ import annotations

import random
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.support.net import free_port, wait_for_port
from tests.support.redis_cluster import RedisClusterProcesses


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses() as cluster:
        yield cluster


@pytest.fixture
def client_ip() -> str:
    """A unique client address per test, so rate-limit keys never collide between runs."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def private_redis() -> Iterator[int]:
    """A redis-server of our own (tests may stop it or set a password on it)."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port)
    yield port
    process.kill()
    process.wait()
