"""Fixtures for the signup flow: a PostgreSQL database of this session's own (migrated
once by the real runner), the RabbitMQ suite's private vhost, a unique events exchange,
and both credentials in a Vault mount of our own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractQueue

from quartstack.settings import load_settings
from quartstack.signup.cli import backend_clients
from quartstack.signup.schema import migrate
from tests.rabbitmq.broker import BROKER_HOST, BROKER_PORT, BrokerAccount, write_rabbitmq_secret
from tests.rabbitmq.conftest import amqp, broker_account  # noqa: F401  (fixtures reused)
from tests.support.databases import PostgresDatabase
from tests.support.vault import VaultTestServer


@pytest.fixture(scope="session")
def signup_db() -> Iterator[PostgresDatabase]:
    account = PostgresDatabase()
    account.create()
    try:
        yield account
    finally:
        account.drop()


@pytest.fixture(scope="session")
def signup_mount(
    vault_server: VaultTestServer,
    signup_db: PostgresDatabase,
    broker_account: BrokerAccount,  # noqa: F811
) -> str:
    mount = f"signup-{uuid.uuid4().hex[:8]}"
    vault_server.enable_kv_v2(mount)
    vault_server.write_secret("postgres", signup_db.db.secret(), mount=mount)
    write_rabbitmq_secret(vault_server, mount, broker_account)
    return mount


@pytest.fixture(scope="session")
def exchange() -> str:
    return f"qs.events.{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def base_settings(
    vault_server: VaultTestServer, signup_mount: str, exchange: str
) -> dict[str, Any]:
    return dict(
        vault_addr=vault_server.url,
        vault_token=vault_server.root_token,
        vault_mount=signup_mount,
        postgres_host="127.0.0.1",
        postgres_port=5432,
        rabbitmq_host=BROKER_HOST,
        rabbitmq_port=BROKER_PORT,
        redis_host="127.0.0.1",
        events_exchange=exchange,
        required_backends=["postgres"],
        circuit_failure_threshold=1000,
        outbox_relay_poll_seconds=0.5,
    )


@pytest.fixture(scope="session")
async def migrated(base_settings: dict[str, Any]) -> None:
    async with backend_clients(load_settings(**base_settings), rabbitmq=False) as app:
        await migrate(app.extensions["postgres"], timeout=60)


@pytest.fixture
def signup_settings(base_settings: dict[str, Any], migrated: None) -> dict[str, Any]:
    """Settings of an app on the migrated database (relay on, as by default)."""
    return dict(base_settings)


@pytest.fixture
async def events(
    amqp: AbstractConnection,  # noqa: F811
    exchange: str,
) -> AsyncIterator[AbstractQueue]:
    """A queue of this test's own bound to every event on the exchange."""
    channel = await amqp.channel()
    topic = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"signup-{uuid.uuid4().hex[:8]}", exclusive=True)
    await queue.bind(topic, "#")
    yield queue
    await channel.close()
