"""``/metrics``: Prometheus text exposition of the service's own registry."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from quart import Blueprint, Response

from quartstack.auth.scopes import requires
from quartstack.blueprints.openapi import text_response
from quartstack.metrics import REGISTRY

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
@requires("metrics")
@text_response("text/plain", "Prometheus text exposition, format 0.0.4")
async def metrics() -> Response:
    """Prometheus text exposition (format 0.0.4)."""
    return Response(generate_latest(REGISTRY), content_type=CONTENT_TYPE_PLAIN_0_0_4)
