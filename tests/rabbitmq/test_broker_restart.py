"""The machine's broker restarted (``stop_app`` / ``start_app``) in the middle of a
stream of publishes. This briefly stops RabbitMQ for everyone on the machine, so
it is one short test that always starts the broker again (in ``finally``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.rabbitmq.broker import drain, independent_connection, rabbitmqctl, start_broker_app
from tests.support.app import running_app
from tests.support.polling import wait_until

PUBLISH = "/examples/messaging/publish?queue_name={}"
WORKERS = 4
#: A 503 of this kind says the message was sent but its confirm was lost with the
#: connection: the broker may have it. Every other error means it was not sent.
MAYBE_QUEUED = "/problems/publish-unconfirmed"
#: The outcome of a publish whose request was still running when the stream stopped
#: (its worker was cancelled): it may or may not have reached the broker.
IN_FLIGHT = (0, None)

Outcomes = dict[int, tuple[int, str | None]]


async def test_restart_mid_stream_never_acknowledges_a_lost_message(
    app_settings, broker_account, queue_name
):
    settings = dict(app_settings, circuit_failure_threshold=5, circuit_recovery_seconds=1)
    outcomes: Outcomes = {}
    counter = iter(range(1_000_000))
    marks: dict[str, int] = {}
    recovered = asyncio.Event()

    async def stream(client: Any) -> None:
        while True:
            n = next(counter)
            outcomes[n] = IN_FLIGHT  # before the request: a cancelled one stays known-unknown
            response = await client.post(PUBLISH.format(queue_name), json={"n": n})
            kind = None
            if response.status_code != 200:
                kind = (await response.get_json()).get("type")
            outcomes[n] = (response.status_code, kind)
            if "restarted" in marks and _confirmed_after(outcomes, marks["restarted"]) >= 20:
                recovered.set()
            await asyncio.sleep(0.01)  # pacing: the stream is the subject

    async with running_app(**settings) as (_, client):
        outcomes[-1] = IN_FLIGHT
        first = await client.post(PUBLISH.format(queue_name), json={"n": -1})
        outcomes[-1] = (first.status_code, None)
        assert first.status_code == 200
        workers = [asyncio.create_task(stream(client)) for _ in range(WORKERS)]
        try:
            await wait_until(lambda: _confirmed_after(outcomes, -1) >= 10, what="a steady stream")
            marks["stopping"] = max(outcomes)
            try:
                await asyncio.to_thread(rabbitmqctl, "stop_app")
                await wait_until(
                    lambda: _refused_after(outcomes, marks["stopping"]) >= WORKERS,
                    what="the outage reaching the stream",
                )
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

    statuses = {status for status, _ in outcomes.values()} - {IN_FLIGHT[0]}
    assert statuses <= {200, 503, 504}, statuses  # never a 500
    assert 503 in statuses  # the outage really hit the stream
    assert _confirmed_after(outcomes, marks["restarted"]) >= 20  # the same app recovered
    assert violations(outcomes, received) == {}
    confirmed = sum(1 for status, _ in outcomes.values() if status == 200)
    unknown = sum(1 for outcome in outcomes.values() if outcome == IN_FLIGHT)
    unconfirmed = sum(1 for _, kind in outcomes.values() if kind == MAYBE_QUEUED)
    print(
        f"\n{len(outcomes)} publishes: {confirmed} confirmed, {unknown} cancelled in flight, "
        f"{len(outcomes) - confirmed - unknown} refused ({unconfirmed} unconfirmed); "
        f"{len(received)} queued"
    )


def violations(outcomes: Outcomes, received: list[int]) -> dict[str, Any]:
    """What the broker holds that contradicts what the app answered.

    A 200 promises the message is queued; a refusal other than ``publish-unconfirmed``
    promises it is not; a request cancelled in flight and an unconfirmed publish promise
    nothing. Every message must come from a request that was made, and only once."""
    queued = set(received)
    found: dict[str, Any] = {}
    if len(received) != len(queued):
        found["queued twice"] = sorted(n for n in queued if received.count(n) > 1)
    if unasked := queued - set(outcomes):
        found["queued but never requested"] = sorted(unasked)
    if lost := sorted(n for n, (s, _) in outcomes.items() if s == 200 and n not in queued):
        found["confirmed but not in the queue"] = lost
    refused_yet_queued = {
        n: (status, kind)
        for n, (status, kind) in outcomes.items()
        if status not in (200, IN_FLIGHT[0]) and kind != MAYBE_QUEUED and n in queued
    }
    if refused_yet_queued:
        found["refused yet queued"] = refused_yet_queued
    return found


def test_violations_accounting():
    """The judge above: unknown outcomes may go either way, promises may not."""
    outcomes: Outcomes = {
        1: (200, None),
        2: (503, MAYBE_QUEUED),
        3: (503, MAYBE_QUEUED),
        4: IN_FLIGHT,
        5: IN_FLIGHT,
        6: (503, "/problems/backend-unavailable"),
    }
    assert violations(outcomes, [1, 2, 4]) == {}
    assert violations(outcomes, [2, 4]) == {"confirmed but not in the queue": [1]}
    assert violations(outcomes, [1, 6]) == {
        "refused yet queued": {6: (503, "/problems/backend-unavailable")}
    }
    assert violations({**outcomes, 7: (504, "/problems/timeout")}, [1, 7]) == {
        "refused yet queued": {7: (504, "/problems/timeout")}
    }
    assert violations(outcomes, [1, 1, 9]) == {
        "queued twice": [1],
        "queued but never requested": [9],
    }


def _confirmed_after(outcomes: Outcomes, mark: int) -> int:
    return sum(1 for n, (status, _) in list(outcomes.items()) if n > mark and status == 200)


def _refused_after(outcomes: Outcomes, mark: int) -> int:
    return sum(1 for n, (status, _) in list(outcomes.items()) if n > mark and status >= 400)
