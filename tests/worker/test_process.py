"""``quartstack worker`` as a process: kill -9 between apply and ack, and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest
from aio_pika.abc import AbstractChannel

from tests.rabbitmq.broker import BROKER_PORT, rabbitmqctl
from tests.support.net import TcpProxy
from tests.support.process import SERVERS, ServiceProcess
from tests.worker.conftest import WorkerEnv
from tests.worker.helpers import Projections, eventually, publish, queue_counts, registered
from tests.worker.test_consumer import dead_letters


class WorkerProcess(ServiceProcess):
    """``python -m quartstack worker`` with its probes on a free port."""

    command = "worker"

    def metric(self, name: str) -> float:
        """Sum of every sample of ``name`` on the worker's /metrics."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and line[len(name)] in " {"
        )


class AckHoldingProxy(TcpProxy):
    """Forwards both ways until ``hold`` is set; from then on nothing the client sends
    reaches the broker (its acks are held), while deliveries still flow to it."""

    hold = False

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if not delayed and self.hold:
                    await asyncio.Event().wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


def _unacked(env: WorkerEnv) -> int:
    out = rabbitmqctl(
        "list_queues", "-q", "-p", env.account.vhost, "name", "messages_unacknowledged"
    )
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == env.queue:
            return int(parts[1])
    return 0


async def _consumers_at_least(env: WorkerEnv, count: int) -> bool:
    try:
        _, consumers = await queue_counts(env, env.queue)
    except Exception:  # not declared yet
        return False
    return consumers >= count


async def test_kill_9_after_apply_before_ack_leaves_counters_exact(
    worker_env: WorkerEnv, publisher: AbstractChannel
):
    projections = Projections(worker_env)
    proxy = AckHoldingProxy(BROKER_PORT).start()
    env = {**worker_env.environ(), "RABBITMQ_PORT": str(proxy.port)}
    first = WorkerProcess(env)
    second = WorkerProcess(worker_env.environ())
    try:
        first.start().wait_live()
        await eventually(lambda: _consumers_at_least(worker_env, 1), what="first worker consuming")
        proxy.hold = True
        bodies = [registered() for _ in range(20)]
        for body in bodies:
            await publish(publisher, worker_env.exchange, body)

        async def applied() -> bool:
            return len(await projections.user_docs()) == 20 and await projections.total() == 20

        await eventually(applied, what="20 events applied by the first worker")

        async def none_acked() -> bool:  # the broker's counts lag by its stats interval
            return _unacked(worker_env) == 20

        await eventually(none_acked, what="20 applied, none acked: the acks are held")
        snapshot = await projections.user_docs()
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        proxy.close_connections()  # the broker sees the connection die: redelivers all 20

        second.start().wait_live()

        async def reapplied() -> bool:
            return second.metric("worker_redeliveries_total") >= 20 and await _queue_drained(
                worker_env
            )

        await eventually(reapplied, what="the 20 redeliveries consumed by the second worker")
        assert second.metric("worker_redeliveries_total") == 20
        assert await projections.total() == 20
        assert await projections.user_docs() == snapshot
        assert await dead_letters(worker_env) == []
        assert second.terminate() == 0
    finally:
        first.terminate()
        second.terminate()
        proxy.stop()
        await projections.close()


async def _queue_drained(env: WorkerEnv) -> bool:
    ready, _ = await queue_counts(env, env.queue)
    return ready == 0 and _unacked(env) == 0


@pytest.mark.parametrize("http_server", SERVERS)
async def test_sigterm_requeues_what_is_in_hand_and_exits_0_within_the_grace(
    worker_env: WorkerEnv, publisher: AbstractChannel, http_server: str
):
    """MongoDB is down, so five events are held in hand when SIGTERM arrives: the
    worker gives them back to the queue (not dead-lettered) and exits 0 in time, its
    probes served by either server."""
    proxy = TcpProxy(worker_env.mongo_port).start()
    environ = {**worker_env.environ(), "MONGODB_PORT": str(proxy.port)}
    worker = WorkerProcess(environ, server=http_server)
    try:
        worker.start().wait_live()
        await eventually(lambda: _consumers_at_least(worker_env, 1), what="worker consuming")
        proxy.set_mode("refuse")
        proxy.close_connections()
        for _ in range(5):
            await publish(publisher, worker_env.exchange, registered())

        async def held() -> bool:
            try:
                return worker.metric("worker_outage_retries_total") >= 5
            except httpx.HTTPError:  # a busy machine: ask again
                return False

        await eventually(held, what="the events held through the outage")
        began = time.monotonic()
        assert worker.terminate(timeout=30) == 0
        took = time.monotonic() - began
        budget = float(worker_env.settings["shutdown_grace_seconds"]) + float(
            worker_env.settings["shutdown_close_seconds"]
        )
        assert took < budget + 2, f"took {took:.1f} s"

        async def requeued() -> bool:
            ready, consumers = await queue_counts(worker_env, worker_env.queue)
            return ready == 5 and consumers == 0

        await eventually(requeued, what="the five events back in the queue")
        assert await dead_letters(worker_env) == []
        assert any("consumer stopped" in line for line in worker.log_lines())
    finally:
        worker.terminate()
        proxy.stop()


async def test_metrics_token_guards_the_workers_metrics_not_its_probes(worker_env: WorkerEnv):
    """``METRICS_TOKEN`` guards ``/metrics`` on the worker as on the API; the probes the
    kubelet calls without credentials stay open."""
    token = f"metrics-{os.urandom(12).hex()}"
    worker = WorkerProcess({**worker_env.environ(), "METRICS_TOKEN": token})
    try:
        worker.start().wait_live()
        assert httpx.get(f"{worker.url}/health/live", timeout=10).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            refused = httpx.get(f"{worker.url}/metrics", headers=headers, timeout=10)
            assert refused.status_code == 401
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert token not in refused.text
        allowed = httpx.get(
            f"{worker.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert allowed.status_code == 200 and "worker_events_consumed_total" in allowed.text
    finally:
        worker.terminate()
    assert not [line for line in worker.log_lines() if token in line]
