"""The whole signup flow against the real servers: ``POST /users`` on the API (write model
and outbox in PostgreSQL, the relay in the same process), RabbitMQ, and a worker that
projects every event into MongoDB and the Redis counters."""

from __future__ import annotations

import asyncio
from typing import Any

from quartstack.settings import load_settings
from quartstack.signup.cli import backend_clients
from quartstack.signup.schema import migrate
from tests.support.app import running_app
from tests.support.databases import PostgresDatabase
from tests.support.vault import VaultTestServer
from tests.worker.conftest import WorkerEnv, running_worker
from tests.worker.helpers import Projections, eventually

SIGNUPS = 25


async def test_signups_through_the_api_reach_the_read_model_and_the_counters_once(
    worker_env: WorkerEnv, vault_server: VaultTestServer
):
    postgres = PostgresDatabase()
    database = postgres.create()
    projections = Projections(worker_env)
    try:
        mount = worker_env.settings["vault_mount"]
        vault_server.write_secret("postgres", database.secret(), mount=mount)
        settings: dict[str, Any] = {
            **worker_env.settings,
            "postgres_host": "127.0.0.1",
            "postgres_port": 5432,
            "outbox_relay_poll_seconds": 0.5,
        }
        async with backend_clients(load_settings(**settings), rabbitmq=False) as app:
            await migrate(app.extensions["postgres"], timeout=60)

        async with running_worker(worker_env):
            pass  # the worker's queue exists from now on: events are not routed to nowhere
        async with running_app(**settings) as (_, client):
            # While no worker runs, a new user is answered from the write model.
            first = await client.post("/users", json={"email": "e2e-0@a.example", "name": "N0"})
            assert first.status_code == 201
            user_id = (await first.get_json())["id"]
            pending = await (await client.get(f"/users/{user_id}")).get_json()
            assert pending["projection"] == "pending" and pending["email"] == "e2e-0@a.example"

            async with running_worker(worker_env):
                responses = await asyncio.gather(
                    *(
                        client.post(
                            "/users",
                            json={"email": f"e2e-{i}@{'a' if i % 2 else 'b'}.example", "name": "N"},
                        )
                        for i in range(1, SIGNUPS)
                    )
                )
                assert [r.status_code for r in responses] == [201] * (SIGNUPS - 1)

                async def all_projected() -> bool:
                    docs = await projections.user_docs()
                    return len(docs) == SIGNUPS and await projections.total() == SIGNUPS

                await eventually(all_projected, timeout=60, what=f"{SIGNUPS} users projected")

            applied = await (await client.get(f"/users/{user_id}")).get_json()
            assert applied["projection"] == "applied"
            stats = await (await client.get("/users/stats?days=1")).get_json()
            assert stats["total"] == SIGNUPS
            # e2e-0 and the 12 odd ones at a.example, the 12 even ones at b.example
            assert stats["domains"] == {"a.example": 13, "b.example": 12}
    finally:
        await projections.close()
        postgres.drop()
