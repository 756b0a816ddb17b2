"""``/examples/cache/{key}``: read, write and delete Redis keys."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_querystring, validate_response
from redis.exceptions import ResponseError

from quartstack.blueprints.openapi import path_param, problems
from quartstack.blueprints.validation import check_path_param
from quartstack.integrations.base import get_backend
from quartstack.integrations.redis.client import AnyRedis, RedisClient
from quartstack.web.problems import Problem

blueprint = Blueprint("cache", __name__, url_prefix="/examples/cache")

_KEY_PATTERN = r"^[a-zA-Z0-9_:.-]+$"


class CacheEntry(BaseModel):
    key: str
    value: str | None
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
@path_param("key", _KEY_PATTERN, 200)
@validate_response(CacheEntry)
@problems(409, 422, 429, 503, 504)
async def read_key(key: str) -> CacheEntry:
    """Value and remaining TTL of ``key``; 409 if the key holds another type (a list...)."""

    async def read(client: AnyRedis) -> tuple[Any, Any]:
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.ttl(key)
            value, ttl = await pipe.execute()
        return value, ttl

    try:
        value, ttl = await _redis(key).execute("get", read)
    except ResponseError as exc:
        if "WRONGTYPE" not in str(exc):  # pipelines prefix the reply with the command
            raise
        raise Problem(
            409, "wrong-type", f"Key {key!r} holds a value that is not a string."
        ) from None
    exists = value is not None
    remaining: int | Literal["no expiration"] | None
    if not exists:
        remaining = None
    elif ttl == -1:
        remaining = "no expiration"
    else:  # -2: it expired between GET and TTL
        remaining = max(0, int(ttl))
    return CacheEntry(key=key, value=value, exists=exists, ttl=remaining)


@blueprint.post("/<key>")
@path_param("key", _KEY_PATTERN, 200)
@validate_querystring(CacheWrite)
@validate_response(CacheWritten)
@problems(422, 429, 503, 504)
async def write_key(key: str, query_args: CacheWrite) -> CacheWritten:
    """Set ``key`` to ``value``, expiring after ``ttl`` seconds if given."""
    await _redis(key).execute("set", lambda c: c.set(key, query_args.value, ex=query_args.ttl))
    return CacheWritten(key=key, value=query_args.value, ttl=query_args.ttl, action="set")


@blueprint.delete("/<key>")
@path_param("key", _KEY_PATTERN, 200)
@validate_response(CacheDeleted)
@problems(422, 429, 503, 504)
async def delete_key(key: str) -> CacheDeleted:
    """Delete ``key``; ``deleted`` says whether it existed."""
    removed = await _redis(key).execute("delete", lambda c: c.delete(key))
    return CacheDeleted(key=key, deleted=bool(removed), action="delete")
