"""Fixtures for the RabbitMQ suite: a private vhost and user on the machine's broker,
their credentials in the session OpenBao, and an independent AMQP client."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aio_pika.abc import AbstractConnection

from tests.rabbitmq.broker import (
    BROKER_HOST,
    BROKER_PORT,
    BrokerAccount,
    independent_connection,
    rabbitmqctl,
    sweep_broker_leftovers,
    write_rabbitmq_secret,
)
from tests.support.leftovers import unique_name
from tests.support.vault import VaultTestServer


@pytest.fixture(scope="session")
def broker_account() -> Iterator[BrokerAccount]:
    """A vhost and a user of our own, with full rights on that vhost only. What an
    interrupted run left on the broker is swept first."""
    sweep_broker_leftovers()
    name = unique_name("-")
    account = BrokerAccount(name, name, "rp-" + secrets.token_hex(12))
    rabbitmqctl("add_vhost", account.vhost)
    try:
        rabbitmqctl("add_user", account.user, account.password)
        rabbitmqctl("set_permissions", "-p", account.vhost, account.user, ".*", ".*", ".*")
        yield account
    finally:
        rabbitmqctl("delete_user", account.user, check=False)
        rabbitmqctl("delete_vhost", account.vhost, check=False)


@pytest.fixture(scope="session")
def vault_mount(vault_server: VaultTestServer, broker_account: BrokerAccount) -> str:
    """A KV v2 mount of this suite's own, holding the ``rabbitmq`` secret."""
    mount = f"rmq-{uuid.uuid4().hex[:8]}"
    vault_server.enable_kv_v2(mount)
    write_rabbitmq_secret(vault_server, mount, broker_account)
    return mount


@pytest.fixture
def app_settings(vault_server: VaultTestServer, vault_mount: str) -> dict[str, Any]:
    """Settings of an app that reads its broker credentials from Vault."""
    return dict(
        vault_addr=vault_server.url,
        vault_token=vault_server.root_token,
        vault_mount=vault_mount,
        vault_cache_ttl_seconds=0,
        rabbitmq_host=BROKER_HOST,
        rabbitmq_port=BROKER_PORT,
    )


@pytest.fixture
def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def amqp(broker_account: BrokerAccount) -> AsyncIterator[AbstractConnection]:
    """An independent client connection (not the app's) to the test vhost."""
    connection = await independent_connection(broker_account)
    async with connection:
        yield connection
