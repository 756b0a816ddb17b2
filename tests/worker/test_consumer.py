"""The worker against the real broker, nx-27017 and Redis: duplicates, poison, failures."""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractChannel

from quartstack.worker.consumer import DELIVERIES_HEADER, REASON_HEADER
from quartstack.worker.dlq import describe
from tests.rabbitmq.broker import independent_connection
from tests.support.app import metric_value
from tests.worker.conftest import WorkerEnv, running_worker
from tests.worker.helpers import Projections, deleted, eventually, publish, queue_counts, registered


async def dead_letters(env: WorkerEnv) -> list[dict[str, object]]:
    """Every message in the DLQ, taken and acked."""
    connection = await independent_connection(env.account)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{env.queue}.dlq", passive=True)
        letters = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            letters.append({"message_id": message.message_id, **(message.headers or {})})
            await message.ack()
        return letters


async def test_events_are_projected_and_duplicates_applied_once(
    worker_env: WorkerEnv, publisher: AbstractChannel
):
    projections = Projections(worker_env)
    lag_before = metric_value("worker_projection_lag_seconds_count")
    applied_before = metric_value(
        "worker_events_consumed_total", type="user.registered", result="applied"
    )
    try:
        async with running_worker(worker_env):
            bodies = [registered(f"user{i}@d{i % 3}.example") for i in range(30)]
            for body in bodies:
                await publish(publisher, worker_env.exchange, body)
            for body in bodies[:10]:  # the relay republishes after a crash: same event ids
                await publish(publisher, worker_env.exchange, body)
            gone = bodies[0]["data"]["id"]
            await publish(publisher, worker_env.exchange, deleted(gone))

            async def settled() -> bool:
                ready, _ = await queue_counts(worker_env, worker_env.queue)
                docs = await projections.user_docs()
                return ready == 0 and len(docs) == 30 and docs[gone]["deleted_at"] is not None

            await eventually(settled, what="30 users projected, one erased")
            await asyncio.sleep(0)
            assert await projections.total() == 30
            # 40 registrations consumed (10 duplicates among them) and 1 deletion, all acked
            applied = metric_value(
                "worker_events_consumed_total", type="user.registered", result="applied"
            )
            assert applied - applied_before == 40
            assert metric_value("worker_projection_lag_seconds_count") - lag_before == 41
            days = await projections.day_counts()
            domains = {k: int(v) for day in days.values() for k, v in day.items() if k != "total"}
            assert domains == {
                "domain:d0.example": 10,
                "domain:d1.example": 10,
                "domain:d2.example": 10,
            }
            docs = await projections.user_docs()
            assert docs[gone]["email"] is None and docs[gone]["name"] is None
            live = docs[bodies[1]["data"]["id"]]
            assert live["email"] == "user1@d1.example" and live["email_domain"] == "d1.example"
            # a late duplicate of the registration does not bring the erased user back
            await publish(publisher, worker_env.exchange, bodies[0])
            await eventually(lambda: _queue_empty(worker_env), what="the late duplicate consumed")
            assert (await projections.user_docs())[gone]["email"] is None
            assert await projections.total() == 30
            assert await dead_letters(worker_env) == []
    finally:
        await projections.close()


async def _queue_empty(env: WorkerEnv) -> bool:
    ready, _ = await queue_counts(env, env.queue)
    return ready == 0


async def test_poison_is_dead_lettered_with_its_reason_while_others_flow(
    worker_env: WorkerEnv, publisher: AbstractChannel
):
    projections = Projections(worker_env)
    try:
        async with running_worker(worker_env):
            await publish(publisher, worker_env.exchange, b"{not json", message_id="poison-1")
            bad_version = registered()
            bad_version["schema_version"] = 99
            await publish(publisher, worker_env.exchange, bad_version)
            good = [registered() for _ in range(5)]
            for body in good:
                await publish(publisher, worker_env.exchange, body)

            async def all_good_applied() -> bool:
                return len(await projections.user_docs()) == 5 and await _queue_empty(worker_env)

            await eventually(all_good_applied, what="the good events applied")
            letters = await dead_letters(worker_env)
        reasons = {letter["message_id"]: letter[REASON_HEADER] for letter in letters}
        assert reasons == {
            "poison-1": "body is not JSON",
            bad_version["event_id"]: "unknown schema_version 99",
        }
        assert await projections.total() == 5
    finally:
        await projections.close()


