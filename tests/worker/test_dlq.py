"""``quartstack dlq list|replay``: inspect the dead letters, then replay them once fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from aio_pika.abc import AbstractChannel

from tests.support.app import metric_value
from tests.worker.conftest import WorkerEnv, running_worker
from tests.worker.helpers import Projections, eventually, publish, queue_counts, registered


def _cli(env: WorkerEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quartstack", "dlq", *args],
        env={**os.environ, **env.environ()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_list_shows_the_reason_and_replay_applies_once_fixed(
    worker_env: WorkerEnv, publisher: AbstractChannel, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("quartstack.worker.consumer.DLQ_WATCH_SECONDS", 0.1)
    projections = Projections(worker_env)
    body = registered()
    day_key = f"{worker_env.key_prefix}:signups:{{signups}}:day:{body['data']['created_at'][:10]}"
    await projections.redis.set(day_key, "not a hash")  # the count fails until this is fixed
    try:
        async with running_worker(worker_env):
            await publish(publisher, worker_env.exchange, body)
            await publish(publisher, worker_env.exchange, b"garbage", message_id="poison-2")

            async def both_dead() -> bool:
                ready, _ = await queue_counts(worker_env, f"{worker_env.queue}.dlq")
                return ready == 2

            await eventually(both_dead, what="two dead letters")

            async def depth_exported() -> bool:
                return metric_value("worker_dead_letter_queue_messages") == 2

            await eventually(depth_exported, what="the DLQ depth on /metrics")

            listed = _cli(worker_env, "list")
            assert listed.returncode == 0, listed.stderr
            letters = {
                letter["message_id"]: letter
                for letter in map(json.loads, listed.stdout.splitlines())
            }
            assert letters["poison-2"]["reason"] == "body is not JSON"
            assert letters[body["event_id"]]["reason"] == "failed 3 times: ResponseError"
            assert letters[body["event_id"]]["routing_key"] == "user.registered"
            ready, _ = await queue_counts(worker_env, f"{worker_env.queue}.dlq")
            assert ready == 2  # listing removes nothing

            await projections.redis.delete(day_key)  # the fix
            replayed = _cli(worker_env, "replay")
            assert replayed.returncode == 0, replayed.stderr
            assert "replayed 2 message(s)" in replayed.stdout

            async def applied() -> bool:
                ready, _ = await queue_counts(worker_env, f"{worker_env.queue}.dlq")
                # the garbage comes back as poison; the fixed event is applied
                return ready == 1 and await projections.total() == 1

            await eventually(applied, what="the replayed event applied")
        assert (await projections.user_docs())[body["data"]["id"]]["email"] == body["data"]["email"]
    finally:
        await projections.redis.delete(day_key)
        await projections.close()


def test_without_rabbitmq_the_commands_exit_2(worker_env: WorkerEnv):
    environ = {k: v for k, v in worker_env.environ().items() if k != "RABBITMQ_HOST"}
    result = subprocess.run(
        [sys.executable, "-m", "quartstack", "dlq", "list"],
        env={k: v for k, v in os.environ.items() if k != "RABBITMQ_HOST"} | environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "RABBITMQ_HOST" in result.stderr
