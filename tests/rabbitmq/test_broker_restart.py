"""The machine's broker restarted (``stop_app`` / ``start_app``) in the middle of a
stream of publishes. This briefly stops RabbitMQ for everyone on the machine, so
it is one short test that always starts the broker again."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.rabbitmq.broker import drain, independent_connection, rabbitmqctl, start_broker_app
from tests.support.app import running_app

PUBLISH = "/examples/messaging/publish?queue_name={}"
WORKERS = 4
#: A 503 of this kind says the message was sent but its confirm was lost with the
#: connection: the broker may have it. Every other 503 means it was not sent.
MAYBE_QUEUED = "/problems/publish-unconfirmed"


async def test_restart_mid_stream_never_acknowledges_a_lost_message(
    app_settings, broker_account, queue_name
):
    settings = dict(app_settings, circuit_failure_threshold=5, circuit_recovery_seconds=1)
    outcomes: dict[int, tuple[int, str | None]] = {}
    counter = iter(range(1_000_000))
    marks: dict[str, int] = {}
    recovered = asyncio.Event()

    async def stream(client: Any) -> None:
        while True:
            n = next(counter)
            response = await client.post(PUBLISH.format(queue_name), json={"n": n})
            kind = None
            if response.status_code != 200:
                kind = (await response.get_json()).get("type")
            outcomes[n] = (response.status_code, kind)
            if "restarted" in marks and _confirmed_after(outcomes, marks["restarted"]) >= 20:
                recovered.set()
            await asyncio.sleep(0.01)

    async with running_app(**settings) as (_, client):
        assert (await client.post(PUBLISH.format(queue_name), json={"n": -1})).status_code == 200
        workers = [asyncio.create_task(stream(client)) for _ in range(WORKERS)]
        try:
            await asyncio.sleep(0.5)
            try:
                marks["stopping"] = max(outcomes)
                await asyncio.to_thread(rabbitmqctl, "stop_app")
                await asyncio.sleep(0.5)
            finally:
                await asyncio.to_thread(start_broker_app)
            marks["restarted"] = max(outcomes)
            await asyncio.wait_for(recovered.wait(), timeout=60)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        assert (await client.get("/health/rabbitmq")).status_code == 200

    connection = await independent_connection(broker_account)
    async with connection:
        messages = await drain(await connection.channel(), queue_name)
    received = [json.loads(m.body)["n"] for m in messages]

    statuses = {status for status, _ in outcomes.values()}
    assert statuses <= {200, 503}, statuses
    assert 503 in statuses  # the outage really hit the stream
    assert _confirmed_after(outcomes, marks["restarted"]) >= 20  # the same app recovered
    assert len(received) == len(set(received))  # nothing was queued twice
    assert set(received) - {-1} <= set(outcomes)
    confirmed = {n for n, (status, _) in outcomes.items() if status == 200}
    lost = confirmed - set(received)
    assert not lost, f"confirmed but not in the queue: {sorted(lost)}"
    refused_yet_queued = {
        n: kind for n, (status, kind) in outcomes.items() if status == 503 and n in received
    }
    assert set(refused_yet_queued.values()) <= {MAYBE_QUEUED}, refused_yet_queued
    unconfirmed = sum(1 for _, kind in outcomes.values() if kind == MAYBE_QUEUED)
    print(
        f"\n{len(outcomes)} publishes: {len(confirmed)} confirmed, "
        f"{len(outcomes) - len(confirmed)} refused ({unconfirmed} unconfirmed, "
        f"{len(refused_yet_queued)} of which queued)"
    )


def _confirmed_after(outcomes: dict[int, tuple[int, str | None]], mark: int) -> int:
    return sum(1 for n, (status, _) in list(outcomes.items()) if n > mark and status == 200)
