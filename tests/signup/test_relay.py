"""The outbox relay against the real PostgreSQL and RabbitMQ: every committed event is
published with its properties, survives a broker outage, is published once when two
relays race, and again (never lost) when the mark after a publish fails."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from aio_pika import DeliveryMode

from quartstack.signup import RELAY_KEY
from tests.rabbitmq.broker import BROKER_PORT
from tests.signup.helpers import Received, event_ids, sql, unique_email, until
from tests.support.app import metric_value, running_app
from tests.support.net import TcpProxy, free_port

pytestmark = pytest.mark.usefixtures("migrated")


async def sign_up(client: Any, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = await client.post("/users", json={"email": unique_email(), "name": "R"})
        assert response.status_code == 201, await response.get_data(as_text=True)
        ids.append((await response.get_json())["id"])
    return ids


async def unpublished(signup_db, expected: set[str]) -> int:
    rows = await sql(
        signup_db,
        "SELECT count(*) AS n FROM outbox WHERE event_id = ANY($1::uuid[]) "
        "AND published_at IS NULL",
        [uuid.UUID(e) for e in expected],
    )
    return int(rows[0]["n"])


async def test_events_are_published_confirmed_with_their_properties_then_marked(
    signup_settings, signup_db, events, exchange
):
    received = Received(events)
    lag_before = metric_value("outbox_publish_lag_seconds_count")
    async with running_app(**signup_settings) as (_app, client):
        (user_id,) = await sign_up(client, 1)
        assert (await client.delete(f"/users/{user_id}")).status_code == 204
        expected = await event_ids(signup_db, [user_id])
        await received.wait_for(expected)
        await until(lambda: _none_pending(signup_db, expected))

    by_type = {m.type: m for m in received.messages if m.message_id in expected}
    assert set(by_type) == {"user.registered", "user.deleted"}
    for event_type, message in by_type.items():
        assert message.routing_key == event_type
        assert message.exchange == exchange
        assert message.content_type == "application/json"
        assert message.delivery_mode == DeliveryMode.PERSISTENT
        assert message.timestamp is not None
        body = received.body(str(message.message_id))
        assert body["schema_version"] == 1
        assert body["event_id"] == message.message_id and body["type"] == event_type
        assert body["data"]["id"] == user_id
    assert metric_value("outbox_publish_lag_seconds_count") >= lag_before + 2
    assert metric_value("outbox_relay_batches_total") > 0


async def _none_pending(signup_db, expected: set[str]) -> bool:
    return await unpublished(signup_db, expected) == 0


async def test_signups_answer_201_while_the_broker_is_cut_and_every_event_follows(
    signup_settings, signup_db, events
):
    """The broker is cut for this app only (a TCP proxy), not stopped for the machine."""
    received = Received(events)
    with TcpProxy(BROKER_PORT) as proxy:
        settings = {**signup_settings, "rabbitmq_port": proxy.port}
        async with running_app(**settings) as (_app, client):
            proxy.set_mode("refuse")
            proxy.close_connections()
            user_ids = await sign_up(client, 20)  # PostgreSQL is the write's only dependency
            expected = await event_ids(signup_db, user_ids)
            assert len(expected) == 20

            async def backlog_reported() -> bool:
                return metric_value("outbox_events_pending") >= 20

            await until(backlog_reported)
            await received.drain()
            assert not received.ids(expected)
            assert await unpublished(signup_db, expected) == 20

            proxy.set_mode("pass")
            await received.wait_for(expected)
            await until(lambda: _none_pending(signup_db, expected))
    await received.drain()
    counts = collections.Counter(received.ids(expected))
    assert set(counts) == expected  # all 20, none lost
    assert set(counts.values()) == {1}  # no confirm was lost here, so none was sent twice
    assert metric_value("outbox_relay_failures_total", reason="backend-unavailable") > 0


async def test_two_relays_racing_publish_every_event_exactly_once(
    signup_settings, signup_db, events
):
    received = Received(events)
    async with running_app(**{**signup_settings, "outbox_relay_enabled": False}) as (_, client):
        user_ids = await sign_up(client, 150)
    expected = await event_ids(signup_db, user_ids)
    assert await unpublished(signup_db, expected) == 150  # relay off: nothing published

    racing = {**signup_settings, "outbox_relay_batch_size": 7}
    async with running_app(**racing), running_app(**racing):
        await received.wait_for(expected)
        await until(lambda: _none_pending(signup_db, expected))
    await received.drain()
    counts = collections.Counter(received.ids(expected))
    assert set(counts) == expected
    assert set(counts.values()) == {1}


async def test_a_crash_between_publish_and_mark_publishes_the_event_again(
    signup_settings, signup_db, events
):
    """The mark fails after the broker confirmed (a trigger refuses the UPDATE), so the
    transaction rolls back as if the relay had died there; after a restart the event
    is published again: at-least-once, never lost."""
    received = Received(events)
    trigger = f"no_mark_{uuid.uuid4().hex[:8]}"
    await sql(
        signup_db,
        f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'injected crash before the mark'; END $$",
    )
    await sql(
        signup_db,
        f"CREATE TRIGGER {trigger} BEFORE UPDATE OF published_at ON outbox "
        f"FOR EACH ROW EXECUTE FUNCTION {trigger}()",
    )
    try:
        async with running_app(**signup_settings) as (_app, client):
            user_ids = await sign_up(client, 1)
            expected = await event_ids(signup_db, user_ids)
            await received.wait_for(expected)  # published and confirmed ...
        assert await unpublished(signup_db, expected) == 1  # ... but never marked
    finally:
        await sql(signup_db, f"DROP TRIGGER {trigger} ON outbox")
        await sql(signup_db, f"DROP FUNCTION {trigger}()")
    first_run = len(received.ids(expected))

    async with running_app(**signup_settings):  # the restarted relay
        await until(lambda: _none_pending(signup_db, expected))
    await received.drain()
    assert len(received.ids(expected)) > first_run >= 1


async def test_quartstack_relay_publishes_as_its_own_process_and_stops_on_sigterm(
    signup_settings, signup_db, events
):
    received = Received(events)
    async with running_app(**{**signup_settings, "outbox_relay_enabled": False}) as (_, client):
        user_ids = await sign_up(client, 3)
    expected = await event_ids(signup_db, user_ids)

    env = dict(os.environ)
    for name, value in signup_settings.items():
        env[name.upper()] = ",".join(value) if isinstance(value, list) else str(value)
    metrics_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "quartstack", "relay", "--metrics-port", str(metrics_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await received.wait_for(expected)
        await until(lambda: _none_pending(signup_db, expected))
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert "outbox_publish_lag_seconds_count" in metrics
        assert "outbox_events_pending" in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "outbox relay stopped" in err


async def test_a_new_event_wakes_the_relay_at_once_not_at_the_next_poll(
    signup_settings, signup_db, events
):
    """With a 5-minute poll, only the NOTIFY at commit can explain a publish within 20 s."""
    received = Received(events)
    async with running_app(**{**signup_settings, "outbox_relay_poll_seconds": 300}) as (_, c):
        await until(lambda: _quiet(signup_db))  # the relay's first batch is done: it waits
        user_ids = await sign_up(c, 1)
        await received.wait_for(await event_ids(signup_db, user_ids), timeout=20)


async def _quiet(signup_db) -> bool:
    rows = await sql(signup_db, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
    return rows[0]["n"] == 0


async def test_the_in_process_relay_stops_with_the_app_before_its_clients_close(signup_settings):
    async with running_app(**signup_settings) as (app, _client):
        relay = app.extensions[RELAY_KEY]
        task = relay._task
        assert task is not None and not task.done()
        postgres = app.extensions["postgres"]
        hooks = app.after_serving_funcs
        assert hooks[0].__name__ == "stop_relay"  # before the lifecycle closes the clients
    assert task.done() and not task.cancelled()  # it finished its loop, not cut off
    assert postgres._stopped
