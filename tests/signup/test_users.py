"""``POST /users`` and ``DELETE /users/{id}`` against the real PostgreSQL: the contract,
atomicity of user + event, the unique constraint deciding duplicates, idempotent retries."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.databases.helpers import assert_problem
from tests.signup.helpers import sql, unique_email
from tests.support.app import running_app

pytestmark = pytest.mark.usefixtures("migrated")


@pytest.fixture
def settings(signup_settings: dict[str, Any]) -> dict[str, Any]:
    # The write side alone: these tests look at the outbox, not at the broker.
    return {**signup_settings, "outbox_relay_enabled": False}


async def outbox_of(signup_db, user_id: str) -> list[Any]:
    return await sql(
        signup_db,
        "SELECT event_type, payload::text AS payload, published_at FROM outbox "
        "WHERE aggregate_id = $1 ORDER BY id",
        uuid.UUID(user_id),
    )


async def test_signup_is_201_with_location_and_writes_user_and_event(settings, signup_db):
    email = unique_email()
    async with running_app(**settings) as (_app, client):
        response = await client.post("/users", json={"email": f"  {email} ", "name": "Ada"})
    assert response.status_code == 201, await response.get_data(as_text=True)
    body = await response.get_json()
    assert set(body) == {"id", "email", "name", "created_at", "projection"}
    assert body["email"] == email.lower() and body["name"] == "Ada"
    assert body["projection"] == "pending"
    assert response.headers["Location"] == f"/users/{body['id']}"

    rows = await sql(
        signup_db, "SELECT email, name FROM users WHERE id = $1", uuid.UUID(body["id"])
    )
    assert [tuple(r) for r in rows] == [(email.lower(), "Ada")]
    events = await outbox_of(signup_db, body["id"])
    assert [e["event_type"] for e in events] == ["user.registered"]
    assert '"schema_version": 1' in events[0]["payload"]
    assert events[0]["published_at"] is None


async def test_same_email_in_another_case_is_409_email_taken(settings):
    email = unique_email()
    async with running_app(**settings) as (_app, client):
        first = await client.post("/users", json={"email": email, "name": "A"})
        assert first.status_code == 201
        again = await client.post("/users", json={"email": email.upper(), "name": "B"})
    await assert_problem(again, 409, "email-taken", "/users")


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "name": "A"},
        {"email": "a@b", "name": "A"},
        {"email": "x" * 250 + "@e.com", "name": "A"},
        {"email": "a@example.com", "name": ""},
        {"email": "a@example.com", "name": "   "},
        {"email": "a@example.com", "name": "n" * 101},
        {"email": "a@example.com", "name": "nul\u0000inside"},  # was a 503 (and a breaker fault)
        {"email": "a@example.com", "name": "bell\u0007"},
        {"email": "a@example.com"},
    ],
)
async def test_invalid_signups_are_422(settings, body):
    async with running_app(**settings) as (_app, client):
        response = await client.post("/users", json=body)
    problem = await assert_problem(response, 422, "validation-error", "/users")
    assert problem["errors"]


async def test_concurrent_signups_with_one_email_make_one_user_and_one_event(settings, signup_db):
    email = unique_email()
    async with running_app(**{**settings, "postgres_pool_max": 20}) as (_app, client):
        responses = await asyncio.gather(
            *(client.post("/users", json={"email": email, "name": f"n{i}"}) for i in range(30))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 29
    rows = await sql(signup_db, "SELECT id FROM users WHERE email = $1", email.lower())
    assert len(rows) == 1
    events = await outbox_of(signup_db, str(rows[0]["id"]))
    assert [e["event_type"] for e in events] == ["user.registered"]


async def test_a_failure_between_the_user_insert_and_the_commit_leaves_neither_row(
    settings, signup_db
):
    """The outbox insert fails after the user row was written (a trigger raises):
    the transaction rolls back both."""
    trigger = f"fail_{uuid.uuid4().hex[:8]}"
    email = unique_email()
    await sql(
        signup_db,
        f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.payload->'data'->>'email' = '{email.lower()}' THEN "
        "RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$",
    )
    await sql(
        signup_db,
        f"CREATE TRIGGER {trigger} BEFORE INSERT ON outbox "
        f"FOR EACH ROW EXECUTE FUNCTION {trigger}()",
    )
    try:
        async with running_app(**settings) as (_app, client):
            response = await client.post("/users", json={"email": email, "name": "A"})
            await assert_problem(response, 503, "backend-unavailable", "/users")
            assert not await sql(signup_db, "SELECT 1 FROM users WHERE email = $1", email.lower())
            assert not await sql(
                signup_db,
                "SELECT 1 FROM outbox WHERE payload->'data'->>'email' = $1",
                email.lower(),
            )
    finally:
        await sql(signup_db, f"DROP TRIGGER {trigger} ON outbox")
        await sql(signup_db, f"DROP FUNCTION {trigger}()")
    async with running_app(**settings) as (_app, client):  # the email was never taken
        assert (await client.post("/users", json={"email": email, "name": "A"})).status_code == 201


async def test_a_retried_signup_with_its_idempotency_key_replays_the_201(settings, signup_db):
    email = unique_email()
    headers = {"Idempotency-Key": f"signup-{uuid.uuid4().hex}"}
    async with running_app(**settings) as (_app, client):
        first = await client.post("/users", json={"email": email, "name": "A"}, headers=headers)
        retry = await client.post("/users", json={"email": email, "name": "A"}, headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.headers["Idempotency-Replayed"] == "true"
    assert retry.headers["Location"] == first.headers["Location"]
    assert await retry.get_json() == await first.get_json()
    rows = await sql(signup_db, "SELECT id FROM users WHERE email = $1", email.lower())
    assert len(rows) == 1
    assert len(await outbox_of(signup_db, str(rows[0]["id"]))) == 1


async def test_delete_erases_personal_data_keeps_a_tombstone_and_emits_one_event(
    settings, signup_db
):
    email = unique_email()
    async with running_app(**settings) as (_app, client):
        created = await (await client.post("/users", json={"email": email, "name": "A"})).get_json()
        path = f"/users/{created['id']}"
        first = await client.delete(path)
        second = await client.delete(path)
        assert first.status_code == second.status_code == 204
        assert await first.get_data() == b""
        # The email is free again: the tombstone holds no email.
        again = await client.post("/users", json={"email": email, "name": "B"})
        assert again.status_code == 201

    rows = await sql(
        signup_db,
        "SELECT email, name, deleted_at FROM users WHERE id = $1",
        uuid.UUID(created["id"]),
    )
    assert rows[0]["email"] is None and rows[0]["name"] is None and rows[0]["deleted_at"]
    events = await outbox_of(signup_db, created["id"])
    assert [e["event_type"] for e in events] == ["user.registered", "user.deleted"]
    assert email.lower() not in events[0]["payload"] and '"A"' not in events[0]["payload"]


async def test_delete_of_an_unknown_id_is_404_and_a_malformed_one_too(settings):
    async with running_app(**settings) as (_app, client):
        unknown = f"/users/{uuid.uuid4()}"
        await assert_problem(await client.delete(unknown), 404, "user-not-found", unknown)
        await assert_problem(await client.delete("/users/nope"), 404, "not-found", "/users/nope")


async def test_signup_without_postgres_configured_is_503_not_configured():
    async with running_app() as (_app, client):
        response = await client.post("/users", json={"email": unique_email(), "name": "A"})
    await assert_problem(response, 503, "backend-not-configured", "/users")


async def test_the_openapi_document_describes_the_users_routes():
    async with running_app() as (_app, client):
        document = await (await client.get("/openapi.json")).get_json()
    create = document["paths"]["/users"]["post"]
    assert {"201", "409", "422"} <= set(create["responses"])
    assert "requestBody" in create
    delete = document["paths"]["/users/{id}"]["delete"]
    assert {"204", "404"} <= set(delete["responses"])
    body = create["requestBody"]["content"]["application/json"]["schema"]
    fields = body["properties"]
    assert fields["email"]["pattern"] and fields["name"]["pattern"]  # what the service checks
