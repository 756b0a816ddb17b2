"""Traces across the broker, from real processes exporting to a real OTLP/HTTP receiver:
``quartstack serve`` (API and outbox relay) and ``quartstack worker``.

- ``POST /examples/messaging/publish``: server span -> publish span, whose context is in
  the headers of the message read back from the queue;
- the signup flow: ``POST /users`` (server span, the insert) -> the relay's publish,
  linked to the request -> the worker's processing, a child of that publish -> its
  MongoDB and Redis writes, children of the processing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from quartstack.settings import load_settings
from quartstack.signup.cli import backend_clients
from quartstack.signup.schema import migrate
from tests.rabbitmq.broker import drain, independent_connection
from tests.support.databases import PostgresDatabase
from tests.support.otlp import OtlpReceiver, Span
from tests.support.process import ServiceProcess
from tests.support.vault import VaultTestServer
from tests.worker.conftest import WorkerEnv
from tests.worker.helpers import Projections, eventually
from tests.worker.test_process import WorkerProcess, _consumers_at_least


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
async def traced_env(
    worker_env: WorkerEnv, vault_server: VaultTestServer, receiver: OtlpReceiver
) -> Any:
    """The environment of both processes: a migrated database of the test's own, and
    traces exported to the receiver without delay."""
    postgres = PostgresDatabase()
    database = postgres.create()
    try:
        vault_server.write_secret(
            "postgres", database.secret(), mount=worker_env.settings["vault_mount"]
        )
        settings = {**worker_env.settings, "postgres_host": "127.0.0.1", "postgres_port": 5432}
        async with backend_clients(load_settings(**settings), rabbitmq=False) as app:
            await migrate(app.extensions["postgres"], timeout=60)
        yield {
            **worker_env.environ(),
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": "5432",
            "OUTBOX_RELAY_POLL_SECONDS": "0.5",
            "RATE_LIMIT_ENABLED": "false",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    finally:
        postgres.drop()


def _ids(span: Span) -> str:
    return f"00-{span.trace_id}-{span.span_id}-"


async def test_publish_route_server_span_to_publish_span_to_message_headers(
    traced_env: dict[str, str], worker_env: WorkerEnv, receiver: OtlpReceiver
):
    queue = f"traced-{uuid.uuid4().hex[:12]}"
    with ServiceProcess(traced_env) as api:
        api.wait_started()
        response = httpx.post(
            f"{api.url}/examples/messaging/publish",
            params={"queue_name": queue},
            json={"n": 1},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        message_id = response.json()["message_id"]

        server = receiver.wait_for_span(
            lambda s: s.kind == "server" and s.name == "POST /examples/messaging/publish",
            what="the publish request's server span",
        )
        publish = receiver.wait_for_span(
            lambda s: s.name == f"{queue} publish", what="the publish span"
        )
    assert publish.kind == "producer"
    assert publish.trace_id == server.trace_id, receiver.tree(server.trace_id)
    assert publish.parent_span_id == server.span_id, receiver.tree(server.trace_id)
    assert publish.attributes["messaging.message.id"] == message_id
    assert publish.attributes["messaging.destination.name"] == queue
    assert publish.resource.get("service.name") == "quartstack"

    connection = await independent_connection(worker_env.account)
    async with connection:
        channel = await connection.channel()
        try:
            [message] = await drain(channel, queue)
        finally:
            await channel.queue_delete(queue)
    traceparent = (message.headers or {}).get("traceparent")
    assert isinstance(traceparent, str) and traceparent.startswith(_ids(publish))


async def test_signup_request_relay_worker_and_projection_writes_are_one_linked_trace(
    traced_env: dict[str, str], worker_env: WorkerEnv, receiver: OtlpReceiver
):
    projections = Projections(worker_env)
    try:
        with WorkerProcess(traced_env) as worker:
            worker.wait_live()
            await eventually(lambda: _consumers_at_least(worker_env, 1), what="worker consuming")
            with ServiceProcess(traced_env) as api:
                api.wait_started()
                email = f"t-{uuid.uuid4().hex[:8]}@trace.example"
                response = httpx.post(
                    f"{api.url}/users", json={"email": email, "name": "T"}, timeout=30
                )
                assert response.status_code == 201, response.text
                user_id = response.json()["id"]

                async def projected() -> bool:
                    return user_id in await projections.user_docs()

                await eventually(projected, what="the user projected by the worker")
                request = receiver.wait_for_span(
                    lambda s: s.kind == "server" and s.name == "POST /users",
                    what="the signup's server span",
                )
                process = receiver.wait_for_span(
                    lambda s: (
                        s.name == f"{worker_env.queue} process"
                        and s.attributes.get("messaging.rabbitmq.destination.routing_key")
                        == "user.registered"
                    ),
                    what="the worker's processing span",
                )
                # the projection writes end before the processing span: all exported
                writes = receiver.wait_for_spans(
                    lambda s: (
                        s.trace_id == process.trace_id
                        and s.kind == "client"
                        and s.attributes.get("db.system.name") in ("mongodb", "redis")
                    ),
                    count=2,
                    what="the worker's MongoDB and Redis writes",
                )
    finally:
        await projections.close()

    request_trace = receiver.trace(request.trace_id)
    # the insert (user row and outbox event, one statement) is in the request's trace
    assert any(
        s.kind == "client" and s.attributes.get("db.system.name") == "postgresql"
        for s in receiver.descendants(request)
    ), receiver.tree(request.trace_id)

    # the relay's publish: its own trace, linked to the request
    publish = receiver.parent(process)
    assert publish is not None, receiver.tree(process.trace_id)
    assert publish.kind == "producer" and publish.name == f"{worker_env.exchange} publish"
    assert publish.resource.get("service.name") == "quartstack"
    request_span_ids = {s.span_id for s in request_trace}
    assert [(link.trace_id, link.span_id in request_span_ids) for link in publish.links] == [
        (request.trace_id, True)
    ], receiver.tree(request.trace_id)

    # the worker: processing a child of the publish, the writes children of the processing
    assert process.kind == "consumer"
    assert process.resource.get("service.name") == "quartstack-worker"
    assert [link.span_id for link in process.links] == [publish.span_id]
    below = {s.span_id for s in receiver.descendants(process)}
    systems = {w.attributes["db.system.name"] for w in writes if w.span_id in below}
    assert systems == {"mongodb", "redis"}, receiver.tree(process.trace_id)
