"""Reject request bodies the service cannot accept before any handler runs.

A body must declare a content type we understand and stay within the size
limit; malformed JSON becomes a 400 problem instead of Quart's HTML error.

JSON is parsed strictly (RFC 8259): UTF-8 only, no ``NaN``/``Infinity``, no
number that overflows to infinity, no lone surrogate escape, and at most
:data:`MAX_JSON_DEPTH` levels of nesting. Python's parser accepts the first
ones and raises ``RecursionError`` (a 500) on deep nesting; every one of these
would also fail later, when the value is encoded again to publish or answer.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from itertools import accumulate
from typing import Any, NoReturn, cast
from urllib.parse import unquote_to_bytes

from quart import Quart, Request, request
from quart.helpers import _split_blueprint_path
from werkzeug.exceptions import RequestTimeout

from quartstack.server_fixes import MAX_REQUEST_HEAD_BYTES
from quartstack.settings import Settings
from quartstack.web.context import current_request
from quartstack.web.headers import optional_header
from quartstack.web.problems import Problem, validation_problem
from quartstack.web.request_steps import request_steps

ACCEPTED_MEDIA_TYPES = frozenset(
    {
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "text/plain",
    }
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

#: Deepest nesting of arrays and objects a JSON body may have (README: Errors).
MAX_JSON_DEPTH = 100

_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class MalformedJSON(ValueError):
    """A body that is not JSON this service accepts; the message says why (no input)."""


def _reject_constant(name: str) -> NoReturn:
    raise MalformedJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise MalformedJSON("a number is out of range")
    return value


def _depth(data: bytes) -> int:
    """Deepest nesting of ``data``, ignoring brackets inside strings."""
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return 0  # cannot be deeper than the limit: skip the scan
    brackets = _BRACKETS.findall(_JSON_STRING.sub(b"", data))
    steps = (1 if bracket in (b"[", b"{") else -1 for bracket in brackets)
    return max(accumulate(steps, initial=0))


def loads_strict(data: bytes) -> Any:
    """Parse a JSON body strictly (see the module docstring); :class:`MalformedJSON`
    or another ``ValueError`` when it is not acceptable."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedJSON("the body is not valid UTF-8") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise MalformedJSON(f"it is nested deeper than {MAX_JSON_DEPTH} levels")
    value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    if _SURROGATE_ESCAPE.search(data):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedJSON("a string holds a lone surrogate escape") from None
    return value


