"""``/``: what this service is, where its parts are and how it protects itself."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from quart import Blueprint, Quart, current_app
from quart_schema import validate_response

from quartstack import NAME, __version__
from quartstack.auth.scopes import requires
from quartstack.integrations.redis.client import RedisClient
from quartstack.settings import Settings
from quartstack.web.security import security_headers

blueprint = Blueprint("root", __name__)


class CorsSummary(BaseModel):
    mode: Literal["any-origin", "allow-list"]
    origins: list[str]
    credentials: bool


class RateLimitSummary(BaseModel):
    enabled: bool
    per_minute: dict[str, int]
    exempt: list[str]
    store: Literal["redis"] | None


class SecuritySummary(BaseModel):
    cors: CorsSummary
    rate_limits: RateLimitSummary
    headers: dict[str, str]


class RedisClusterSummary(BaseModel):
    mode: Literal["cluster", "standalone", "not configured"]
    routes: dict[str, str]


class ServiceInfo(BaseModel):
    name: str
    version: str
    description: str
    docs: str
    redoc: str
    openapi: str
    health: str
    metrics: str
    examples: dict[str, str]
    security: SecuritySummary
    redis_cluster: RedisClusterSummary
    note: str


_EXAMPLES = {
    "vault": "/examples/vault/secret/{service_name}",
    "postgres": "/examples/database/postgres/query",
    "mysql": "/examples/database/mysql/query",
    "mongodb": "/examples/database/mongodb/query",
    "cache": "/examples/cache/{key}",
    "messaging": "/examples/messaging/publish?queue_name={queue_name}",
    "queue_info": "/examples/messaging/queue/{queue_name}/info",
    "redis_cluster": "/redis/cluster/nodes",
    "all_health": "/health/all",
}
_CLUSTER_ROUTES = {
    "nodes": "/redis/cluster/nodes",
    "slots": "/redis/cluster/slots",
    "info": "/redis/cluster/info",
    "node_info": "/redis/nodes/{node_name}/info",
    "invalidate_cached_responses": "/redis/cache/responses?pattern={glob}",
}
_PROBES = ["/health/live", "/health/ready", "/health/startup"]
_NOTE = (
    "Backend routes answer 503 application/problem+json when their backend is not configured "
    "or down; every error is RFC 7807 problem+json. Timestamps are ISO 8601."
)
_INFO_KEY = "quartstack.service_info"


def _settings(app: Quart) -> Settings:
    from quartstack.app import SETTINGS_KEY  # the app module imports this blueprint

    settings: Settings = app.extensions[SETTINGS_KEY]
    return settings


def _security(app: Quart, settings: Settings) -> SecuritySummary:
    redis = app.extensions.get("redis")
    limiting = settings.rate_limit_enabled and isinstance(redis, RedisClient)
    headers = security_headers(debug=settings.debug, docs=False)
    return SecuritySummary(
        cors=CorsSummary(
            mode="any-origin" if settings.debug else "allow-list",
            origins=["*"] if settings.debug else list(settings.cors_origins),
            credentials=not settings.debug,
        ),
        rate_limits=RateLimitSummary(
            enabled=limiting,
            per_minute={
                "default": settings.rate_limit_default,
                "/health/*": settings.rate_limit_health,
                "/metrics": settings.rate_limit_metrics,
            },
            exempt=_PROBES,
            store="redis" if limiting else None,
        ),
        headers={name.decode(): value.decode() for name, value in headers},
    )


def _redis_cluster(app: Quart) -> RedisClusterSummary:
    redis = app.extensions.get("redis")
    mode: Literal["cluster", "standalone", "not configured"] = "not configured"
    if isinstance(redis, RedisClient):
        # As far as this process knows: one configured node is standalone until it
        # has answered that it runs in cluster mode.
        mode = "cluster" if redis.is_cluster or len(redis.nodes) > 1 else "standalone"
    return RedisClusterSummary(mode=mode, routes=_CLUSTER_ROUTES)


def _static_info(app: Quart) -> dict[str, Any]:
    """The parts that never change for an app, built once."""
    info: dict[str, Any] | None = app.extensions.get(_INFO_KEY)
    if info is None:
        info = app.extensions[_INFO_KEY] = {
            "name": NAME,
            "version": __version__,
            "description": (
                "Async Quart service showing production integration of Vault, PostgreSQL, "
                "MySQL, MongoDB, Redis and RabbitMQ"
            ),
            "docs": "/docs",
            "redoc": "/redoc",
            "openapi": "/openapi.json",
            "health": "/health/",
            "metrics": "/metrics",
            "examples": _EXAMPLES,
            "security": _security(app, _settings(app)),
            "note": _NOTE,
        }
    return info


@blueprint.get("/")
@requires("public")
@validate_response(ServiceInfo)
async def service_info() -> ServiceInfo:
    """Service name, version, links to docs, health, metrics and the examples, a summary
    of its security settings and of the Redis mode."""
    return ServiceInfo(**_static_info(current_app), redis_cluster=_redis_cluster(current_app))
