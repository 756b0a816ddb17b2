"""Outages and competition: MongoDB unreachable for a while, two workers on one queue."""

from __future__ import annotations

import pytest
from aio_pika.abc import AbstractChannel

from quartstack.lifecycle import lifecycle
from quartstack.settings import load_settings
from quartstack.worker.app import create_worker_app
from tests.rabbitmq.broker import independent_connection
from tests.support.app import metric_value
from tests.support.net import TcpProxy
from tests.worker.conftest import WorkerEnv, running_worker
from tests.worker.helpers import Projections, eventually, publish, queue_counts, registered
from tests.worker.test_consumer import dead_letters


@pytest.mark.parametrize("backend", ["mongodb", "redis"])
async def test_a_backend_outage_holds_events_and_applies_them_once_it_returns(
    worker_env: WorkerEnv, publisher: AbstractChannel, backend: str
):
    projections = Projections(worker_env)
    real_port = worker_env.mongo_port if backend == "mongodb" else 6379
    proxy = TcpProxy(real_port).start()
    try:
        async with running_worker(worker_env, **{f"{backend}_port": proxy.port}) as app:
            client = app.test_client()
            await eventually(lambda: _ready(client), what="ready before the outage")
            proxy.set_mode("refuse")
            proxy.close_connections()
            retries_before = metric_value("worker_outage_retries_total")
            bodies = [registered() for _ in range(10)]
            for body in bodies:
                await publish(publisher, worker_env.exchange, body)

            async def held() -> bool:
                return metric_value("worker_outage_retries_total") >= retries_before + 3

            await eventually(held, what="events held through the outage")

            async def not_ready() -> bool:
                response = await client.get("/health/ready")
                checks = (await response.get_json())["checks"]
                return response.status_code == 503 and checks[backend] != "ok"

            await eventually(not_ready, what=f"readiness showing {backend} down")
            assert await projections.total() == 0  # nothing counted while it is down
            proxy.set_mode("pass")

            async def all_applied() -> bool:
                ready, _ = await queue_counts(worker_env, worker_env.queue)
                docs = await projections.user_docs()
                return ready == 0 and len(docs) == 10 and await projections.total() == 10

            await eventually(all_applied, what="every held event applied after the outage")
            await eventually(
                lambda: _ready(client), what="readiness back once the backend answers again"
            )
        assert await dead_letters(worker_env) == []
    finally:
        proxy.stop()
        await projections.close()


async def _ready(client: object) -> bool:
    response = await client.get("/health/ready")  # type: ignore[attr-defined]
    return bool(response.status_code == 200)


async def test_two_workers_competing_apply_each_event_once(
    worker_env: WorkerEnv, publisher: AbstractChannel
):
    projections = Projections(worker_env)
    try:
        async with (
            running_worker(worker_env, worker_prefetch=4),
            running_worker(worker_env, worker_prefetch=4),
        ):
            _, consumers = await queue_counts(worker_env, worker_env.queue)
            assert consumers == 2
            bodies = [registered(f"w{i}@c{i % 4}.example") for i in range(60)]
            for body in bodies + bodies:  # every event twice, interleaved across workers
                await publish(publisher, worker_env.exchange, body)

            async def settled() -> bool:
                ready, _ = await queue_counts(worker_env, worker_env.queue)
                return ready == 0 and len(await projections.user_docs()) == 60

            await eventually(settled, what="60 users projected by two workers")
            await eventually(lambda: _total_is(projections, 60), timeout=10, what="counters at 60")
        days = await projections.day_counts()
        assert sum(int(day["total"]) for day in days.values()) == 60
        per_domain = sum(int(v) for day in days.values() for k, v in day.items() if k != "total")
        assert per_domain == 60
        assert await dead_letters(worker_env) == []
    finally:
        await projections.close()


async def _total_is(projections: Projections, expected: int) -> bool:
    return await projections.total() == expected


async def test_a_worker_that_cannot_consume_is_not_ready(worker_env: WorkerEnv):
    """The queue exists with other arguments (a classic queue of that name, or a changed
    delivery limit): the consumer cannot start, and readiness says why."""
    connection = await independent_connection(worker_env.account)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(worker_env.queue, durable=True)  # classic, no limit
        app = create_worker_app(load_settings(**worker_env.settings))
        async with app.test_app():
            await lifecycle(app).wait_started()
            client = app.test_client()

            async def not_ready_for_the_consumer() -> bool:
                response = await client.get("/health/ready")
                checks = (await response.get_json())["checks"]
                return (
                    response.status_code == 503
                    and checks["mongodb"] == checks["redis"] == checks["rabbitmq"] == "ok"
                    and "PRECONDITION_FAILED" in checks["consumer"]
                )

            await eventually(not_ready_for_the_consumer, what="readiness naming the consumer")
        await channel.queue_delete(worker_env.queue)

    async with running_worker(worker_env) as app:  # declared as it needs: ready
        await eventually(lambda: _ready(app.test_client()), what="ready once consuming")
        response = await app.test_client().get("/health/ready")
        assert (await response.get_json())["checks"]["consumer"] == "ok"
