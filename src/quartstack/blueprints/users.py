"""``/users``: sign up (the write side of the signup flow) and erase a user."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from quart import Blueprint, Response
from quart_schema import validate_request, validate_response

from quartstack.auth.scopes import requires
from quartstack.blueprints.openapi import link, no_content, problems
from quartstack.integrations.base import get_backend
from quartstack.integrations.postgres import PostgresPool
from quartstack.signup import users
from quartstack.web.problems import Problem

blueprint = Blueprint("users", __name__, url_prefix="/users")

# The HTML standard's "valid e-mail address" (what browsers accept), dot required in the
# domain: a syntax check, no dependency, no DNS. Deliverability is a confirmation mail's job.
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)


# Not blank, and no control characters (PostgreSQL text cannot hold NUL at all); the
# name is stored trimmed.
_NAME = re.compile(r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$")


class Signup(BaseModel):
    email: str = Field(
        max_length=254,
        description="stored and compared in lower case",
        json_schema_extra={"pattern": f"^{_EMAIL.pattern}$"},  # documented as checked
    )
    name: str = Field(min_length=1, max_length=100, json_schema_extra={"pattern": _NAME.pattern})

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        normalised = value.strip().lower()
        if not _EMAIL.fullmatch(normalised):
            raise ValueError("is not a valid email address")
        return normalised

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        trimmed = value.strip()
        if not trimmed:
            raise ValueError("must not be blank")
        if not _NAME.fullmatch(trimmed):
            raise ValueError("must not contain control characters")
        return trimmed


class UserCreated(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    projection: Literal["pending"] = Field(
        description="the read model is updated asynchronously from the user.registered event"
    )


@blueprint.post("")
@link(201, "GetUser", "get_get_user", {"id": "$response.body#/id"}, "Read the new user")
@link(201, "DeleteUser", "delete_delete_user", {"id": "$response.body#/id"}, "Erase it")
@requires("write")
@validate_request(Signup)
@validate_response(UserCreated, 201)
@problems(400, 409, 413, 415, 422, 429, 503, 504)
async def sign_up(data: Signup) -> tuple[UserCreated, int, dict[str, str]]:
    """Create a user and, in the same transaction, its ``user.registered`` event.

    409 ``email-taken`` when the (lower-cased) email is in use. Send an
    ``Idempotency-Key`` to make a retry replay the 201 instead of answering 409.
    """
    postgres = get_backend("postgres", PostgresPool)
    try:
        user = await users.register_user(postgres, data.email, data.name)
    except users.EmailTaken:
        raise Problem(409, "email-taken", "A user with this email already exists.") from None
    body = UserCreated(
        id=user.id,
        email=user.email,
        name=user.name,
        created_at=user.created_at,
        projection="pending",
    )
    return body, 201, {"Location": f"/users/{user.id}"}


@blueprint.delete("/<uuid:id>")
@link(204, "GetUser", "get_get_user", {"id": "$request.path.id"}, "Now 404 user-not-found")
@requires("write")
@no_content("Erased (or already erased)")
@problems(404, 429, 503, 504)
async def delete_user(id: uuid.UUID) -> Response:
    """Erase the user's email and name (the id stays as a tombstone) and emit
    ``user.deleted``. 204; a repeated delete is 204 again, without a second event;
    404 for an id that never existed."""
    try:
        await users.delete_user(get_backend("postgres", PostgresPool), id)
    except users.UserNotFound:
        raise Problem(404, "user-not-found", "No user has this id.") from None
    return Response(status=204)
