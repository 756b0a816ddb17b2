"""The worker continues the publisher's trace: each delivery is processed in a consumer
span whose parent is the context in the message headers, and a dead letter keeps that
context through the DLQ and its replay."""

from __future__ import annotations

from aio_pika.abc import AbstractChannel
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from quartstack.settings import load_settings
from quartstack.worker import dlq
from tests.support.spans import named, spans  # noqa: F401  (fixture)
from tests.worker.conftest import WorkerEnv, running_worker
from tests.worker.helpers import eventually, publish, queue_counts, registered

tracer = trace.get_tracer("tests")


def _processed(
    exporter: InMemorySpanExporter, env: WorkerEnv, message_id: str
) -> list[ReadableSpan]:
    return [
        s
        for s in named(exporter, f"{env.queue} process")
        if dict(s.attributes or {}).get("messaging.message.id") == message_id
    ]


async def test_the_consumer_span_continues_the_message_context_through_the_dlq(
    worker_env: WorkerEnv,
    publisher: AbstractChannel,
    spans: InMemorySpanExporter,  # noqa: F811
):
    body = registered()
    with tracer.start_as_current_span("producer") as producer:
        headers: dict[str, str] = {}
        propagate.inject(headers)
    origin = producer.get_span_context()

    async with running_worker(worker_env):
        await publish(publisher, worker_env.exchange, body, headers=headers)
        await publish(publisher, worker_env.exchange, b"garbage", message_id="p-1", headers=headers)

        async def both_done() -> bool:
            return bool(_processed(spans, worker_env, body["event_id"])) and bool(
                _processed(spans, worker_env, "p-1")
            )

        await eventually(both_done, what="both deliveries processed")
        [applied] = _processed(spans, worker_env, body["event_id"])
        assert applied.kind == SpanKind.CONSUMER
        assert applied.context.trace_id == origin.trace_id
        assert applied.parent is not None and applied.parent.span_id == origin.span_id
        assert [link.context.span_id for link in applied.links] == [origin.span_id]
        attributes = dict(applied.attributes or {})
        assert attributes["quartstack.event.outcome"] == "applied"
        assert attributes["messaging.destination.name"] == worker_env.exchange
        assert attributes["messaging.destination.subscription.name"] == worker_env.queue
        assert attributes["messaging.rabbitmq.destination.routing_key"] == "user.registered"
        # the projection writes (the backend guard's client spans) are its children
        writes = {
            dict(s.attributes or {}).get("db.system.name")
            for s in spans.get_finished_spans()
            if s.parent is not None and s.parent.span_id == applied.context.span_id
        }
        assert {"mongodb", "redis"} <= writes

        [poisoned] = _processed(spans, worker_env, "p-1")
        assert dict(poisoned.attributes or {})["quartstack.event.outcome"] == "dead_lettered"

        # replayed from the DLQ, the letter joins its original trace again
        async def dead() -> bool:
            ready, _ = await queue_counts(worker_env, f"{worker_env.queue}.dlq")
            return ready == 1

        await eventually(dead, what="the dead letter in the DLQ")
        assert await dlq.replay(load_settings(**worker_env.settings), 1) == 1
        await eventually(
            lambda: _twice(spans, worker_env), what="the replayed letter processed again"
        )
        again = _processed(spans, worker_env, "p-1")[1]
        assert again.parent is not None and again.parent.span_id == origin.span_id
        assert again.context.trace_id == origin.trace_id


async def _twice(exporter: InMemorySpanExporter, env: WorkerEnv) -> bool:
    return len(_processed(exporter, env, "p-1")) == 2
