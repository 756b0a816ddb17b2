"""``quartstack migrate`` and ``quartstack relay``: the signup flow's own processes.

Both use the same clients as the API (credentials from Vault, breakers, timeouts),
built without the web app: a migration Job or a relay Deployment serves no HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import start_http_server
from quart import Quart

from quartstack import NAME
from quartstack.integrations.base import REGISTRY_KEY, BackendRegistry, registry
from quartstack.integrations.postgres import PostgresPool
from quartstack.integrations.rabbitmq import RabbitMQClient
from quartstack.integrations.vault.client import VaultClient
from quartstack.integrations.vault.credentials import CredentialProvider
from quartstack.metrics import REGISTRY
from quartstack.resilience import BackendError
from quartstack.settings import Settings
from quartstack.signup.relay import OutboxRelay
from quartstack.signup.schema import MigrationError, migrate

logger = logging.getLogger("quartstack.signup")

COMMANDS = ("migrate", "relay")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate_cmd = commands.add_parser(
        "migrate", help="apply the database migrations this version needs, then exit"
    )
    migrate_cmd.add_argument(
        "--timeout", type=float, default=300.0, help="seconds the whole run may take (300)"
    )
    relay_cmd = commands.add_parser(
        "relay", help="publish outbox events to RabbitMQ until SIGTERM (no API routes)"
    )
    relay_cmd.add_argument(
        "--metrics-port", type=int, help="serve Prometheus /metrics on this port (default: none)"
    )


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        return asyncio.run(_migrate(settings, args.timeout))
    return asyncio.run(_relay(settings, args.metrics_port))


@asynccontextmanager
async def backend_clients(settings: Settings, *, rabbitmq: bool) -> AsyncIterator[Quart]:
    """An app holding only the clients these commands need, started and stopped."""
    app = Quart(NAME)
    app.extensions[REGISTRY_KEY] = BackendRegistry([])
    CredentialProvider(settings).init_app(app)
    if "vault" in settings.enabled_backends:
        VaultClient(settings).init_app(app)
    PostgresPool(settings).init_app(app)
    if rabbitmq:
        RabbitMQClient(settings).init_app(app)
    clients = registry(app)
    await clients.start_all()
    try:
        yield app
    finally:
        await clients.stop_all()


async def _migrate(settings: Settings, timeout: float) -> int:
    if "postgres" not in settings.enabled_backends:
        logger.error("POSTGRES_HOST is not set: nothing to migrate")
        return 2
    async with backend_clients(settings, rabbitmq=False) as app:
        postgres: PostgresPool = app.extensions["postgres"]
        try:
            applied = await migrate(postgres, timeout=timeout)
        except (BackendError, MigrationError) as exc:
            logger.error("migration failed; nothing applied", extra={"reason": str(exc)})
            return 1
    logger.info(
        "schema up to date",
        extra={"applied": [f"{m.version:04d}_{m.name}" for m in applied]},
    )
    return 0


async def _relay(settings: Settings, metrics_port: int | None) -> int:
    missing = {"postgres", "rabbitmq"} - settings.enabled_backends
    if missing:
        logger.error("the relay needs POSTGRES_HOST and RABBITMQ_HOST")
        return 2
    async with backend_clients(settings, rabbitmq=True) as app:
        relay = OutboxRelay(settings, app.extensions["postgres"], app.extensions["rabbitmq"])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        relay.start()
        if metrics_port is not None:
            # The service's own registry, on a thread of prometheus_client's own.
            start_http_server(metrics_port, addr=settings.host, registry=REGISTRY)
        logger.info("outbox relay running", extra={"exchange": settings.events_exchange})
        await stop.wait()
        await relay.stop(timeout=settings.shutdown_grace_seconds)
    logger.info("outbox relay stopped")
    return 0
