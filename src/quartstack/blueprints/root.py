"""``/``: what this service is and where its parts are."""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import validate_response

from quartstack import NAME, __version__

blueprint = Blueprint("root", __name__)


class ServiceInfo(BaseModel):
    name: str
    version: str
    description: str
    docs: str
    openapi: str
    health: str
    metrics: str
    examples: dict[str, str]


_INFO = ServiceInfo(
    name=NAME,
    version=__version__,
    description=(
        "Async Quart service showing production integration of Vault, PostgreSQL, MySQL, "
        "MongoDB, Redis and RabbitMQ"
    ),
    docs="/docs",
    openapi="/openapi.json",
    health="/health/",
    metrics="/metrics",
    examples={
        "vault": "/examples/vault/secret/{service_name}",
        "postgres": "/examples/database/postgres/query",
        "mysql": "/examples/database/mysql/query",
        "mongodb": "/examples/database/mongodb/query",
        "cache": "/examples/cache/{key}",
        "messaging": "/examples/messaging/publish?queue_name={queue_name}",
        "queue_info": "/examples/messaging/queue/{queue_name}/info",
        "redis_cluster": "/redis/cluster/nodes",
        "all_health": "/health/all",
    },
)


@blueprint.get("/")
@validate_response(ServiceInfo)
async def service_info() -> ServiceInfo:
    """Service name, version and links to docs, health, metrics and the examples."""
    return _INFO
