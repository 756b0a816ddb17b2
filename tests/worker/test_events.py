"""The event parser: the relay's envelope is accepted, anything else is poison with a reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from quartstack.worker.events import InvalidEvent, UserDeleted, UserRegistered, parse_event
from tests.worker.helpers import deleted, registered


def _parse(body: dict[str, Any] | bytes, **props: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    props.setdefault("message_id", None)
    props.setdefault("message_type", None)
    return parse_event(raw, **props)


def test_registered_in_the_relays_shape():
    body = registered("ann@example.org")
    event = _parse(body, message_id=body["event_id"], message_type="user.registered")
    assert isinstance(event, UserRegistered)
    assert event.user_id == body["data"]["id"] and event.email_domain == "example.org"


def test_registered_after_erasure_has_no_personal_data():
    body = registered()
    body["data"]["email"] = body["data"]["name"] = None  # the write side redacts the outbox
    event = _parse(body)
    assert isinstance(event, UserRegistered) and event.email is None and event.email_domain is None


def test_deleted():
    event = _parse(deleted("0b8f7a4e-7a59-4f55-9a0e-6f1f8c1a2b3c"))
    assert isinstance(event, UserDeleted)


def _with(path: str, value: Any) -> dict[str, Any]:
    body = registered()
    target = body
    *parents, last = path.split(".")
    for parent in parents:
        target = target[parent]
    target[last] = value
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "body is not JSON"),
        (b"[1]", "body is not a JSON object"),
        (_with("schema_version", 2), "unknown schema_version 2"),
        (_with("type", "user.renamed"), "unknown event type"),
        (_with("event_id", "nope"), "event_id is not a UUID"),
        (_with("occurred_at", "yesterday"), "occurred_at is not an ISO 8601"),
        (_with("occurred_at", "2026-12-01T10:00:00"), "occurred_at has no time zone"),
        (_with("data", []), "data is not an object"),
        (_with("data.id", 7), "data.id is not a UUID"),
        (_with("data.email", "Ann@Example.org"), "data.email is not a normalised email"),
        (_with("data.name", ""), "data.name is not a string"),
    ],
)
def test_invalid_events_say_why(body: Any, reason: str):
    with pytest.raises(InvalidEvent) as caught:
        _parse(body)
    assert reason in caught.value.reason


def test_message_properties_must_match_the_body():
    body = registered()
    with pytest.raises(InvalidEvent, match="message_id differs"):
        _parse(body, message_id="another")
    with pytest.raises(InvalidEvent, match="message type"):
        _parse(body, message_type="user.deleted")


def test_the_relays_bytes_as_postgresql_renders_the_jsonb_payload():
    """The outbox keeps the payload as jsonb and the relay publishes ``payload::text``:
    keys reordered, a space after each separator (quartstack.signup.users.event_body)."""
    raw = (
        b'{"data": {"id": "5b0e7a4e-2c1d-4a8b-9f3e-0c1d2e3f4a5b", "name": "Ann", "email": '
        b'"ann@example.org", "created_at": "2026-12-02T01:00:00.123456+00:00"}, "type": '
        b'"user.registered", "event_id": "9c2b1a0f-3e4d-4c5b-8a69-7f8e9d0c1b2a", '
        b'"occurred_at": "2026-12-02T01:00:00.123456+00:00", "schema_version": 1}'
    )
    event = parse_event(
        raw, message_id="9c2b1a0f-3e4d-4c5b-8a69-7f8e9d0c1b2a", message_type="user.registered"
    )
    assert isinstance(event, UserRegistered)
    assert (event.user_id, event.email_domain) == (
        "5b0e7a4e-2c1d-4a8b-9f3e-0c1d2e3f4a5b",
        "example.org",
    )
