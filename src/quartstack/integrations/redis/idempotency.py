"""``Idempotency-Key`` for every POST, stored in Redis so any replica can replay it.

The first request with a key claims it atomically (``SET NX``) with a fingerprint
of the request; its response (status, the headers that matter, body) is stored
for ``IDEMPOTENCY_TTL_SECONDS``. A retry with the same key and request replays the
stored response with ``Idempotency-Replayed: true``; the same key with another
request is a 422; a retry while the first is still running is a 409. A 5xx or
429 is not stored, so the client can retry it. If Redis is unreachable the
request is processed without the guarantee (logged), because refusing all POSTs
would turn a cache outage into an API outage.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
from typing import Any

from quart import Quart, Response, g, request

from quartstack.integrations.redis.client import RedisClient
from quartstack.resilience import BackendError
from quartstack.settings import Settings
from quartstack.web.problems import Problem

logger = logging.getLogger("quartstack.idempotency")

HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_KEPT_HEADERS = ("Content-Type", "Location", "ETag")
_RUNNING_TTL = 300  # a crashed request frees its key after this


class IdempotencyStore:
    def __init__(self, redis: RedisClient, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    def redis_key(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.redis.key(f"idem:{{{digest}}}")

    async def claim(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        """Claim ``key``; return None if claimed now, else the stored record."""
        record = json.dumps({"state": "running", "fingerprint": fingerprint})
        redis_key = self.redis_key(key)

        # SET NX GET (Redis >= 7.0): claim and read the previous record in one atomic step.
        stored = await self.redis.execute(
            "idempotency_claim",
            lambda c: c.set(redis_key, record, nx=True, get=True, ex=_RUNNING_TTL),
        )
        if stored is None:
            return None
        result: dict[str, Any] = json.loads(stored)
        return result

    async def complete(self, key: str, record: dict[str, Any]) -> None:
        await self.redis.execute(
            "idempotency_store",
            lambda c: c.set(self.redis_key(key), json.dumps(record), ex=self.ttl),
        )

    async def release(self, key: str) -> None:
        await self.redis.execute("idempotency_release", lambda c: c.delete(self.redis_key(key)))


async def _fingerprint() -> str:
    body = await request.get_data(as_text=False)
    if isinstance(body, str):
        body = body.encode()
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.full_path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _replay(record: dict[str, Any]) -> Response:
    response = Response(
        base64.b64decode(record["body"]), status=record["status"], headers=record["headers"]
    )
    response.headers["Idempotency-Replayed"] = "true"
    return response


def init_idempotency(app: Quart, settings: Settings, redis: RedisClient) -> None:
    store = IdempotencyStore(redis, settings.idempotency_ttl_seconds)

    @app.before_request
    async def claim_idempotency_key() -> Response | None:
        if request.method != "POST":
            return None
        key = request.headers.get(HEADER)
        if key is None:
            return None
        if not _VALID_KEY.fullmatch(key):
            raise Problem(
                400,
                "invalid-idempotency-key",
                "Idempotency-Key must be 1-255 visible ASCII characters.",
            )
        fingerprint = await _fingerprint()
        try:
            stored = await store.claim(key, fingerprint)
        except BackendError:
            logger.warning("idempotency not enforced: redis unavailable")
            return None
        if stored is None:
            g.idempotency = (key, fingerprint)
            return None
        if stored["fingerprint"] != fingerprint:
            raise Problem(
                422,
                "idempotency-key-reused",
                "This Idempotency-Key was already used for a different request.",
            )
        if stored["state"] == "running":
            raise Problem(
                409,
                "idempotency-in-progress",
                "A request with this Idempotency-Key is still being processed.",
                headers={"Retry-After": "1"},
            )
        return _replay(stored)

    @app.after_request
    async def store_idempotent_response(response: Response) -> Response:
        claimed = getattr(g, "idempotency", None)
        if claimed is None:
            return response
        g.idempotency = None
        key, fingerprint = claimed
        try:
            if response.status_code >= 500 or response.status_code == 429:
                await store.release(key)  # not an answer to keep: the client retries
                return response
            body: bytes = await response.get_data(as_text=False)
            headers = {h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers}
            await store.complete(
                key,
                {
                    "state": "done",
                    "fingerprint": fingerprint,
                    "status": response.status_code,
                    "headers": headers,
                    "body": base64.b64encode(body).decode(),
                },
            )
        except BackendError:
            logger.warning("idempotent response not stored: redis unavailable")
        return response

    @app.teardown_request
    async def release_abandoned_key(_exc: BaseException | None) -> None:
        claimed = getattr(g, "idempotency", None)
        if claimed is not None:  # no response was produced (client went away)
            with contextlib.suppress(BackendError):
                await store.release(claimed[0])
