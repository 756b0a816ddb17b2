"""``GET /users…``: the query side of the signup flow, served from the projections.

Reads come from the worker's read model (MongoDB) and counters (Redis), never
from the write model, so they scale apart from signups and are eventually
consistent. One exception keeps that honest: ``GET /users/{id}`` for a user the
worker has not projected yet answers from the write model with
``projection: "pending"`` rather than a false 404.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from quart import Blueprint, current_app
from quart_schema import validate_response

from quartstack.auth.scopes import requires
from quartstack.blueprints.openapi import link, problems
from quartstack.integrations.base import get_backend
from quartstack.integrations.mongodb import Document, MongoDatabase
from quartstack.integrations.postgres import PostgresPool
from quartstack.integrations.redis.client import RedisClient
from quartstack.signup import users
from quartstack.web.problems import Problem
from quartstack.web.querystring import validate_query
from quartstack.worker import counters, read_model

blueprint = Blueprint("user_queries", __name__, url_prefix="/users")

_DOMAIN = r"^[a-z0-9.-]{1,253}$"


class ProjectedUser(BaseModel):
    id: uuid.UUID
    email: str | None
    name: str | None
    email_domain: str | None
    created_at: datetime | None
    projection: str = Field(
        description='"applied": served from the read model; "pending": signed up, not projected '
        "yet (served from the write model)"
    )


class UserList(BaseModel):
    items: list[ProjectedUser]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: end")


class ListQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=100)
    domain: str | None = Field(default=None, pattern=_DOMAIN, description="email domain")


class DayCount(BaseModel):
    day: str
    signups: int


class Stats(BaseModel):
    days: list[DayCount]
    domains: dict[str, int] = Field(description="signups per email domain over the days")
    total: int


class StatsQuery(BaseModel):
    days: int = Field(default=7, ge=1, le=90)


def _user(document: Document) -> ProjectedUser:
    created = document.get("created_at")
    if isinstance(created, datetime) and created.tzinfo is None:
        created = created.replace(tzinfo=UTC)  # BSON dates are UTC
    return ProjectedUser(
        id=uuid.UUID(document["_id"]),
        email=document.get("email"),
        name=document.get("name"),
        email_domain=document.get("email_domain"),
        created_at=created if isinstance(created, datetime) else None,
        projection="applied",
    )


def _encode_cursor(user_id: str) -> str:
    return base64.urlsafe_b64encode(user_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return str(uuid.UUID(raw))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Problem(400, "invalid-cursor", "The cursor is not one this API issued.") from None


@blueprint.get("/<uuid:id>")
@link(200, "DeleteUser", "delete_delete_user", {"id": "$response.body#/id"}, "Erase this user")
@requires("read")
@validate_response(ProjectedUser)
@problems(404, 429, 503, 504)
async def get_user(id: uuid.UUID) -> ProjectedUser:
    """One user from the read model; one not projected yet from the write model
    (``projection: "pending"``); 404 ``user-not-found`` for an unknown or erased id."""
    document = await read_model.get_user(get_backend("mongodb", MongoDatabase), str(id))
    if document is not None and document.get("deleted_at") is None:
        return _user(document)
    if document is None and isinstance(current_app.extensions.get("postgres"), PostgresPool):
        user = await users.find_user(get_backend("postgres", PostgresPool), id)
        if user is not None:
            return ProjectedUser(
                id=user.id,
                email=user.email,
                name=user.name,
                email_domain=user.email.rpartition("@")[2],
                created_at=user.created_at,
                projection="pending",
            )
    raise Problem(404, "user-not-found", "No user has this id.")


@blueprint.get("")
@requires("read")
@validate_query(ListQuery)
@validate_response(UserList)
@problems(400, 422, 429, 503, 504)
async def list_users(query_args: ListQuery) -> UserList:
    """Users in id order, a keyset page at a time; ``domain`` filters by email domain."""
    after = _decode_cursor(query_args.cursor) if query_args.cursor else None
    documents = await read_model.list_users(
        get_backend("mongodb", MongoDatabase),
        limit=query_args.limit + 1,  # one more tells whether a next page exists
        after=after,
        domain=query_args.domain.lower() if query_args.domain else None,
    )
    page = documents[: query_args.limit]
    more = len(documents) > query_args.limit
    return UserList(
        items=[_user(d) for d in page],
        next_cursor=_encode_cursor(page[-1]["_id"]) if more and page else None,
    )


@blueprint.get("/stats")
@requires("read")
@validate_query(StatsQuery)
@validate_response(Stats)
@problems(422, 429, 503, 504)
async def stats(query_args: StatsQuery) -> Stats:
    """Signups per day (UTC) for the last ``days`` days, and per email domain over them."""
    counts = await counters.read_stats(
        get_backend("redis", RedisClient), datetime.now(UTC).date(), query_args.days
    )
    days = [DayCount(day=day, signups=n) for day, n in counts.days.items()]
    domains: dict[str, Any] = dict(sorted(counts.domains.items(), key=lambda kv: -kv[1]))
    return Stats(days=days, domains=domains, total=counts.total)
