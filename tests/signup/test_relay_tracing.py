"""The outbox keeps the writing request's trace context, and the relay's publish (later,
in its own trace) links back to it and sends its own context with the event."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from quartstack.signup import users
from tests.signup.helpers import Received, sql, unique_email
from tests.support.app import running_app
from tests.support.spans import named, spans  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("migrated")


async def test_the_relay_publish_links_to_the_request_that_wrote_the_event(
    signup_settings,
    signup_db,
    events,
    exchange,
    spans,  # noqa: F811
):
    received = Received(events)
    async with running_app(**signup_settings) as (app, _client):
        postgres = app.extensions["postgres"]
        with trace.get_tracer("tests").start_as_current_span("POST /users") as request:
            user = await users.register_user(postgres, unique_email().lower(), "T")
        untraced = await users.register_user(postgres, unique_email().lower(), "U")
        rows = await sql(
            signup_db,
            "SELECT aggregate_id, event_id::text, trace_context FROM outbox "
            "WHERE aggregate_id = ANY($1::uuid[])",
            [user.id, untraced.id],
        )
        by_user = {row["aggregate_id"]: row for row in rows}
        await received.wait_for({row["event_id"] for row in rows})

    cause = request.get_span_context()
    stored = json.loads(by_user[user.id]["trace_context"])
    assert stored["traceparent"].startswith(f"00-{cause.trace_id:032x}-{cause.span_id:016x}-")
    assert by_user[untraced.id]["trace_context"] is None

    event_id = by_user[user.id]["event_id"]
    publishes = {
        dict(s.attributes or {})["messaging.message.id"]: s
        for s in named(spans, f"{exchange} publish")
    }
    publish = publishes[event_id]
    assert publish.kind == SpanKind.PRODUCER
    assert publish.context.trace_id != cause.trace_id  # the relay's own trace ...
    assert [(link.context.trace_id, link.context.span_id) for link in publish.links] == [
        (cause.trace_id, cause.span_id)  # ... linked to the request's
    ]
    assert dict(publish.attributes or {})["messaging.rabbitmq.destination.routing_key"] == (
        "user.registered"
    )
    assert not publishes[by_user[untraced.id]["event_id"]].links

    [message] = [m for m in received.messages if m.message_id == event_id]
    traceparent = (message.headers or {})["traceparent"]
    assert isinstance(traceparent, str)
    context = publish.context
    assert traceparent.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
