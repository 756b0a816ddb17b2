"""Scrub known secret values from JSON success bodies.

Problem bodies are already scrubbed where they are built; this covers the rest: a
Redis value, a health detail or any future body that happens to hold a password
the process has learned (see :mod:`quartstack.redaction`) answers with ``***`` in
its place. Values are matched as they appear in the JSON text, so a secret with
characters JSON escapes (quotes, backslashes) is caught by field-name masking
only.

The hook is registered last, so it runs first among the ``after_request`` hooks:
the idempotency store and the access log see the scrubbed body.
"""

from __future__ import annotations

from quart import Quart, Response
from quart.wrappers.response import DataBody

from quartstack.redaction import redact
from quartstack.settings import Settings


async def scrub_success_body(response: Response) -> Response:
    """Replace every registered secret value in a JSON success body with ``***``."""
    if response.status_code >= 400 or response.mimetype != "application/json":
        return response
    if not isinstance(response.response, DataBody):  # streamed: not ours to buffer
        return response
    text = response.response.data.decode("utf-8", "replace")
    scrubbed = redact(text)
    if scrubbed != text:
        response.set_data(scrubbed)
    return response


class SuccessBodyScrubbing:
    """Mask known secret values in success bodies too (see the module)."""

    KEY = "quartstack.success_body_scrubbing"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def init_app(self, app: Quart) -> None:
        app.extensions[self.KEY] = self
        app.after_request(scrub_success_body)
