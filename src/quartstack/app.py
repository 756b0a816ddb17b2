"""The app factory: one place that builds a quartstack app from settings.

``create_app`` returns a fresh app on every call (Quart's serving hooks run once
per app, so tests build one app per scenario). Integrations are listed here and
only connect when the app starts serving.
"""

from __future__ import annotations

from quart import Quart
from quart_schema import Info, QuartSchema

from quartstack import NAME, __version__
from quartstack.auth.authentication import Authentication
from quartstack.blueprints import (
    cache,
    database,
    health,
    messaging,
    metrics,
    redis_cluster,
    root,
    user_queries,
    users,
    vault,
)
from quartstack.blueprints.openapi import ServiceOpenAPIProvider
from quartstack.integrations.base import REGISTRY_KEY, BackendRegistry
from quartstack.integrations.mongodb import MongoDatabase
from quartstack.integrations.mysql import MySQLPool
from quartstack.integrations.postgres import PostgresPool
from quartstack.integrations.rabbitmq import RabbitMQClient
from quartstack.integrations.redis.client import RedisClient
from quartstack.integrations.redis.idempotency import Idempotency
from quartstack.integrations.redis.rate_limit import RateLimiting
from quartstack.integrations.redis.response_cache import ResponseCaching
from quartstack.integrations.vault.client import VaultClient
from quartstack.integrations.vault.credentials import CredentialProvider
from quartstack.lifecycle import init_lifecycle
from quartstack.metrics import APP_INFO
from quartstack.settings import Settings, load_settings
from quartstack.signup import init_signup
from quartstack.tracing import state as tracing_state
from quartstack.tracing.server import ServerSpans
from quartstack.web.client_address import TRUSTED_PROXIES_KEY, parse_networks
from quartstack.web.observability import Observability
from quartstack.web.problems import ProblemHandlers
from quartstack.web.quart_app import ServiceQuart
from quartstack.web.request_body import RequestBodyChecks
from quartstack.web.scrub import SuccessBodyScrubbing
from quartstack.web.security import Cors, SecurityHeaders

SETTINGS_KEY = "quartstack.settings"


def create_app(settings: Settings | None = None) -> Quart:
    """Build the app: web layer, backends from settings, blueprints."""
    settings = settings or load_settings()
    app = ServiceQuart(NAME, static_folder=None)  # an API: no static files to serve
    app.config.update(
        DEBUG=settings.debug,
        PROPAGATE_EXCEPTIONS=False,
        JSON_SORT_KEYS=False,
        QUARTSTACK_HEALTH_TIMEOUT=settings.health_timeout_seconds,
        **{TRUSTED_PROXIES_KEY: parse_networks(settings.trusted_proxies)},
    )
    app.extensions[SETTINGS_KEY] = settings
    app.extensions[REGISTRY_KEY] = BackendRegistry(settings.required_backends)
    APP_INFO.labels(NAME, __version__).set(1)

    Observability(settings).init_app(app)
    ProblemHandlers(settings).init_app(app)
    RequestBodyChecks(settings).init_app(app)
    SecurityHeaders(settings).init_app(app)
    Cors(settings).init_app(app)
    QuartSchema(
        app,
        info=Info(
            title=NAME,
            version=__version__,
            description="Quart reference service: Vault, SQL, MongoDB, Redis, RabbitMQ",
        ),
        redoc_ui_path="/redoc",
        scalar_ui_path=None,
        openapi_provider_class=ServiceOpenAPIProvider,
    )
    app.convert_models_directly()
    app.write_json_with_orjson()
    init_lifecycle(app, settings)

    _init_backends(app, settings)
    # Before the limiter, which counts per authenticated principal.
    Authentication(settings).init_app(app)
    # Request hooks that share state through Redis (inactive without it); the limiter
    # first: a refused request must not claim an Idempotency-Key.
    RateLimiting(settings).init_app(app)
    Idempotency(settings).init_app(app)
    ResponseCaching(settings).init_app(app)
    init_signup(app, settings)
    for blueprint in (
        root.blueprint,
        metrics.blueprint,
        health.blueprint,
        vault.blueprint,
        database.blueprint,
        cache.blueprint,
        redis_cluster.blueprint,
        messaging.blueprint,
        users.blueprint,
        user_queries.blueprint,
    ):
        app.register_blueprint(blueprint)
    # Last registered, so its after_request runs first: before idempotency stores a body.
    SuccessBodyScrubbing(settings).init_app(app)
    if tracing_state.active:  # outermost ASGI wrapper: sees even the shutdown's 503
        ServerSpans(settings).init_app(app)
    return app


def _init_backends(app: Quart, settings: Settings) -> None:
    """Create the integrations this deployment configures (none connect yet)."""
    CredentialProvider(settings).init_app(app)
    if "vault" in settings.enabled_backends:
        VaultClient(settings).init_app(app)
    for name, backend in (
        ("postgres", PostgresPool),
        ("mysql", MySQLPool),
        ("mongodb", MongoDatabase),
        ("redis", RedisClient),
        ("rabbitmq", RabbitMQClient),
    ):
        if name in settings.enabled_backends:
            backend(settings).init_app(app)
