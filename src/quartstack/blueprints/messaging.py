"""``/examples/messaging``: publish JSON messages to durable queues, inspect queues."""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel, field_validator
from quart import Blueprint, g
from quart_schema import document_request, validate_response

from quartstack.auth.scopes import requires
from quartstack.blueprints.openapi import link, path_param, problems
from quartstack.integrations.base import get_backend
from quartstack.integrations.rabbitmq.client import RabbitMQClient
from quartstack.web.context import current_request
from quartstack.web.headers import optional_header
from quartstack.web.problems import Problem, validation_problem
from quartstack.web.querystring import validate_query
from quartstack.web.request_body import json_object_body

blueprint = Blueprint("messaging", __name__, url_prefix="/examples/messaging")

_QUEUE_PATTERN = r"^[a-zA-Z0-9_.-]+$"
# "." and ".." match the pattern but are path segments, not names: in a URL (this
# API's info route, the broker's management API) they mean "here" and "up".
_DOT_NAMES = frozenset({".", ".."})
_DOT_MESSAGE = "'.' and '..' are not queue names"
#: Message ids derived from an Idempotency-Key live in this namespace.
_MESSAGE_ID_NAMESPACE = uuid.UUID("5d0c3e8a-3f7e-4c1b-9a59-2f1a8c6a7e10")


class PublishQuery(BaseModel):
    queue_name: str = Field(min_length=1, max_length=100, pattern=_QUEUE_PATTERN)

    @field_validator("queue_name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.startswith("amq."):
            raise ValueError("queue names starting with 'amq.' are reserved by the broker")
        if value in _DOT_NAMES:
            raise ValueError(_DOT_MESSAGE)
        return value


class MessageBody(RootModel[dict[str, Any]]):
    """Any non-empty JSON object (at most RABBITMQ_MAX_MESSAGE_BYTES, 1 MiB by default)."""

    root: dict[str, Any] = Field(min_length=1)


class Published(BaseModel):
    queue: str
    message: dict[str, Any]
    action: Literal["published"]
    message_id: str = Field(
        description="AMQP message-id; stable across retries with the same Idempotency-Key"
    )


class QueueStatus(BaseModel):
    queue: str
    exists: bool
    message_count: int | None = Field(description="null when the queue does not exist")
    consumer_count: int | None = Field(description="null when the queue does not exist")


@blueprint.post("/publish")
@link(
    200,
    "QueueInfo",
    "get_queue_info",
    {"queue_name": "$response.body#/queue"},
    "The queue the message went to (publishing declares it): its message count",
)
@requires("write")
@validate_query(PublishQuery)
@document_request(MessageBody)
@validate_response(Published)
@problems(400, 409, 413, 415, 422, 429, 503, 504)
async def publish(query_args: PublishQuery) -> Published:
    """Publish the JSON object body, persistent, to durable queue ``queue_name``.

    A 200 means the broker confirmed the message; a 503 means it may not have it
    (retry with the same ``Idempotency-Key`` to keep the message id).
    """
    rabbitmq = get_backend("rabbitmq", RabbitMQClient)
    message = await _message_object(rabbitmq.settings.rabbitmq_max_message_bytes)
    queue = query_args.queue_name
    message_id = _message_id(queue)
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    await rabbitmq.publish(
        queue, body, message_id=message_id, correlation_id=getattr(g, "request_id", None)
    )
    return Published(queue=queue, message=message, action="published", message_id=message_id)


@blueprint.get("/queue/<queue_name>/info")
@requires("read")
@path_param("queue_name", _QUEUE_PATTERN, 100)
@validate_response(QueueStatus)
@problems(422, 429, 503, 504)
async def queue_info(queue_name: str) -> QueueStatus:
    """Message and consumer counts by a passive declare; a missing queue is not created."""
    if queue_name in _DOT_NAMES:
        raise validation_problem("path parameter 'queue_name'", "path.queue_name", _DOT_MESSAGE)
    info = await get_backend("rabbitmq", RabbitMQClient).queue_info(queue_name)
    return QueueStatus(
        queue=queue_name,
        exists=info.exists,
        message_count=info.message_count,
        consumer_count=info.consumer_count,
    )


async def _message_object(limit: int) -> dict[str, Any]:
    """The request body as a non-empty JSON object of at most ``limit`` bytes.

    Checked here because this route's limit is below the app-wide one, and the
    body may already have been read (the idempotency fingerprint) or be chunked.
    """
    request = current_request()
    if (request.content_length or 0) > limit:
        raise _too_large(limit)
    data = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    if len(data) > limit:
        raise _too_large(limit)
    if not data:
        raise validation_problem(
            "request body", "body", "a non-empty JSON object is required", "missing"
        )
    if not request.is_json:
        raise Problem(
            415,
            "unsupported-media-type",
            "Messages are JSON: send the body as application/json.",
        )
    message = json_object_body(await request.get_json())
    if not message:
        raise validation_problem("request body", "body", "must not be an empty object", "too_short")
    return message


def _too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", f"A message may be at most {limit} bytes.")


def _message_id(queue: str) -> str:
    """A new id, or one derived from ``Idempotency-Key`` so a client's retry of an
    unconfirmed publish carries the same id and consumers can drop the duplicate."""
    key = optional_header("Idempotency-Key")
    if key:
        return str(uuid.uuid5(_MESSAGE_ID_NAMESPACE, f"{queue}\n{key}"))
    return str(uuid.uuid4())
