"""Health and Kubernetes probe routes.

``/health/live`` and ``/health/`` touch no backend; ``/health/startup`` and
``/health/ready`` reflect the lifecycle and the last background check of the
required backends; the per-backend and ``/health/all`` routes check backends
now, each bounded by its own timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, current_app
from quart_schema import validate_response

from quartstack.auth.scopes import requires
from quartstack.blueprints.openapi import problems
from quartstack.integrations.base import Backend, registry
from quartstack.integrations.redis.response_cache import cached_response
from quartstack.lifecycle import lifecycle
from quartstack.metrics import READINESS
from quartstack.readiness import check_backend as readiness_check
from quartstack.settings import BACKEND_NAMES

blueprint = Blueprint("health", __name__, url_prefix="/health")


class Status(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]


class Startup(BaseModel):
    status: Literal["started", "starting"]


class BackendHealth(BaseModel):
    """Health of one backend; the other fields depend on the backend."""

    model_config = ConfigDict(extra="allow")
    status: Literal["healthy", "unhealthy", "disabled"]
    # reported when there is one, not as ``null`` on every healthy check
    error: str | None = Field(default=None, exclude_if=lambda value: value is None)


class AllHealth(BaseModel):
    status: Literal["healthy", "degraded"]
    services: dict[str, BackendHealth]


_OK = Status(status="ok")


@blueprint.get("/")
@requires("public")
@validate_response(Status)
async def process_health() -> Status:
    """The process is up; touches no backend."""
    return _OK


@blueprint.get("/live")
@requires("public")
@validate_response(Status)
async def liveness() -> Status:
    """Liveness: the event loop answers. Never checks a backend, so a dead
    database cannot make Kubernetes restart healthy pods."""
    return _OK


@blueprint.get("/startup")
@requires("public")
@validate_response(Startup, 200)
@validate_response(Startup, 503)
async def startup() -> tuple[Startup, int]:
    """Startup probe: 503 until the initial Vault login and pool creation are done."""
    if lifecycle().started:
        return Startup(status="started"), 200
    return Startup(status="starting"), 503


async def check_backend(backend: Backend) -> tuple[bool, dict[str, Any]]:
    """Check one backend now, bounded by ``HEALTH_TIMEOUT_SECONDS``; never raises."""
    return await readiness_check(backend, current_app.config["QUARTSTACK_HEALTH_TIMEOUT"])


@blueprint.get("/ready")
@requires("public")
@validate_response(Readiness, 200)
@validate_response(Readiness, 503)
async def readiness() -> tuple[Readiness, int]:
    """Readiness: started, not draining, and every required backend up by its last
    background check (no backend is called here: see quartstack.readiness)."""
    state = lifecycle()
    checks = {
        "startup": "ok" if state.started else "starting",
        "shutdown": "draining" if state.draining else "ok",
    }
    monitor = state.monitor
    for name in registry().required:
        checks[name] = monitor.status(name) if monitor is not None else "starting"
    if monitor is not None:
        checks.update(monitor.check_results())
    ready = all(value == "ok" for value in checks.values())
    READINESS.set(1 if ready else 0)
    return Readiness(status="ready" if ready else "not_ready", checks=checks), (
        200 if ready else 503
    )


async def all_backends_health() -> tuple[AllHealth, int]:
    reg = registry()
    names = list(BACKEND_NAMES)
    configured = [reg.get(name) for name in names]
    results = await asyncio.gather(*(check_backend(b) for b in configured if b is not None))
    checked = iter(results)
    services: dict[str, BackendHealth] = {}
    healthy_all = True
    for name, backend in zip(names, configured, strict=True):
        if backend is None:
            services[name] = BackendHealth(status="disabled", error="not configured")
            continue
        healthy, body = next(checked)
        healthy_all = healthy_all and healthy
        services[name] = BackendHealth.model_validate(body)
    status = "healthy" if healthy_all else "degraded"
    return AllHealth(status=status, services=services), 200 if healthy_all else 503


@blueprint.get("/all")
@requires("read")
@cached_response(ttl=30, statuses=(200, 503))
@validate_response(AllHealth, 200)
@validate_response(AllHealth, 503)
async def all_health() -> tuple[AllHealth, int]:
    """Every configured backend, checked concurrently; unconfigured ones are 'disabled'
    and do not count against the overall status."""
    return await all_backends_health()


@blueprint.get("/<any(vault, postgres, mysql, mongodb, redis, rabbitmq):service>")
@requires("read")
@validate_response(BackendHealth, 200)
@validate_response(BackendHealth, 503)
@problems(404)
async def backend_health(service: str) -> tuple[BackendHealth, int]:
    """One backend: 200 healthy, 503 unhealthy or not configured (with ``error``)."""
    backend = registry().get(service)
    if backend is None:
        return BackendHealth(status="unhealthy", error=f"{service} is not configured"), 503
    healthy, body = await check_backend(backend)
    return BackendHealth.model_validate(body), 200 if healthy else 503
