"""``GET /users…`` on the API, reading what a running worker projected."""

from __future__ import annotations

from datetime import UTC, datetime

from aio_pika.abc import AbstractChannel

from tests.rabbitmq.broker import assert_problem
from tests.support.app import running_app
from tests.worker.conftest import WorkerEnv, running_worker
from tests.worker.helpers import Projections, deleted, eventually, publish, registered

_API_KEYS = (
    "mongodb_host",
    "mongodb_port",
    "mongodb_database",
    "redis_host",
    "redis_port",
    "redis_key_prefix",
)


async def test_query_routes_serve_the_projections(
    worker_env: WorkerEnv, publisher: AbstractChannel
):
    projections = Projections(worker_env)
    bodies = [registered(f"q{i}@{'a' if i % 3 else 'b'}.example") for i in range(7)]
    try:
        async with running_worker(worker_env):
            for body in bodies:
                await publish(publisher, worker_env.exchange, body)
            gone = bodies[1]["data"]["id"]
            await publish(publisher, worker_env.exchange, deleted(gone))

            async def projected() -> bool:
                docs = await projections.user_docs()
                return len(docs) == 7 and docs[gone]["deleted_at"] is not None

            await eventually(projected, what="7 users projected, one erased")
        async with running_app(**{k: worker_env.settings[k] for k in _API_KEYS}) as (_, client):
            one = bodies[0]["data"]
            response = await client.get(f"/users/{one['id']}")
            assert response.status_code == 200
            body = await response.get_json()
            assert body["email"] == one["email"] and body["email_domain"] == "b.example"
            assert body["projection"] == "applied"
            await assert_problem(await client.get(f"/users/{gone}"), 404, "user-not-found")
            await assert_problem(
                await client.get("/users/7c1e0c52-5d6a-4f0e-9a55-0b1d5c1f0a11"),
                404,
                "user-not-found",
            )

            seen, cursor = [], None
            while True:
                url = "/users?limit=2" + (f"&cursor={cursor}" if cursor else "")
                page = await (await client.get(url)).get_json()
                seen += [item["id"] for item in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            live = sorted(b["data"]["id"] for b in bodies if b["data"]["id"] != gone)
            assert seen == live  # every live user once, in id order, the erased one left out

            page = await (await client.get("/users?domain=b.example")).get_json()
            assert {item["email_domain"] for item in page["items"]} == {"b.example"}
            assert len(page["items"]) == 3
            await assert_problem(await client.get("/users?cursor=zzz"), 400, "invalid-cursor")
            await assert_problem(await client.get("/users?limit=0"), 422, "validation-error")

            stats = await (await client.get("/users/stats?days=2")).get_json()
            today = datetime.now(UTC).date().isoformat()
            assert stats["total"] == 7 and stats["days"][-1] == {"day": today, "signups": 7}
            assert stats["domains"] == {"a.example": 4, "b.example": 3}
    finally:
        await projections.close()
