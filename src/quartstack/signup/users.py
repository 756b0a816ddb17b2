"""The signup write model: its commands, the events they record, its queries.

Each command is one SQL statement: the user row and its event in the ``outbox``
are written by data-modifying CTEs of a single statement, so they commit together
or not at all (one round trip, which matters at the signup's latency goal). The
unique index on the normalised email decides a duplicate signup: two concurrent
requests cannot both pass, whatever their timing.

Events are JSON with ``schema_version``; the relay publishes them unchanged. Each
row also keeps the writing request's trace context (``trace_context``), so the
relay's publish, which runs later in a trace of its own, links back to the request.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from quartstack.integrations.postgres import PostgresPool
from quartstack.integrations.rabbitmq.tracing_headers import capture_context

#: Version of the event body schema; consumers check it.
EVENT_SCHEMA_VERSION = 1
USER_REGISTERED = "user.registered"
USER_DELETED = "user.deleted"


class EmailTaken(Exception):
    """Another user (not erased) has this email."""


class UserNotFound(Exception):
    """No user ever had this id."""


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class OutboxEvent:
    """One claimed outbox row."""

    id: int
    event_id: uuid.UUID
    event_type: str
    payload: str
    created_at: datetime
    #: W3C trace context of the request that wrote it (None: not traced).
    trace_context: dict[str, str] | None = None


def event_body(event_id: uuid.UUID, event_type: str, at: datetime, data: dict[str, Any]) -> str:
    return json.dumps(
        {
            "schema_version": EVENT_SCHEMA_VERSION,
            "event_id": str(event_id),
            "type": event_type,
            "occurred_at": at.isoformat(),
            "data": data,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


_REGISTER = """
WITH new_user AS (
    INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, $4)
)
INSERT INTO outbox (event_id, event_type, aggregate_id, payload, trace_context)
VALUES ($5, 'user.registered', $1, $6, $7)
"""


async def register_user(postgres: PostgresPool, email: str, name: str) -> User:
    """Create the user and its ``user.registered`` event; :class:`EmailTaken` if the
    normalised ``email`` is in use."""
    user = User(uuid.uuid4(), email, name, datetime.now(UTC))
    event_id = uuid.uuid4()
    data = {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "created_at": user.created_at.isoformat(),
    }
    payload = event_body(event_id, USER_REGISTERED, user.created_at, data)
    traced = _trace_context()
    try:
        await postgres.run(
            "register_user",
            lambda c: c.execute(
                _REGISTER,
                user.id,
                user.email,
                user.name,
                user.created_at,
                event_id,
                payload,
                traced,
            ),
        )
    except asyncpg.exceptions.UniqueViolationError as exc:
        if exc.constraint_name == "users_email_key":
            raise EmailTaken(email) from exc
        raise
    return user


_ERASE = """
WITH erased AS (
    UPDATE users SET email = NULL, name = NULL, deleted_at = $2
    WHERE id = $1 AND deleted_at IS NULL
    RETURNING id
), redacted AS (
    UPDATE outbox
    SET payload = jsonb_set(jsonb_set(payload, '{data,email}', 'null'), '{data,name}', 'null')
    WHERE aggregate_id = $1 AND event_type = 'user.registered' AND EXISTS (SELECT 1 FROM erased)
), event AS (
    INSERT INTO outbox (event_id, event_type, aggregate_id, payload, trace_context)
    SELECT $3, 'user.deleted', id, $4, $5 FROM erased
)
SELECT (SELECT count(*) FROM erased) AS erased,
       EXISTS (SELECT 1 FROM users WHERE id = $1) AS known
"""


async def delete_user(postgres: PostgresPool, user_id: uuid.UUID) -> bool:
    """Erase the user's personal data (the row stays as a tombstone, and the email
    and name leave its earlier events too) and record ``user.deleted``.

    True if this call erased the user, False if it already was;
    :class:`UserNotFound` for an id that never existed.
    """
    now = datetime.now(UTC)
    event_id = uuid.uuid4()
    payload = event_body(event_id, USER_DELETED, now, {"id": str(user_id)})
    traced = _trace_context()
    row = await postgres.run(
        "delete_user", lambda c: c.fetchrow(_ERASE, user_id, now, event_id, payload, traced)
    )
    if not row["known"]:
        raise UserNotFound(str(user_id))
    return bool(row["erased"])


_FIND = "SELECT id, email, name, created_at FROM users WHERE id = $1 AND deleted_at IS NULL"


async def find_user(postgres: PostgresPool, user_id: uuid.UUID) -> User | None:
    """The user as the write model has it (None if unknown or erased): what the query
    side answers while the read model has not caught up yet."""
    row = await postgres.run("find_user", lambda c: c.fetchrow(_FIND, user_id))
    if row is None:
        return None
    return User(row["id"], row["email"], row["name"], row["created_at"])


# --- the relay's queries ------------------------------------------------------------------
CLAIM = """
SELECT id, event_id, event_type, payload::text AS payload, created_at,
       trace_context::text AS trace_context
FROM outbox WHERE published_at IS NULL
ORDER BY id LIMIT $1
FOR UPDATE SKIP LOCKED
"""
MARK_PUBLISHED = "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1::bigint[])"
PENDING = "SELECT count(*) FROM outbox WHERE published_at IS NULL"


async def claim(connection: asyncpg.Connection, limit: int) -> list[OutboxEvent]:
    """Lock up to ``limit`` unpublished rows that no other relay holds (in the
    caller's transaction)."""
    rows = await connection.fetch(CLAIM, limit)
    return [_claimed(row) for row in rows]


def _claimed(row: asyncpg.Record) -> OutboxEvent:
    fields = dict(row)
    traced = fields.pop("trace_context")
    return OutboxEvent(**fields, trace_context=None if traced is None else json.loads(traced))


def _trace_context() -> str | None:
    """The current request's trace context for the event's row (JSON), if traced."""
    carrier = capture_context()
    return None if carrier is None else json.dumps(carrier, separators=(",", ":"))


async def mark_published(connection: asyncpg.Connection, ids: list[int]) -> None:
    await connection.execute(MARK_PUBLISHED, ids)


async def pending_count(postgres: PostgresPool) -> int:
    return int(await postgres.run("outbox_pending", lambda c: c.fetchval(PENDING), idempotent=True))
