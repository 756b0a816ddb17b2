"""The worker process's app: the consumer, its backends, and probes and metrics only.

A small Quart app rather than a bare loop, so the worker shares the API's
lifecycle (startup in the background, readiness from the background checks of its
backends, the close budget), its JSON logs and its metrics registry. Its required
backends are fixed: the three it cannot work without.
"""

from __future__ import annotations

from typing import Any

from quart import Quart
from quart_schema import QuartSchema

from quartstack import NAME
from quartstack.app import SETTINGS_KEY
from quartstack.auth.authentication import MetricsTokenCheck
from quartstack.blueprints import health, metrics
from quartstack.integrations.base import REGISTRY_KEY, Backend, BackendRegistry
from quartstack.integrations.mongodb import MongoDatabase
from quartstack.integrations.rabbitmq import RabbitMQClient
from quartstack.integrations.redis.client import RedisClient
from quartstack.integrations.vault.client import VaultClient
from quartstack.integrations.vault.credentials import CredentialProvider
from quartstack.lifecycle import init_lifecycle, lifecycle
from quartstack.resilience import BackendUnavailable
from quartstack.settings import Settings
from quartstack.web.observability import Observability
from quartstack.web.problems import ProblemHandlers
from quartstack.web.quart_app import ServiceQuart
from quartstack.worker.consumer import ProjectionConsumer

CONSUMER_KEY = "quartstack.worker.consumer"
REQUIRED = ("rabbitmq", "mongodb", "redis")
READY_WHEN = (*REQUIRED, "consumer")


class ConsumerCheck(Backend):
    """Readiness of the consumer itself, through the same background monitor as the
    backends: a worker whose consumer is not on the queue (e.g. the queue exists with
    other arguments after an upgrade) is not ready, so a rollout stops there."""

    name = READY_WHEN[-1]

    def __init__(self, settings: Settings, consumer: ProjectionConsumer) -> None:
        super().__init__(settings)
        self.consumer = consumer

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        if not self.consumer.consuming:
            reason = self.consumer.last_error or "not consuming yet"
            raise BackendUnavailable(self.name, f"not consuming: {reason}")
        return {"queue": self.settings.worker_queue}


class WorkerNotConfigured(Exception):
    """A backend the worker needs has no host configured."""


def create_worker_app(settings: Settings) -> Quart:
    missing = [name for name in REQUIRED if name not in settings.enabled_backends]
    if missing:
        raise WorkerNotConfigured(
            "the worker needs " + ", ".join(f"{name.upper()}_HOST" for name in missing)
        )
    app = ServiceQuart(f"{NAME}-worker", static_folder=None)
    app.config.update(
        DEBUG=settings.debug,
        PROPAGATE_EXCEPTIONS=False,
        QUARTSTACK_HEALTH_TIMEOUT=settings.health_timeout_seconds,
    )
    app.extensions[SETTINGS_KEY] = settings
    app.extensions[REGISTRY_KEY] = BackendRegistry(list(READY_WHEN))
    Observability(settings).init_app(app)
    ProblemHandlers(settings).init_app(app)
    MetricsTokenCheck(settings).init_app(app)  # the probes stay open
    # Converts the probes' pydantic bodies; no API to document here.
    QuartSchema(
        app, openapi_path=None, redoc_ui_path=None, scalar_ui_path=None, swagger_ui_path=None
    )
    app.convert_models_directly()
    app.write_json_with_orjson()
    init_lifecycle(app, settings)

    CredentialProvider(settings).init_app(app)
    if "vault" in settings.enabled_backends:
        VaultClient(settings).init_app(app)
    mongo, redis = MongoDatabase(settings), RedisClient(settings)
    rabbitmq = RabbitMQClient(settings)
    for backend in (mongo, redis, rabbitmq):
        backend.init_app(app)
    consumer = ProjectionConsumer(settings, rabbitmq, mongo, redis)
    app.extensions[CONSUMER_KEY] = consumer
    ConsumerCheck(settings, consumer).init_app(app)
    for blueprint in (health.blueprint, metrics.blueprint):
        app.register_blueprint(blueprint)

    async def start_consumer() -> None:
        async def when_started() -> None:
            await lifecycle(app).wait_started()
            consumer.start()

        app.add_background_task(when_started)

    async def stop_consumer() -> None:
        await consumer.stop()

    app.before_serving(start_consumer)
    # First of the after-serving hooks: the consumer settles what it holds before
    # the lifecycle closes the clients it uses.
    app.after_serving_funcs.insert(0, stop_consumer)
    return app


def consumer_of(app: Quart) -> ProjectionConsumer:
    consumer: ProjectionConsumer = app.extensions[CONSUMER_KEY]
    return consumer
