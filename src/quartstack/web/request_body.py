"""Reject request bodies the service cannot accept before any handler runs.

A body must declare a content type we understand and stay within the size
limit; malformed JSON becomes a 400 problem instead of Quart's HTML error.
"""

from __future__ import annotations

from typing import Any, NoReturn

from quart import Quart, Request, request

from quartstack.web.headers import optional_header
from quartstack.web.problems import Problem

ACCEPTED_MEDIA_TYPES = frozenset(
    {
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "text/plain",
    }
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ProblemRequest(Request):
    """Quart's request, raising a problem when the JSON body cannot be parsed."""

    def on_json_loading_failed(self, error: Exception) -> NoReturn:
        raise Problem(400, "malformed-json", "The request body is not valid JSON.")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _has_body() -> bool:
    if (request.content_length or 0) > 0:
        return True
    return (optional_header("Transfer-Encoding") or "").lower() == "chunked"


async def check_request_body() -> None:
    if request.method not in _BODY_METHODS or not _has_body():
        return
    limit = request.max_content_length
    if limit is not None and (request.content_length or 0) > limit:
        raise Problem(413, "payload-too-large", f"The request body exceeds {limit} bytes.")
    content_type = request.headers.get("Content-Type")
    if not content_type:
        raise Problem(400, "missing-content-type", "A request body needs a Content-Type header.")
    media_type = _media_type(content_type)
    if media_type not in ACCEPTED_MEDIA_TYPES and not media_type.endswith("+json"):
        raise Problem(
            415,
            "unsupported-media-type",
            f"Content-Type {media_type!r} is not accepted; send JSON, form, multipart or text.",
        )


def init_request_body_checks(app: Quart, max_body_bytes: int) -> None:
    app.request_class = ProblemRequest
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.before_request(check_request_body)


def json_object_body(data: Any) -> dict[str, Any]:
    """The parsed body if it is a JSON object, else a 422 problem."""
    if not isinstance(data, dict):
        raise Problem(
            422,
            "validation-error",
            "The request body must be a JSON object.",
            errors=[{"field": "body", "message": "must be a JSON object", "type": "dict_type"}],
        )
    return data
