"""``/examples/cache/{key}``: read, write and delete Redis keys."""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_response
from redis.client import NEVER_DECODE
from redis.exceptions import ResponseError

from quartstack.auth.scopes import requires
from quartstack.blueprints.openapi import link, path_param, problems
from quartstack.blueprints.validation import check_path_param
from quartstack.integrations.base import get_backend
from quartstack.integrations.redis.client import AnyRedis, RedisClient
from quartstack.web.problems import Problem
from quartstack.web.querystring import validate_query

blueprint = Blueprint("cache", __name__, url_prefix="/examples/cache")

_KEY_PATTERN = r"^[a-zA-Z0-9_:.-]+$"


class CacheEntry(BaseModel):
    key: str
    value: str | None = Field(description="The value as text, or base64 (see encoding)")
    encoding: Literal["utf-8", "base64"] | None = Field(
        description="'utf-8' for text, 'base64' for a value that is not UTF-8, null when missing"
    )
    exists: bool
    ttl: int | Literal["no expiration"] | None = Field(
        description="Seconds left, 'no expiration', or null when the key is missing"
    )


class CacheWrite(BaseModel):
    value: str = Field(max_length=10_000)
    ttl: int | None = Field(default=None, ge=1, le=86_400)


class CacheWritten(BaseModel):
    key: str
    value: str
    ttl: int | None
    action: Literal["set"]


class CacheDeleted(BaseModel):
    key: str
    deleted: bool
    action: Literal["delete"]


def _redis(key: str) -> RedisClient:
    check_path_param("key", key, _KEY_PATTERN, 200)
    return get_backend("redis", RedisClient)


@blueprint.get("/<key>")
@requires("read")
@path_param("key", _KEY_PATTERN, 200)
@validate_response(CacheEntry)
@problems(409, 422, 429, 503, 504)
async def read_key(key: str) -> CacheEntry:
    """Value and remaining TTL of ``key``; 409 if the key holds another type (a list...)."""

    async def read(client: AnyRedis) -> tuple[Any, Any]:
        async with client.pipeline(transaction=False) as pipe:
            # Raw bytes: any application may have written this key, and a value that is
            # not UTF-8 is data to show, not a Redis failure.
            pipe.execute_command("GET", key, **{NEVER_DECODE: True})
            pipe.ttl(key)
            value, ttl = await pipe.execute()
        return value, ttl

    try:
        value, ttl = await _redis(key).run("get", read)
    except ResponseError as exc:
        if "WRONGTYPE" not in str(exc):  # pipelines prefix the reply with the command
            raise
        raise Problem(
            409, "wrong-type", f"Key {key!r} holds a value that is not a string."
        ) from None
    exists = value is not None
    text, encoding = _as_text(value)
    remaining: int | Literal["no expiration"] | None
    if not exists:
        remaining = None
    elif ttl == -1:
        remaining = "no expiration"
    else:  # -2: it expired between GET and TTL
        remaining = max(0, int(ttl))
    return CacheEntry(key=key, value=text, encoding=encoding, exists=exists, ttl=remaining)


def _as_text(value: bytes | None) -> tuple[str | None, Literal["utf-8", "base64"] | None]:
    """The value as text when it is UTF-8, else as base64: the encoding says which."""
    if value is None:
        return None, None
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


@blueprint.post("/<key>")
@link(200, "ReadKey", "get_read_key", {"key": "$response.body#/key"}, "Read the value back")
@link(200, "DeleteKey", "delete_delete_key", {"key": "$response.body#/key"}, "Delete the key")
@requires("write")
@path_param("key", _KEY_PATTERN, 200)
@validate_query(CacheWrite)
@validate_response(CacheWritten)
@problems(422, 429, 503, 504)
async def write_key(key: str, query_args: CacheWrite) -> CacheWritten:
    """Set ``key`` to ``value``, expiring after ``ttl`` seconds if given."""
    await _redis(key).run("set", lambda c: c.set(key, query_args.value, ex=query_args.ttl))
    return CacheWritten(key=key, value=query_args.value, ttl=query_args.ttl, action="set")


@blueprint.delete("/<key>")
@link(200, "ReadKey", "get_read_key", {"key": "$response.body#/key"}, "Now exists: false")
@requires("write")
@path_param("key", _KEY_PATTERN, 200)
@validate_response(CacheDeleted)
@problems(422, 429, 503, 504)
async def delete_key(key: str) -> CacheDeleted:
    """Delete ``key``; ``deleted`` says whether it existed."""
    removed = await _redis(key).run("delete", lambda c: c.delete(key))
    return CacheDeleted(key=key, deleted=bool(removed), action="delete")
