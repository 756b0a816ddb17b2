"""``/metrics``: Prometheus exposition of the service's own registry.

Text format 0.0.4 by default; OpenMetrics when the scrape asks for it (``Accept:
application/openmetrics-text``, what Prometheus sends when exemplar storage is on), the
only format that carries exemplars (the trace ids on the request duration histogram).
"""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from quart import Blueprint, Response, request

from quartstack.auth.scopes import requires
from quartstack.blueprints.openapi import text_response
from quartstack.metrics import REGISTRY

blueprint = Blueprint("metrics", __name__)

OPENMETRICS = "application/openmetrics-text"


@blueprint.get("/metrics")
@requires("metrics")
@text_response(
    "text/plain",
    "Prometheus text exposition, format 0.0.4; OpenMetrics (with exemplars) when the "
    "Accept header asks for application/openmetrics-text",
)
async def metrics() -> Response:
    """Prometheus text exposition (format 0.0.4), or OpenMetrics if asked for."""
    accept = request.headers.get("Accept", "")
    if OPENMETRICS in accept:
        encoder, content_type = choose_encoder(accept)
        if content_type.startswith(OPENMETRICS):
            return Response(encoder(REGISTRY), content_type=content_type)
    return Response(generate_latest(REGISTRY), content_type=CONTENT_TYPE_PLAIN_0_0_4)
