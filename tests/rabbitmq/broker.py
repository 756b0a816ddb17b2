"""Helpers for the RabbitMQ suite: broker administration with ``rabbitmqctl`` and an
independent AMQP client to check what the app really put in the broker."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from tests.support.leftovers import stale, sweep
from tests.support.net import wait_for_port
from tests.support.polling import wait_until_sync
from tests.support.vault import VaultTestServer

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 5672
PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class BrokerAccount:
    vhost: str
    user: str
    password: str


def rabbitmqctl(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {result.stderr.strip()}")
    return result.stdout


def start_broker_app() -> None:
    """``start_app`` (a no-op when running) and wait until AMQP answers."""
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")
    wait_for_port(BROKER_PORT, timeout=60)
    wait_until_sync(amqp_answers, timeout=60, interval=0.1, what="the broker's AMQP handshake")


def amqp_answers() -> bool:
    """Whether the broker answers an AMQP 0-9-1 protocol header with Connection.Start
    (a method frame on channel 0): an open port alone may still refuse clients."""
    try:
        with socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=2) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            header = sock.recv(3)
    except OSError:
        return False
    return header == b"\x01\x00\x00"


def sweep_broker_leftovers() -> list[str]:
    """Vhosts (with their queues) and users that interrupted runs left on the machine's
    broker: only suite names older than an hour (tests/support/leftovers.py)."""
    vhosts = rabbitmqctl("-q", "list_vhosts", "--no-table-headers", "name").split()
    listing = rabbitmqctl("-q", "list_users", "--no-table-headers").splitlines()
    users = [line.split()[0] for line in listing if line.strip()]  # "name<TAB>[tags]"
    return [
        *sweep("vhost", stale(vhosts, "-"), lambda v: rabbitmqctl("delete_vhost", v)),
        *sweep("user", stale(users, "-"), lambda u: rabbitmqctl("delete_user", u)),
    ]


def write_rabbitmq_secret(
    vault: VaultTestServer, mount: str, account: BrokerAccount, *, password: str | None = None
) -> None:
    vault.write_secret(
        "rabbitmq",
        {
            "user": account.user,
            "password": account.password if password is None else password,
            "vhost": account.vhost,
        },
        mount=mount,
    )


async def independent_connection(account: BrokerAccount) -> aio_pika.abc.AbstractConnection:
    return await aio_pika.connect(
        host=BROKER_HOST,
        port=BROKER_PORT,
        login=account.user,
        password=account.password,
        virtualhost=account.vhost,
    )


async def drain(channel: AbstractChannel, queue: str) -> list[AbstractIncomingMessage]:
    """Every message now in ``queue``, acknowledged: each is consumed exactly once."""
    declared = await channel.declare_queue(queue, passive=True)
    messages = []
    while (message := await declared.get(fail=False, no_ack=False)) is not None:
        await message.ack()
        messages.append(message)
    return messages


async def queue_exists(connection: aio_pika.abc.AbstractConnection, queue: str) -> bool:
    """Passive declare on a channel of its own (the 404 closes that channel)."""
    probe = await connection.channel()
    try:
        await probe.declare_queue(queue, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    await probe.close()
    return True


async def assert_problem(response: Any, status: int, kind: str) -> dict[str, Any]:
    text = await response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.content_type == PROBLEM
    body: dict[str, Any] = await response.get_json()
    assert body["status"] == status
    assert body["type"] == f"/problems/{kind}"
    assert body["request_id"] and body["instance"] and body["title"] and body["detail"]
    return body
