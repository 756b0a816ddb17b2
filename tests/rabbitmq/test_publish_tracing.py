"""Publishing through the API traced: a producer span per message, and its context in
the message headers, read back from the queue with an independent client."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from tests.rabbitmq.broker import drain
from tests.support.app import running_app
from tests.support.spans import named, spans  # noqa: F401  (fixture)

PUBLISH = "/examples/messaging/publish?queue_name={}"


async def test_the_publish_span_context_travels_in_the_message_headers(
    app_settings,
    amqp,
    queue_name,
    spans,  # noqa: F811
):
    secret_note = "body-only-9f3c"
    async with running_app(**app_settings) as (_, client):
        with trace.get_tracer("tests").start_as_current_span("caller") as caller:
            response = await client.post(PUBLISH.format(queue_name), json={"note": secret_note})
        assert response.status_code == 200
        message_id = (await response.get_json())["message_id"]

    [publish] = named(spans, f"{queue_name} publish")
    assert publish.kind == SpanKind.PRODUCER
    assert publish.context.trace_id == caller.get_span_context().trace_id
    attributes = dict(publish.attributes or {})
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.destination.name"] == queue_name
    assert attributes["messaging.rabbitmq.destination.routing_key"] == queue_name
    assert attributes["messaging.operation.type"] == "send"
    assert attributes["messaging.message.id"] == message_id
    assert not any(secret_note in str(v) for v in attributes.values())

    [received] = await drain(await amqp.channel(), queue_name)
    assert received.message_id == message_id
    traceparent = (received.headers or {})["traceparent"]
    context = publish.context
    assert isinstance(traceparent, str)
    assert traceparent.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
