"""The signup events as the worker reads them: the one place that knows their shape.

The relay (``quartstack.signup``) publishes each outbox row unchanged: a JSON body
``{"schema_version": 1, "event_id", "type", "occurred_at", "data": {...}}`` with
``message_id`` = event id and ``type`` = routing key. ``data`` is ``{id, email, name,
created_at}`` for ``user.registered`` (email and name are null once the user was
erased) and ``{id}`` for ``user.deleted``.

Anything else is poison (:class:`InvalidEvent`): no retry can fix it, so the
consumer dead-letters it at once with the reason.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSIONS = frozenset({1})
USER_REGISTERED = "user.registered"
USER_DELETED = "user.deleted"
EVENT_TYPES = (USER_REGISTERED, USER_DELETED)
#: Longest email the write side accepts (RFC 5321 path limit).
_EMAIL_MAX = 254


class InvalidEvent(Exception):
    """The message is not an event this worker can apply; ``reason`` goes to the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class UserRegistered:
    event_id: str
    occurred_at: datetime
    user_id: str
    email: str | None
    name: str | None
    created_at: datetime

    @property
    def email_domain(self) -> str | None:
        return self.email.rpartition("@")[2] if self.email else None


@dataclass(frozen=True)
class UserDeleted:
    event_id: str
    occurred_at: datetime
    user_id: str


UserEvent = UserRegistered | UserDeleted


def parse_event(body: bytes, *, message_id: str | None, message_type: str | None) -> UserEvent:
    """The event in an AMQP message, or :class:`InvalidEvent` saying what is wrong."""
    try:
        envelope = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidEvent("body is not JSON") from None
    if not isinstance(envelope, dict):
        raise InvalidEvent("body is not a JSON object")
    version = envelope.get("schema_version")
    if version not in SCHEMA_VERSIONS:
        raise InvalidEvent(f"unknown schema_version {version!r}")
    event_type = envelope.get("type")
    if event_type not in EVENT_TYPES:
        raise InvalidEvent(f"unknown event type {event_type!r}")
    if message_type is not None and message_type != event_type:
        raise InvalidEvent(f"message type {message_type!r} differs from the body's")
    event_id = _uuid(envelope.get("event_id"), "event_id")
    if message_id is not None and message_id != event_id:
        raise InvalidEvent("message_id differs from the body's event_id")
    occurred_at = _timestamp(envelope.get("occurred_at"), "occurred_at")
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise InvalidEvent("data is not an object")
    user_id = _uuid(data.get("id"), "data.id")
    if event_type == USER_DELETED:
        return UserDeleted(event_id, occurred_at, user_id)
    return UserRegistered(
        event_id,
        occurred_at,
        user_id,
        _optional_text(data.get("email"), "data.email", _EMAIL_MAX, email=True),
        _optional_text(data.get("name"), "data.name", 100),
        _timestamp(data.get("created_at"), "data.created_at"),
    )


def _uuid(value: Any, field: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (TypeError, ValueError, AttributeError):
        raise InvalidEvent(f"{field} is not a UUID") from None


def _timestamp(value: Any, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidEvent(f"{field} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise InvalidEvent(f"{field} has no time zone")
    return parsed.astimezone(UTC)


def _optional_text(value: Any, field: str, max_length: int, *, email: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise InvalidEvent(f"{field} is not a string of 1-{max_length} characters")
    if email and (value.count("@") != 1 or value != value.lower() or value.endswith("@")):
        raise InvalidEvent(f"{field} is not a normalised email address")
    return value