class ProblemRequest(Request):
    """Quart's request, parsing JSON strictly and raising a problem when it cannot."""

    #: The whole body once read with ``cache=True``: later reads (the idempotency
    #: fingerprint, the JSON parse, the handler) take it from here. Quart's own
    #: ``get_data`` awaits the body under ``asyncio.wait_for`` every time, which
    #: creates a task per read on Python 3.11; the first read here waits under
    #: ``asyncio.timeout`` (the same ``BODY_TIMEOUT``, no task).
    _body_read: bytes | None = None

    async def get_data(  # type: ignore[override]
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> str | bytes:
        if not cache or parse_form_data:  # Quart's own semantics (cache=False frees it)
            self._body_read = None
            return await super().get_data(cache, as_text, parse_form_data)
        data = self._body_read
        if data is None:
            data = self._body_read = await self._whole_body()
        return data.decode() if as_text else data

    async def _whole_body(self) -> bytes:
        """The body once it has all arrived; a 408 past ``BODY_TIMEOUT``, as in Quart."""
        try:
            async with asyncio.timeout(self.body_timeout):
                return cast(bytes, await self.body)
        except TimeoutError as exc:
            raise RequestTimeout() from exc

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """Quart's ``get_json`` with :func:`loads_strict` in place of ``json.loads``."""
        if cache and self._cached_json[silent] is not Ellipsis:
            return self._cached_json[silent]
        if not (force or self.is_json):
            return None
        data = cast(bytes, await self.get_data(cache=cache, as_text=False, parse_form_data=False))
        try:
            result = loads_strict(data)
        except (ValueError, RecursionError) as error:
            result = None if silent else self.on_json_loading_failed(error)
        if cache:
            self._cached_json[silent] = result
        return result

    @property
    def blueprints(self) -> list[str]:
        """Quart's answer, from a cache by endpoint: Quart asks three times a request and
        imports a helper and re-splits the endpoint each time."""
        rule = self.url_rule
        return _blueprints_of(rule.endpoint) if rule is not None else []

    def on_json_loading_failed(self, error: Exception) -> NoReturn:
        reason = f": {error}" if isinstance(error, MalformedJSON) else ""
        raise Problem(400, "malformed-json", f"The request body is not valid JSON{reason}.")


@lru_cache(maxsize=1024)  # endpoints are the app's own: a bounded set
def _blueprints_of(endpoint: str) -> list[str]:
    """The blueprint and its parents, innermost first (a shared list, as Quart's is)."""
    if "." not in endpoint:
        return []
    return _split_blueprint_path(endpoint.rsplit(".", 1)[0])


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _has_body() -> bool:
    if (request.content_length or 0) > 0:
        return True
    return (optional_header("Transfer-Encoding") or "").lower() == "chunked"


def _head_size(scope: Mapping[str, Any]) -> int:
    """Bytes of the request line and headers as sent (give or take the separators)."""
    size = len(scope["method"]) + len(scope["raw_path"]) + len(scope["query_string"]) + 12
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 4
    return size


def _percent_decodes_to_utf8(raw: bytes) -> bool:
    if b"%" not in raw:
        return True  # the server refuses raw non-ASCII bytes in the target itself
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _ambiguous_framing(scope: Mapping[str, Any]) -> bool:
    """``Transfer-Encoding`` with ``Content-Length``, or on HTTP/1.0 (RFC 9112 6.1, 6.3)."""
    names = {name.lower() for name, _ in scope["headers"]}
    if b"transfer-encoding" not in names:
        return False
    return b"content-length" in names or scope["http_version"] == "1.0"


def check_request_head() -> None:
    """Refuse a request head the service will not serve, before anything else runs.

    431 for a request line plus headers over :data:`MAX_REQUEST_HEAD_BYTES`:
    Hypercorn's limit only applies to a head that arrives in several reads, one that
    arrives in a single read (up to 64 KiB) reaches the app. 400 for a path or query
    whose percent-escapes are not UTF-8. 400 and the connection closed for framing a
    proxy in front could read differently (request smuggling): the body is not read,
    so nothing after it on the connection is served.
    """
    scope = current_request().scope
    if _head_size(scope) > MAX_REQUEST_HEAD_BYTES:
        raise Problem(
            431,
            "headers-too-large",
            f"The request line and headers exceed {MAX_REQUEST_HEAD_BYTES} bytes.",
        )
    if not (
        _percent_decodes_to_utf8(scope.get("raw_path") or b"")
        and _percent_decodes_to_utf8(scope["query_string"])
    ):
        # Decoded with replacement characters, the request would silently mean another one.
        raise Problem(
            400, "invalid-encoding", "The path or query string is not percent-encoded UTF-8."
        )
    if scope["http_version"].startswith("1") and _ambiguous_framing(scope):
        raise Problem(
            400,
            "ambiguous-framing",
            "Transfer-Encoding is not accepted with Content-Length or on HTTP/1.0.",
            headers={"Connection": "close"},
        )


def check_request_body() -> None:
    request = current_request()
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


class RequestBodyChecks:
    """Refuse bodies the service cannot accept before any handler runs (see the module)."""

    KEY = "quartstack.request_body_checks"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def init_app(self, app: Quart) -> None:
        app.extensions[self.KEY] = self
        app.request_class = ProblemRequest
        app.config["MAX_CONTENT_LENGTH"] = self.settings.max_body_bytes
        steps = request_steps(app)
        steps.before(check_request_head)
        steps.before(check_request_body)


def json_object_body(data: Any) -> dict[str, Any]:
    """The parsed body if it is a JSON object, else a 422 problem."""
    if not isinstance(data, dict):
        raise validation_problem("request body", "body", "must be a JSON object", "dict_type")
    return data
