"""The signup flow's write side: users in PostgreSQL, their events relayed to RabbitMQ.

``init_signup(app, settings)`` wires it into an app: the schema readiness check
(when PostgreSQL is required) and the outbox relay as a background task of the
API process (unless ``OUTBOX_RELAY_ENABLED=false``; then run ``quartstack relay``).
The API process never migrates: ``quartstack migrate`` does, before it starts.
"""

from __future__ import annotations

from quart import Quart

from quartstack.integrations.postgres import PostgresPool
from quartstack.integrations.rabbitmq import RabbitMQClient
from quartstack.lifecycle import lifecycle
from quartstack.readiness import add_readiness_check
from quartstack.resilience import BackendError
from quartstack.settings import Settings
from quartstack.signup.relay import OutboxRelay
from quartstack.signup.schema import current_version, required_version

RELAY_KEY = "quartstack.outbox_relay"


class SchemaCheck:
    """Readiness: the database schema is at least the version this code needs.
    Once it is, it stays so (migrations only move forward), so later probes are free."""

    def __init__(self, postgres: PostgresPool) -> None:
        self.postgres = postgres
        self.current = False

    async def __call__(self) -> str:
        if self.current:
            return "ok"
        try:
            version = await current_version(self.postgres)
        except BackendError as exc:
            return f"unknown: {exc}"
        needed = required_version()
        if version < needed:
            return f"schema at version {version}, needs {needed}: run `quartstack migrate`"
        self.current = True
        return "ok"


def init_signup(app: Quart, settings: Settings) -> None:
    postgres = app.extensions.get("postgres")
    rabbitmq = app.extensions.get("rabbitmq")
    if isinstance(postgres, PostgresPool) and "postgres" in settings.required_backends:
        add_readiness_check(app, "schema", SchemaCheck(postgres))
    if not (
        settings.outbox_relay_enabled
        and isinstance(postgres, PostgresPool)
        and isinstance(rabbitmq, RabbitMQClient)
    ):
        return
    relay = OutboxRelay(settings, postgres, rabbitmq)
    app.extensions[RELAY_KEY] = relay

    async def start_relay() -> None:
        relay.start(after=lifecycle(app).wait_started)

    async def stop_relay() -> None:
        await relay.stop()

    app.before_serving(start_relay)
    # First of the after-serving hooks: the relay finishes its batch (after the HTTP
    # drain) before the lifecycle closes the clients it uses.
    app.after_serving_funcs.insert(0, stop_relay)
