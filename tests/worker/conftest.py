"""Fixtures for the worker suite: the machine's RabbitMQ (a private vhost, credentials
in the Vault test server), an nx-27017 for the read model, the machine's Redis under
the run's key prefix; every test gets its own exchange, queue, database and prefix."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from quart import Quart

from quartstack.lifecycle import lifecycle
from quartstack.settings import load_settings
from quartstack.worker.app import consumer_of, create_worker_app
from tests.rabbitmq.broker import BROKER_HOST, BROKER_PORT, BrokerAccount, independent_connection
from tests.rabbitmq.conftest import broker_account, vault_mount  # noqa: F401  (fixtures)
from tests.support.app import TEST_KEY_PREFIX
from tests.support.mongo import NxMongoServer
from tests.support.vault import VaultTestServer


@dataclass
class WorkerEnv:
    """Everything one test's workers share, and what the test reads back."""

    account: BrokerAccount
    settings: dict[str, Any]
    mongo_port: int

    @property
    def exchange(self) -> str:
        return str(self.settings["events_exchange"])

    @property
    def queue(self) -> str:
        return str(self.settings["worker_queue"])

    @property
    def database(self) -> str:
        return str(self.settings["mongodb_database"])

    @property
    def key_prefix(self) -> str:
        return str(self.settings["redis_key_prefix"])

    def environ(self) -> dict[str, str]:
        """The settings as environment variables, for a ``quartstack worker`` process."""
        return {key.upper(): str(value) for key, value in self.settings.items()}


@pytest.fixture(scope="session")
def nx_mongo() -> Iterator[NxMongoServer]:
    with NxMongoServer() as server:
        yield server


@pytest.fixture
def worker_env(
    vault_server: VaultTestServer,
    vault_mount: str,  # noqa: F811
    broker_account: BrokerAccount,  # noqa: F811
    nx_mongo: NxMongoServer,
) -> WorkerEnv:
    suffix = uuid.uuid4().hex[:10]
    settings: dict[str, Any] = dict(
        vault_addr=vault_server.url,
        vault_token=vault_server.root_token,
        vault_mount=vault_mount,
        rabbitmq_host=BROKER_HOST,
        rabbitmq_port=BROKER_PORT,
        mongodb_host="127.0.0.1",
        mongodb_port=nx_mongo.port,
        mongodb_database=f"qs_worker_{suffix}",
        redis_host="127.0.0.1",
        redis_port=6379,
        redis_key_prefix=f"{TEST_KEY_PREFIX}:w{suffix}",
        events_exchange=f"events-{suffix}",
        worker_queue=f"projections-{suffix}",
        worker_max_deliveries=3,
        worker_retry_max_seconds=0.5,
        circuit_recovery_seconds=0.5,
        readiness_interval_seconds=0.2,
        readiness_failure_threshold=1,
        backend_timeout_seconds=2.0,
        shutdown_grace_seconds=5.0,
        shutdown_close_seconds=3.0,
    )
    return WorkerEnv(broker_account, settings, nx_mongo.port)


@pytest.fixture
async def publisher(broker_account: BrokerAccount) -> AsyncIterator[AbstractChannel]:  # noqa: F811
    """A confirm-mode channel of the test's own on the private vhost."""
    connection = await independent_connection(broker_account)
    async with connection:
        yield await connection.channel(publisher_confirms=True)


@asynccontextmanager
async def running_worker(env: WorkerEnv, **overrides: Any) -> AsyncIterator[Quart]:
    """An in-process worker app, serving, once its consumer is on the queue."""
    app = create_worker_app(load_settings(**{**env.settings, **overrides}))
    async with app.test_app():
        await lifecycle(app).wait_started()
        consumer = consumer_of(app)
        deadline = time.monotonic() + 30
        while not consumer.consuming:
            assert time.monotonic() < deadline, "the worker did not start consuming in 30 s"
            await asyncio.sleep(0.05)
        yield app
