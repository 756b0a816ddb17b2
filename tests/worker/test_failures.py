"""Outages and competition: MongoDB unreachable for a while, two workers on one queue."""

from __future__ import annotations

from aio_pika.abc import AbstractChannel

from tests.support.app import metric_value
from tests.support.net import TcpProxy
from tests.worker.conftest import WorkerEnv, running_worker
from tests.worker.helpers import Projections, eventually, publish, queue_counts, registered
from tests.worker.test_consumer import dead_letters


async def test_mongodb_outage_holds_events_and_applies_them_once_it_returns(
    worker_env: WorkerEnv, publisher: AbstractChannel
):
    projections = Projections(worker_env)
    proxy = TcpProxy(worker_env.mongo_port).start()
    try:
        async with running_worker(worker_env, mongodb_port=proxy.port) as app:
            client = app.test_client()
            assert (await client.get("/health/ready")).status_code == 200
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
                return response.status_code == 503 and checks["mongodb"] != "ok"

            await eventually(not_ready, what="readiness showing MongoDB down")
            assert await projections.total() == 0  # Redis is after MongoDB: nothing counted
            proxy.set_mode("pass")

            async def all_applied() -> bool:
                ready, _ = await queue_counts(worker_env, worker_env.queue)
                docs = await projections.user_docs()
                return ready == 0 and len(docs) == 10 and await projections.total() == 10

            await eventually(all_applied, what="every held event applied after the outage")
            await eventually(
                lambda: _ready(client), what="readiness back once MongoDB answers again"
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