async def test_an_event_that_keeps_failing_is_dead_lettered_after_max_deliveries(
    worker_env: WorkerEnv, publisher: AbstractChannel
):
    """Redis refuses the count (the day's key holds a string: WRONGTYPE, not an outage):
    requeued, then dead-lettered at the WORKER_MAX_DELIVERIES-th (3rd) delivery."""
    projections = Projections(worker_env)
    body = registered()
    day = body["data"]["created_at"][:10]
    day_key = f"{worker_env.key_prefix}:signups:{{signups}}:day:{day}"
    await projections.redis.set(day_key, "not a hash")
    try:
        async with running_worker(worker_env):
            await publish(publisher, worker_env.exchange, body)
            letters: list[dict[str, object]] = []

            async def dead_lettered() -> bool:
                letters.extend(await dead_letters(worker_env))
                return bool(letters)

            await eventually(dead_lettered, what="the failing event dead-lettered")
        assert letters[0]["message_id"] == body["event_id"]
        assert letters[0][REASON_HEADER] == "failed 3 times: ResponseError"
        assert letters[0][DELIVERIES_HEADER] == 3
    finally:
        await projections.redis.delete(day_key)
        await projections.close()


async def test_a_message_that_kills_its_consumer_is_dead_lettered_by_the_broker(
    worker_env: WorkerEnv, publisher: AbstractChannel
):
    """The backstop for what the worker never gets to settle (it dies on the message):
    the queue's x-delivery-limit makes the broker dead-letter it, reason in x-death."""
    async with running_worker(worker_env):
        pass  # declares the topology, then stops: the queue keeps it
    body = registered()
    await publish(publisher, worker_env.exchange, body)
    connection = await independent_connection(worker_env.account)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(worker_env.queue, passive=True)
        returned = 0
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            await message.nack(requeue=True)  # a consumer that never settles it
            returned += 1
            assert returned <= 10
        dlq = await channel.declare_queue(f"{worker_env.queue}.dlq", passive=True)

        async def in_dlq() -> bool:
            return (
                await channel.declare_queue(dlq.name, passive=True)
            ).declaration_result.message_count == 1

        await eventually(in_dlq, what="the message dead-lettered by the broker")
        letter = await dlq.get(no_ack=False)
        assert letter.message_id == body["event_id"]
        assert letter.headers["x-first-death-reason"] == "delivery_limit"
        described = describe(letter)  # as `quartstack dlq list` prints it
        assert described["reason"] == "broker: delivery_limit"
        assert described["routing_key"] == "user.registered"
        await letter.ack()
    assert returned == int(worker_env.settings["worker_max_deliveries"]) + 1


async def test_a_deletion_that_overtakes_its_registration_wins(
    worker_env: WorkerEnv, publisher: AbstractChannel
):
    """Out of order (the relay's batches race): the tombstone stays, the erased user never
    appears, and the signup is still counted once."""
    projections = Projections(worker_env)
    body = registered("late@example.net")
    user_id = body["data"]["id"]
    try:
        async with running_worker(worker_env):
            await publish(publisher, worker_env.exchange, deleted(user_id))
            await eventually(lambda: _has_user(projections, user_id), what="the tombstone")
            await publish(publisher, worker_env.exchange, body)
            await eventually(lambda: _total_is(projections, 1), what="the signup counted")
            await eventually(lambda: _queue_empty(worker_env), what="both consumed")
        document = (await projections.user_docs())[user_id]
        assert document["state"] == "deleted" and document["email"] is None
    finally:
        await projections.close()


async def _has_user(projections: Projections, user_id: str) -> bool:
    return user_id in await projections.user_docs()


async def _total_is(projections: Projections, expected: int) -> bool:
    return await projections.total() == expected
